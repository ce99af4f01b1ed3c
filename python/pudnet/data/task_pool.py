"""A task distribution that cannot be memorised: tens of thousands of virtual classes made from a few real ones.

Six training classes give C(6, 4) = 15 distinct 4-way tasks; a meta-learner can solve every one of them without
reading the task's data (Yin et al. 2020, "Meta-learning without memorization"). Here a class is a *virtual
class*: an id ``t · B + b`` (``B`` base classes, ``t < TRANSFORMS``; 98,304 classes for six), the ``b``-th
base class under transformation ``t``, whose seed fixes it, applied alike to every image of the class:

- a mixture (``P_MIXTURE``): the base class and another one (fixed per class), their images paired and blended
  with a fixed weight, or tiled (one half of each, along a fixed axis);
- a geometric map, sampled bilinearly with zero fill: a rotation by an arbitrary angle (``P_ROTATE``; never
  within ``ANGLE_MARGIN`` of an angle to avoid, the rotated-class validation's, nor of its mirror images, since
  a flip turns a symmetric garment's ``θ`` into ``−θ`` or ``180° ± θ``), horizontal and vertical flips, a
  scaling, a shift, and an elastic warp by a smooth displacement field fixed per class (``P_ELASTIC``);
- a patch shuffle with a permutation fixed per class (``P_SHUFFLE``);
- an intensity inversion (``P_INVERT``, last, so the zero fill of the geometric map becomes background).

The classes do not depend on the training seed, only on the base classes and the angle to avoid. An episode is
a pure function of ``(seed, index)``, drawn with the sampler's :class:`~pudnet.data.sampler.SplitMix64`: with
probability ``P_SHARED`` its classes share one transformation (``t = below(TRANSFORMS)``, then ``ways`` distinct
base classes): a task of new classes in a new "domain", which only the data tells apart from another, like an
evaluation task (classes of one kind of image that differ in content); otherwise ``ways`` distinct virtual class
ids drawn independently (mostly told apart by their transformations alone: easy). Then for each class in that
order and each of its base classes ``choose(members, sketch + query)`` (a mixture pairs the two draws image by
image). The images come only from the store given (train.py gives it the images left after the validation
hold-out).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .episodes import TaskBatch, _as_float
from .sampler import EpisodeSpec, SplitMix64, TooFewImagesError, class_members
from .strokes import MEMBERS, STROKE_CLASSES, render, stroke_class

TRANSFORMS = 1 << 14  # transformations; the pool's classes: TRANSFORMS × the number of base classes
P_SHARED = 0.75  # of tasks whose classes share one transformation
UNIVERSE_SEED = 0x5EED_C1A5  # the classes' seeds (fixed: the classes are the same whatever the training seed)
ANGLE_MARGIN = 20.0  # degrees kept clear around the angle to avoid (and its mirror images)
P_MIXTURE, P_ROTATE, P_ELASTIC, P_SHUFFLE, P_INVERT = 0.25, 0.6, 0.5, 0.15, 0.2
P_FLIP_H, P_FLIP_V = 0.5, 0.25
SCALES, SHIFT_PX, ELASTIC_PX = (0.8, 1.25), 2.0, (1.0, 3.0)
ELASTIC_GRID = 4  # the displacement field: ELASTIC_GRID² random vectors, upsampled bicubically
BLEND_WEIGHTS = (0.35, 0.65)
STROKE_STREAM = 0x57_0E  # mixed into the seed of the stroke images' random numbers


@dataclass(frozen=True)
class VirtualClass:
    """What a virtual class does to its base images (see the module docstring)."""

    bases: tuple[int, ...]  # one base class, or two for a mixture
    mixture: str  # "", "blend" or "tile"
    blend_weight: float  # blend: weight of the first base's image; tile: 0 = left/right halves, 1 = top/bottom
    degrees: float  # counter-clockwise
    flip_h: bool
    flip_v: bool
    scale: float  # > 1 zooms in
    shift: tuple[float, float]  # pixels (x, y)
    elastic: tuple[float, ...]  # 2·ELASTIC_GRID² displacements in pixels, () for none
    shuffle: tuple[int, ...]  # a permutation of the patches of a √len × √len grid, () for none
    invert: bool


def excluded_angle(degrees: float, avoid: float | None, margin: float = ANGLE_MARGIN) -> bool:
    """Whether a turn by ``degrees`` comes within ``margin`` of ``avoid``, ``−avoid`` or ``180° ± avoid``."""
    if avoid is None:
        return False
    return any(abs((degrees - a + 90.0) % 180.0 - 90.0) < margin for a in (avoid, -avoid))


def virtual_class(class_id: int, bases: tuple[int, ...], avoid_degrees: float | None = None) -> VirtualClass:
    """The virtual class ``class_id`` (``< TRANSFORMS · len(bases)``) over the sorted base classes ``bases``: base
    ``class_id % len(bases)`` under transformation ``class_id // len(bases)`` (pure function)."""
    transformation, b = divmod(class_id, len(bases))
    rng = SplitMix64(UNIVERSE_SEED, transformation)
    uniform = lambda low=0.0, high=1.0: low + (high - low) * rng.next() / 2.0**64  # noqa: E731
    chance = lambda p: uniform() < p  # noqa: E731
    mixture, weight, chosen = "", 1.0, (bases[b],)
    partner = 1 + rng.below(len(bases) - 1) if len(bases) > 1 else 0  # the mixture's other base: b + partner
    if len(bases) > 1 and chance(P_MIXTURE):
        chosen = (bases[b], bases[(b + partner) % len(bases)])
        mixture = "blend" if chance(0.5) else "tile"
        weight = uniform(*BLEND_WEIGHTS) if mixture == "blend" else float(rng.below(2))
    degrees = 0.0
    if chance(P_ROTATE) or excluded_angle(0.0, avoid_degrees):
        degrees = uniform(0.0, 360.0)
        while excluded_angle(degrees, avoid_degrees):
            degrees = uniform(0.0, 360.0)
    flip_h, flip_v = chance(P_FLIP_H), chance(P_FLIP_V)
    scale = float(np.exp(uniform(*np.log(SCALES))))
    shift = (uniform(-SHIFT_PX, SHIFT_PX), uniform(-SHIFT_PX, SHIFT_PX))
    elastic: tuple[float, ...] = ()
    if chance(P_ELASTIC):
        amplitude = uniform(*ELASTIC_PX)
        elastic = tuple(uniform(-amplitude, amplitude) for _ in range(2 * ELASTIC_GRID**2))
    shuffle: tuple[int, ...] = ()
    if chance(P_SHUFFLE):
        grid = 2 + 2 * rng.below(2)  # 2 × 2 or 4 × 4 patches
        shuffle = tuple(rng.choose(list(range(grid * grid)), grid * grid))
        if shuffle == tuple(sorted(shuffle)):  # the identity is no shuffle
            shuffle = shuffle[1:] + shuffle[:1]
    return VirtualClass(chosen, mixture, weight, degrees, flip_h, flip_v, scale, shift, elastic, shuffle,
                        chance(P_INVERT))


