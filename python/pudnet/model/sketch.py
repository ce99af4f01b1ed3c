"""The dataset sketch encoder φ: a whole dataset of images in, one vector out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DatasetNorm(nn.Module):
    """BatchNorm whose statistics are each dataset's own (over its images and positions).

    Input ``[B, N, C, H, W]``: B datasets of N images, each normalised over its own N·H·W positions. The same rule holds in training and prediction,
    so a dataset's sketch never depends on the other datasets of its meta-batch.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if len(x) == 1:  # prediction: skip the copy that stacking costs
            return self._normalise(x[0]).unsqueeze(0)
        return torch.stack([self._normalise(dataset) for dataset in x])

    def _normalise(self, dataset: Tensor) -> Tensor:
        return F.batch_norm(dataset, None, None, self.weight, self.bias, True, 0.0, self.eps)


class SketchEncoder(nn.Module):
    """3 × [stride-2 conv3x3 → LeakyReLU → DatasetNorm], a per-image projection, mean over the dataset.

    The per-image projection (Linear → LeakyReLU) sits between the last normalisation and the mean:
    the mean of a batch-normalised tensor is its bias whatever the data, so without it every dataset would
    get the same sketch.
    """

    def __init__(self, in_channels: int, width: int = 32, sketch_dim: int = 256, pooled: int = 2):
        super().__init__()
        channels = [in_channels, width, width, width]
        self.convs = nn.ModuleList(nn.Conv2d(channels[i], channels[i + 1], 3, stride=2, padding=1) for i in range(3))
        self.norms = nn.ModuleList(DatasetNorm(width) for _ in range(3))
        self.pooled = pooled
        self.project = nn.Linear(width * pooled * pooled, sketch_dim)

    def per_image(self, images: Tensor) -> Tensor:
        """Per-image features ``[B, N, sketch_dim]`` of ``images`` ``[B, N, C, H, W]``."""
        b, n = images.shape[:2]
        x = images
        for conv, norm in zip(self.convs, self.norms):
            x = F.leaky_relu(conv(x.flatten(0, 1)), 0.2)
            x = norm(x.view(b, n, *x.shape[1:]))
        x = F.adaptive_avg_pool2d(x.flatten(0, 1), self.pooled).view(b, n, -1)
        return F.leaky_relu(self.project(x), 0.2)

    def forward(self, images: Tensor) -> Tensor:
        """The sketch ``[B, sketch_dim]`` of each of the B datasets in ``images`` ``[B, N, C, H, W]``."""
        return self.per_image(images).mean(dim=1)
