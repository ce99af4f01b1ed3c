"""A parameter-free classifier on top of any feature extractor: cosine similarity to class centroids."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .data.store import ImageStore
from .ops import centroids, cosine_logits


class CentroidClassifier(nn.Module):
    """Classifies by the nearest class centroid (cosine) of ``model``'s features of the labelled ``support``.

    ``forward(x)`` returns logits over ``classes`` (original class ids, ascending); ``predict(x)`` the ids.
    """

    def __init__(self, model: nn.Module, support: ImageStore, tau: float = 10.0):
        super().__init__()
        if len(support) == 0:
            raise ValueError("the support set is empty: give at least one labelled image per class")
        self.model, self.tau = model.eval(), tau
        self.classes = support.classes
        index = {c: i for i, c in enumerate(self.classes)}
        labels = torch.tensor([index[int(c)] for c in support.labels])
        with torch.no_grad():
            features = self.model(support.tensor())
        self.register_buffer("centroids", centroids(features, labels, len(self.classes)))

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        return cosine_logits(self.model(x), self.centroids, self.tau)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return torch.tensor(self.classes)[self.forward(x).argmax(1)]
