"""Synthetic stroke classes: a class is a seed, its images one pen drawing redrawn by unsteady hands.

A meta-training pool built only from six garments teaches the hypernetwork nothing about adapting to another
kind of image (the MNIST gap of benchmarks/NOTES.md, session 8 A5). These classes are a second kind, drawn
procedurally and so never any of the unseen classes or MNIST: a family's seed fixes one to three cubic
Bézier strokes (control points inside the image), a class moves each control point of its family a little
(classes of a family look alike, as digits share a style), and every image of the class redraws them with each
control point jittered, the whole drawing turned, scaled and shifted a little, and its own pen width — light
strokes on a dark background, anti-aliased, like scanned handwriting. Classes differ in shape; images of a
class vary the way handwriting does. Everything is a pure function of the class id and of the random numbers
the caller's :class:`~pudnet.data.sampler.SplitMix64` supplies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .sampler import SplitMix64
from .store import ImageStore

STROKE_CLASSES = 1 << 20
MEMBERS = 64  # classes per family: a family's classes share a rough shape, as digits share a style
FAMILY_SPREAD = 0.08  # a member's control points: the family's moved by this much (a fraction of the side)
MEMBER_STREAM = 0x3E3B  # mixed into the universe seed for the members' random numbers
UNIVERSE_SEED = 0x57_20_4E_E5  # the classes' seeds (the classes do not depend on the training seed)
VALIDATION_UNIVERSE = 0x7A_11_DA_7E  # held-out classes' seeds: other shapes than any meta-training draws
STROKES = (1, 3)  # inclusive range of strokes per class
MARGIN = 0.12  # control points keep this fraction of the image side clear of the border
EXTENT = 0.7  # a class's drawing: its larger side this fraction of the image side, centred
JITTER = 0.045  # per image: control-point jitter, as a fraction of the side
TURN_DEGREES, SCALES, SHIFT = 12.0, (0.85, 1.15), 0.06
PEN = (0.035, 0.065)  # pen half-width range, as a fraction of the side (28 px: 1.0–1.8 px)
SAMPLES = 17  # points per stroke: a polyline of 16 segments
SUPERSAMPLE = 4


@dataclass(frozen=True)
class StrokeClass:
    control: np.ndarray  # [strokes, 4, 2] control points in [0, 1]² (x, y)


def stroke_class(class_id: int, universe: int = UNIVERSE_SEED) -> StrokeClass:
    """Class ``class_id`` (``< STROKE_CLASSES``) of the seeds ``universe``: member ``class_id % MEMBERS`` of
    family ``class_id // MEMBERS``, the family's strokes with each control point moved by ``FAMILY_SPREAD``."""
    if not 0 <= class_id < STROKE_CLASSES:
        raise ValueError(f"stroke class ids are 0..{STROKE_CLASSES - 1}, got {class_id}")
    family = _generator(SplitMix64(universe, class_id // MEMBERS))
    strokes = int(family.integers(STROKES[0], STROKES[1] + 1))
    control = family.uniform(MARGIN, 1.0 - MARGIN, size=(strokes, 4, 2))
    member = _generator(SplitMix64(universe ^ MEMBER_STREAM, class_id))
    return StrokeClass(_fitted(control + member.normal(0.0, FAMILY_SPREAD, size=control.shape)))


def _fitted(control: np.ndarray) -> np.ndarray:
    """Control points moved and scaled so that the drawing's larger side is ``EXTENT`` of the image, centred
    (as scanned handwriting is size-normalised; a Bézier curve follows its control points' affine maps)."""
    points = _bezier(control).reshape(-1, 2)
    low, high = points.min(0), points.max(0)
    scale = EXTENT / max(float((high - low).max()), 1e-6)
    return (control - (low + high) / 2) * scale + 0.5


def _generator(rng: SplitMix64) -> np.random.Generator:
    return np.random.default_rng(rng.next())


def _bezier(control: np.ndarray) -> np.ndarray:
    """[..., 4, 2] control points → [..., SAMPLES, 2] points along the cubic."""
    t = np.linspace(0.0, 1.0, SAMPLES)
    weights = np.stack([(1 - t) ** 3, 3 * t * (1 - t) ** 2, 3 * t**2 * (1 - t), t**3], axis=-1)  # [S, 4]
    return np.einsum("sk,...kd->...sd", weights, control)


def render(cls: StrokeClass, count: int, rng: SplitMix64, size: int = 28) -> np.ndarray:
    """``count`` uint8 images ``[count, 1, size, size]`` of the class, each drawn afresh."""
    gen = _generator(rng)
    control = cls.control[None] + gen.normal(0.0, JITTER, size=(count, *cls.control.shape))
    angle = np.deg2rad(gen.uniform(-TURN_DEGREES, TURN_DEGREES, count))
    scale = np.exp(gen.uniform(*np.log(SCALES), count))
    shift = gen.uniform(-SHIFT, SHIFT, (count, 2))
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)  # [N, 2, 2]
    centred = control.reshape(count, -1, 2) - 0.5
    placed = np.einsum("nij,npj->npi", rotation, centred) + 0.5 + shift[:, None]
    points = _bezier(placed.reshape(count, -1, 4, 2))  # [N, strokes, S, 2]
    pen = gen.uniform(*PEN, count)
    return np.stack([_draw(strokes, width, size) for strokes, width in zip(points, pen)])[:, None]


def _draw(strokes: np.ndarray, pen: float, size: int) -> np.ndarray:
    """[strokes, SAMPLES, 2] points in [0, 1]² drawn as polylines ``pen`` (a fraction of the side) thick on
    both sides: drawn at SUPERSAMPLE × the size, then box-filtered down (anti-aliasing)."""
    big = size * SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(2 * pen * big))
    for stroke in strokes:
        draw.line([tuple(p) for p in (stroke * big).tolist()], fill=255, width=width)
    return np.asarray(canvas.resize((size, size), Image.BOX))


def stroke_store(classes: list[int], per_class: int, seed: int, universe: int = VALIDATION_UNIVERSE,
                 size: int = 28) -> ImageStore:
    """``per_class`` images (drawn with ``seed``) of each of ``classes`` of ``universe``, labelled by their
    position in ``classes``: by default classes no meta-training task holds, for validation."""
    images = [render(stroke_class(c, universe), per_class, SplitMix64(seed, c), size) for c in classes]
    return ImageStore(np.concatenate(images), np.repeat(np.arange(len(classes)), per_class),
                      source=f"synthetic strokes (universe {universe:#x}, seed {seed})")
