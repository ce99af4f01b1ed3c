"""Episodes as tensors: a meta-batch of tasks drawn by the episodic sampler."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import native
from .sampler import Episode, EpisodeSpec
from .store import ImageStore


@dataclass
class TaskBatch:
    """B tasks of equal shape. Sketch images are grouped by class; the support is a subset of them."""

    sketch: Tensor  # [B, ways * sketch, C, H, W] float in [0, 1]
    query: Tensor  # [B, ways * query, C, H, W]
    classes: Tensor  # [B, ways] original class ids
    spec: EpisodeSpec

    @property
    def device(self) -> torch.device:
        return self.sketch.device

    def to(self, device: torch.device | str) -> "TaskBatch":
        """The same tasks with their images and class ids on ``device``."""
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return TaskBatch(move(self.sketch), move(self.query), move(self.classes), self.spec)

    @property
    def support_positions(self) -> Tensor:
        """Positions of the labelled support inside each sketch set, grouped by class."""
        s, arange = self.spec, lambda n: torch.arange(n, device=self.device)  # noqa: E731
        return (arange(s.ways)[:, None] * s.sketch + arange(s.support)[None, :]).flatten()

    def labels(self, role: str) -> Tensor:
        per_class = {"sketch": self.spec.sketch, "support": self.spec.support, "query": self.spec.query}[role]
        return torch.arange(self.spec.ways, device=self.device).repeat_interleave(per_class)

    @property
    def sketch_labels(self) -> Tensor:
        """``[B, ways * sketch]``: class index for the labelled support, −1 for the unlabelled rest."""
        labels = torch.full((self.spec.ways, self.spec.sketch), -1, dtype=torch.long, device=self.device)
        labels[:, : self.spec.support] = torch.arange(self.spec.ways, device=self.device)[:, None]
        return labels.flatten().expand(len(self.sketch), -1)


class EpisodeStream:
    """Deterministic stream of tasks: episode ``i`` is a pure function of ``(seed, i)``.

    Sampling and gathering run in the Rust core (:mod:`pudnet.data.native`) unless ``PUDNET_NATIVE=0``;
    both paths give the same episodes bit for bit.
    """

    def __init__(
        self, store: ImageStore, classes: list[int], spec: EpisodeSpec, seed: int,
        query_store: ImageStore | None = None,
    ):
        self.store, self.classes, self.spec, self.seed = store, sorted(classes), spec, seed
        self.query_store = query_store
        query_labels = None if query_store is None else query_store.labels
        self.sampler = native.Sampler(store.labels, self.classes, spec, seed, query_labels=query_labels)

    def episode(self, index: int) -> Episode:
        return self.sampler.episode(index)

    def batch(self, indices: list[int]) -> TaskBatch:
        episodes = self.sampler.batch(indices)
        query_store = self.query_store or self.store
        sketch = native.gather(self.store.images, episodes.sketch)
        query = native.gather(query_store.images, episodes.query)
        return TaskBatch(_as_float(sketch), _as_float(query), torch.from_numpy(episodes.classes), self.spec)


def _as_float(images: np.ndarray) -> Tensor:
    return torch.from_numpy(images).float().div_(255.0)
