"""The dataset sketch encoder φ: a whole dataset of images in, one vector out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import channel_moments, mean_and_variance


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

    def _normalise(self, dataset: Tensor, stats: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """``dataset`` normalised with its own statistics, or with given ``(mean, biased variance)``."""
        mean, var = stats if stats is not None else (None, None)
        return F.batch_norm(dataset, mean, var, self.weight, self.bias, stats is None, 0.0, self.eps)


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

    @torch.no_grad()
    def streamed_per_image(self, dataset: Tensor, chunk: int) -> Tensor:
        """:meth:`per_image` of one dataset ``[N, C, H, W]`` (``[N, sketch_dim]``) in chunks of ``chunk`` images:
        each normalisation's statistics summed over all chunks (float64) with the earlier ones fixed, one pass
        over the chunks per normalisation, then one for the features — the same numbers in bounded memory."""
        chunks = dataset.split(chunk)
        stats: list[tuple[Tensor, Tensor]] = []
        for depth in range(len(self.convs)):
            moments, count = [], 0
            for part in chunks:  # one chunk's activations alive at a time
                activations = self._activations(part, stats, depth)
                moments.append(channel_moments(activations))
                count += activations.numel() // activations.shape[1]
            stats.append(mean_and_variance(moments, count, torch.float32))
        return torch.cat([self._features(self._activations(part, stats, len(self.convs))) for part in chunks])

    def _activations(self, x: Tensor, stats: list[tuple[Tensor, Tensor]], depth: int) -> Tensor:
        """The first ``depth`` blocks with the given normalisation statistics, then the next convolution's
        activations (before its normalisation) if there is one."""
        for i in range(depth):
            x = self.norms[i]._normalise(F.leaky_relu(self.convs[i](x), 0.2), stats[i])
        return F.leaky_relu(self.convs[depth](x), 0.2) if depth < len(self.convs) else x

    def _features(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.project(F.adaptive_avg_pool2d(x, self.pooled).flatten(1)), 0.2)

    def forward(self, images: Tensor) -> Tensor:
        """The sketch ``[B, sketch_dim]`` of each of the B datasets in ``images`` ``[B, N, C, H, W]``."""
        return self.per_image(images).mean(dim=1)

