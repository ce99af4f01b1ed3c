"""Episodes as tensors: a meta-batch of tasks drawn by the episodic sampler."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .sampler import Episode, EpisodeSpec, class_members, sample_episode
from .store import ImageStore


@dataclass
class TaskBatch:
    """B tasks of equal shape. Sketch images are grouped by class; the support is a subset of them."""

    sketch: Tensor  # [B, ways * sketch, C, H, W] float in [0, 1]
    query: Tensor  # [B, ways * query, C, H, W]
    classes: Tensor  # [B, ways] original class ids
    spec: EpisodeSpec

    @property
    def support_positions(self) -> Tensor:
        """Positions of the labelled support inside each sketch set, grouped by class."""
        s = self.spec
        return (torch.arange(s.ways)[:, None] * s.sketch + torch.arange(s.support)[None, :]).flatten()

    def labels(self, role: str) -> Tensor:
        per_class = {"sketch": self.spec.sketch, "support": self.spec.support, "query": self.spec.query}[role]
        return torch.arange(self.spec.ways).repeat_interleave(per_class)

    @property
    def sketch_labels(self) -> Tensor:
        """``[B, ways * sketch]``: class index for the labelled support, −1 for the unlabelled rest."""
        labels = torch.full((self.spec.ways, self.spec.sketch), -1, dtype=torch.long)
        labels[:, : self.spec.support] = torch.arange(self.spec.ways)[:, None]
        return labels.flatten().expand(len(self.sketch), -1)


class EpisodeStream:
    """Deterministic stream of tasks: episode ``i`` is a pure function of ``(seed, i)``."""

    def __init__(
        self, store: ImageStore, classes: list[int], spec: EpisodeSpec, seed: int,
        query_store: ImageStore | None = None,
    ):
        self.store, self.classes, self.spec, self.seed = store, sorted(classes), spec, seed
        self.query_store = query_store
        self._members = class_members(store.labels)
        self._query_members = class_members(query_store.labels) if query_store is not None else None

    def episode(self, index: int) -> Episode:
        return sample_episode(
            self.store.labels, self.classes, self.spec, self.seed, index,
            None if self.query_store is None else self.query_store.labels,
            members=self._members, query_members=self._query_members,
        )

    def batch(self, indices: list[int]) -> TaskBatch:
        episodes = [self.episode(i) for i in indices]
        return self.to_tensors(episodes)

    def to_tensors(self, episodes: list[Episode]) -> TaskBatch:
        query_store = self.query_store or self.store
        sketch = self.store.tensor(np.stack([e.sketch for e in episodes]))
        query = query_store.tensor(np.stack([e.query for e in episodes]))
        classes = torch.from_numpy(np.stack([e.classes for e in episodes]))
        return TaskBatch(sketch, query, classes, self.spec)
