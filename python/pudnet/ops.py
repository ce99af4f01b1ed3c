"""Pure tensor operations several layers share: class centroids and cosine logits (the metric classifier of
training, refinement, evaluation and the baselines) and the check that tensors hold only finite values.

A leaf: it imports nothing of pudnet, so any module may import it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def centroids(features: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Mean feature of each class ``[ways, D]``."""
    onehot = F.one_hot(labels, ways).to(features.dtype)
    return (onehot.T @ features) / onehot.sum(0).unsqueeze(1)


def cosine_logits(features: Tensor, centres: Tensor, tau: Tensor | float) -> Tensor:
    return tau * F.normalize(features, dim=-1) @ F.normalize(centres, dim=-1).T


class NonFiniteError(ValueError):
    """A parameter set holds NaN or infinite values."""


def check_finite(tensors: dict[str, Tensor], what: str) -> None:
    """Raise :class:`NonFiniteError` naming the first tensor of ``tensors`` with a NaN or infinite value."""
    for name, value in tensors.items():
        if value.is_floating_point() and not _all_finite(value):
            raise NonFiniteError(f"{what}: tensor {name!r} holds NaN or infinite values")


def _all_finite(value: Tensor) -> bool:
    # A NaN or infinity makes the sum non-finite; a finite sum is ~7x cheaper than isfinite on CPU, and only
    # an overflowing sum of finite values needs the exact test.
    return bool(torch.isfinite(value.sum())) or bool(torch.isfinite(value).all())


def channel_moments(x: Tensor) -> Tensor:
    """``[2, C]``: per-channel sum and sum of squares of ``x`` ``[N, C, *]`` over all but the channel dimension,
    in float64 (exact enough to add up over many chunks)."""
    dims = (0, *range(2, x.dim()))
    return torch.stack([x.sum(dims, dtype=torch.float64),
                        torch.linalg.vector_norm(x, dim=dims, dtype=torch.float64).square()])


def mean_and_variance(moments: list[Tensor], count: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Mean and biased variance from the :func:`channel_moments` of chunks holding ``count`` positions in all."""
    mean, mean_square = torch.stack(moments).sum(0) / count
    return mean.to(dtype), (mean_square - mean.square()).clamp_min(0.0).to(dtype)