_cached_virtual_class = functools.lru_cache(maxsize=8192)(virtual_class)


def transform(first: np.ndarray, second: np.ndarray | None, vc: VirtualClass) -> np.ndarray:
    """uint8 images ``[N, C, H, W]`` of the class's base (and, for a mixture, paired images of its second
    base) as images of the virtual class, uint8 of the same shape."""
    x = torch.from_numpy(np.ascontiguousarray(first)).float()
    if vc.mixture:
        y = torch.from_numpy(np.ascontiguousarray(second)).float()
        if vc.mixture == "blend":
            x = vc.blend_weight * x + (1.0 - vc.blend_weight) * y
        else:
            axis = 3 if vc.blend_weight == 0 else 2
            half = torch.arange(x.shape[axis]) < x.shape[axis] // 2
            x = torch.where(half.view(-1, 1) if axis == 2 else half, x, y)
    x = _warp(x, vc)
    if vc.shuffle:
        x = _shuffle_patches(x, vc.shuffle)
    if vc.invert:
        x = 255.0 - x
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def _warp(x: torch.Tensor, vc: VirtualClass) -> torch.Tensor:
    n, _, h, w = x.shape
    angle = np.deg2rad(vc.degrees)
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    fx, fy = (-1.0 if vc.flip_h else 1.0), (-1.0 if vc.flip_v else 1.0)
    theta = torch.tensor([
        [cos * fx / vc.scale, -sin * fy / vc.scale, 2.0 * vc.shift[0] / w],
        [sin * fx / vc.scale, cos * fy / vc.scale, 2.0 * vc.shift[1] / h],
    ])
    grid = F.affine_grid(theta[None], [1, 1, h, w], align_corners=False)
    if vc.elastic:
        coarse = torch.tensor(vc.elastic).view(1, 2, ELASTIC_GRID, ELASTIC_GRID)
        field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)[0]  # [2, H, W] pixels
        grid = grid + torch.stack([field[0] * 2.0 / w, field[1] * 2.0 / h], dim=-1)[None]
    return F.grid_sample(x, grid.expand(n, h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=False)


def _shuffle_patches(x: torch.Tensor, permutation: tuple[int, ...]) -> torch.Tensor:
    """The ``g × g`` patches of the largest centred region divisible by ``g``, permuted."""
    g = int(round(len(permutation) ** 0.5))
    n, c, h, w = x.shape
    ph, pw = h // g, w // g
    top, left = (h - g * ph) // 2, (w - g * pw) // 2
    region = x[:, :, top : top + g * ph, left : left + g * pw]
    patches = region.reshape(n, c, g, ph, g, pw).permute(0, 1, 2, 4, 3, 5).reshape(n, c, g * g, ph, pw)
    patches = patches[:, :, list(permutation)]
    out = x.clone()
    out[:, :, top : top + g * ph, left : left + g * pw] = (
        patches.reshape(n, c, g, g, ph, pw).permute(0, 1, 2, 4, 3, 5).reshape(n, c, g * ph, g * pw))
    return out


def _distinct(rng: SplitMix64, n: int, k: int) -> list[int]:
    """``k`` distinct numbers below ``n`` (``n`` ≫ ``k``), in the order drawn."""
    drawn: list[int] = []
    while len(drawn) < k:
        c = rng.below(n)
        if c not in drawn:
            drawn.append(c)
    return drawn


def _stroke_classes(rng: SplitMix64, ways: int) -> list[int]:
    """A stroke task's classes: with probability ``P_SHARED`` members of one family (alike), else any."""
    if rng.below(1 << 20) < P_SHARED * (1 << 20):
        family = rng.below(STROKE_CLASSES // MEMBERS)
        return [family * MEMBERS + m for m in rng.choose(list(range(MEMBERS)), ways)]
    return _distinct(rng, STROKE_CLASSES, ways)


@dataclass(frozen=True)
class VirtualEpisode:
    """One task over virtual classes: their ids and, per class, the store indices of its images."""

    classes: np.ndarray  # [ways] virtual class ids
    picks: np.ndarray  # [ways, 2, sketch + query]: row 0 the first base's images, row 1 the second's (mixtures)
    strokes: bool = False  # the classes are synthetic stroke classes (data/strokes.py), ids ≥ the pool's


_cached_stroke_class = functools.lru_cache(maxsize=8192)(stroke_class)


class TransformedClassStream:
    """Tasks over the virtual classes made from ``classes`` of ``store``; the same interface as
    :class:`~pudnet.data.episodes.EpisodeStream` (``batch``), episode ``i`` a pure function of ``(seed, i)``.
    No virtual class turns its images within :data:`ANGLE_MARGIN` of ``avoid_degrees``. A ``stroke_tasks``
    fraction of the tasks are of synthetic stroke classes instead (data/strokes.py; class id = the pool's
    size + the stroke class), a second kind of image to adapt to."""

    def __init__(self, store, classes: list[int], spec: EpisodeSpec, seed: int, avoid_degrees: float | None = None,
                 stroke_tasks: float = 0.0):
        if not 0.0 <= stroke_tasks <= 1.0:
            raise ValueError(f"stroke_tasks is a fraction of the tasks, in [0, 1], got {stroke_tasks}")
        self.store, self.spec, self.seed, self.avoid_degrees = store, spec, seed, avoid_degrees
        self.stroke_tasks = stroke_tasks
        self.bases = tuple(sorted(int(c) for c in classes))
        found = class_members(store.labels)
        per_class = spec.sketch + spec.query
        for c in self.bases:
            if len(found.get(c, [])) < per_class:
                raise TooFewImagesError(f"class {c} has {len(found.get(c, []))} images, an episode needs {per_class}")
        self.members = {c: found[c] for c in self.bases}
        if len(self.bases) < spec.ways:
            raise ValueError(f"the task pool has {len(self.bases)} base classes, an episode needs {spec.ways}")
        self.pool_classes = TRANSFORMS * len(self.bases)

    def virtual_class(self, class_id: int) -> VirtualClass:
        return _cached_virtual_class(class_id, self.bases, self.avoid_degrees)

    def episode(self, index: int) -> VirtualEpisode:
        rng, n = SplitMix64(self.seed, index), len(self.bases)
        per_class = self.spec.sketch + self.spec.query
        if self.stroke_tasks and rng.below(1 << 20) < self.stroke_tasks * (1 << 20):
            classes = _stroke_classes(rng, self.spec.ways)
            return VirtualEpisode(self.pool_classes + np.asarray(classes, dtype=np.int64),
                                  np.zeros((self.spec.ways, 2, per_class), dtype=np.int64), strokes=True)
        if rng.below(1 << 20) < P_SHARED * (1 << 20):
            t = rng.below(TRANSFORMS)
            classes = [t * n + b for b in rng.choose(list(range(n)), self.spec.ways)]
        else:
            classes = _distinct(rng, self.pool_classes, self.spec.ways)
        picks = np.empty((self.spec.ways, 2, per_class), dtype=np.int64)
        for k, c in enumerate(classes):
            bases = self.virtual_class(c).bases
            for row, base in enumerate(bases):
                picks[k, row] = rng.choose(self.members[base], per_class)
            if len(bases) == 1:
                picks[k, 1] = picks[k, 0]
        return VirtualEpisode(np.asarray(classes, dtype=np.int64), picks)

    def images(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sketch uint8 ``[ways·sketch, C, H, W]``, query uint8 ``[ways·query, C, H, W]``, class ids), grouped
        by class in episode-label order like :class:`TaskBatch`."""
        episode, s = self.episode(index), self.spec.sketch
        sketch, query = [], []
        for k, (c, picks) in enumerate(zip(episode.classes, episode.picks)):
            made = self._stroke_images(index, k, int(c)) if episode.strokes else self._transformed(int(c), picks)
            sketch.append(made[:s])
            query.append(made[s:])
        return np.concatenate(sketch), np.concatenate(query), episode.classes

    def _transformed(self, class_id: int, picks: np.ndarray) -> np.ndarray:
        vc, images = self.virtual_class(class_id), self.store.images
        return transform(images[picks[0]], images[picks[1]] if vc.mixture else None, vc)

    def _stroke_images(self, index: int, k: int, class_id: int) -> np.ndarray:
        """Episode ``index``'s ``k``-th class's images, drawn afresh (at the store's image size)."""
        size = self.store.images.shape[-1]
        images = render(_cached_stroke_class(class_id - self.pool_classes), self.spec.sketch + self.spec.query,
                        SplitMix64(self.seed ^ STROKE_STREAM, index * self.spec.ways + k), size)
        return np.repeat(images, self.store.images.shape[1], axis=1)

    def batch(self, indices: list[int]) -> TaskBatch:
        sketch, query, classes = zip(*(self.images(i) for i in indices))
        as_float = lambda parts: _as_float(np.stack(parts))  # noqa: E731
        return TaskBatch(as_float(sketch), as_float(query), torch.from_numpy(np.stack(classes)), self.spec)
