"""Datasets as one contiguous uint8 image store ``[N, C, H, W]`` plus integer labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .sampler import SplitMix64, TooFewImagesError, class_members


class DataError(ValueError):
    """A data file or folder is missing, malformed or unsuitable; the message names it."""


@dataclass
class ImageStore:
    """Images ``uint8 [N, C, H, W]`` and labels ``int64 [N]``; ``source`` names where they came from."""

    images: np.ndarray
    labels: np.ndarray
    source: str = "<memory>"
    class_names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(
                f"{self.source}: images must be uint8 [N, C, H, W], got {self.images.dtype} "
                f"{list(self.images.shape)}"
            )
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (len(self.images),):
            raise DataError(
                f"{self.source}: {len(self.images)} images but labels of shape {list(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def classes(self) -> list[int]:
        return sorted(int(c) for c in np.unique(self.labels))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, indices: np.ndarray) -> "ImageStore":
        return ImageStore(self.images[indices], self.labels[indices], self.source, self.class_names)

    def of_classes(self, classes: list[int]) -> "ImageStore":
        return self.subset(np.flatnonzero(np.isin(self.labels, classes)))

    def tensor(self, indices: np.ndarray | None = None) -> torch.Tensor:
        """Images as float32 in [0, 1]."""
        images = self.images if indices is None else self.images[indices]
        return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)

    def labelled(self, per_class: int = 10, seed: int = 0) -> "ImageStore":
        """``per_class`` images of every class, drawn with the sampler's generator."""
        rng = SplitMix64(seed, 0)
        chosen = []
        for c, members in sorted(class_members(self.labels).items()):
            if len(members) < per_class:
                raise TooFewImagesError(
                    f"{self.source}: class {c} has {len(members)} images, {per_class} labelled asked"
                )
            chosen += rng.choose(members, per_class)
        return self.subset(np.asarray(chosen, dtype=np.int64))


def with_rotated_classes(
    store: ImageStore, classes: list[int], degrees: tuple[float, ...] = (90, 180, 270),
) -> tuple[ImageStore, list[int]]:
    """``store`` plus, for every class ``c`` in ``classes`` and the ``i``-th angle of ``degrees`` (from 1), its
    images rotated by that angle (:func:`rotate_images`) as a new class ``c + 1000·i`` — more distinct classes
    for meta-training, or novel classes for validation. Returns the enlarged store and class list."""
    keep = np.flatnonzero(np.isin(store.labels, classes))
    images, labels = [store.images], [store.labels]
    for i, angle in enumerate(degrees, start=1):
        images.append(rotate_images(store.images[keep], angle))
        labels.append(store.labels[keep] + 1000 * i)
    enlarged = ImageStore(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), store.source)
    return enlarged, sorted(classes) + [c + 1000 * i for i in range(1, len(degrees) + 1) for c in sorted(classes)]


def rotate_images(images: np.ndarray, degrees: float) -> np.ndarray:
    """uint8 images ``[N, C, H, W]`` rotated counter-clockwise about their centre (bilinear, zero fill; quarter
    turns exact)."""
    if degrees % 90 == 0:
        return np.ascontiguousarray(np.rot90(images, k=int(degrees // 90) % 4, axes=(2, 3)))
    angle = np.deg2rad(degrees)
    cos, sin = float(np.cos(angle)), float(np.sin(angle))
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]]).expand(len(images), 2, 3)
    x = torch.from_numpy(np.ascontiguousarray(images)).float()
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).numpy()


def hold_out(store: ImageStore, classes: list[int], fraction: float) -> tuple[ImageStore, ImageStore]:
    """The images of ``classes`` split per class: the first ``1 − fraction`` (ascending index) and the last
    ``fraction``, held out for model selection. Deterministic."""
    members = class_members(store.labels)
    kept, held = [], []
    for c in sorted(classes):
        found = members.get(int(c), [])
        count = int(len(found) * fraction)
        if count < 1 or count >= len(found):
            raise DataError(f"{store.source}: class {c} has {len(found)} images, too few to hold out "
                            f"{fraction:.0%} for validation")
        kept += found[: len(found) - count]
        held += found[len(found) - count :]
    as_index = lambda xs: np.asarray(sorted(xs), dtype=np.int64)  # noqa: E731
    return store.subset(as_index(kept)), store.subset(as_index(held))
