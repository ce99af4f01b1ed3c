"""Target architectures: ordered parameter specs plus a functional forward.

A target never owns parameters. ``forward(params, x, stats)`` runs it with any weights: with
``stats=None`` every BatchNorm normalises with the batch's own statistics and the statistics are returned,
so that a dataset's images can set them once and every later call (support, query, the exported module in
eval mode) reuses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BN_EPS = 1e-5
Params = dict[str, Tensor]
Stats = dict[str, tuple[Tensor, Tensor]]  # BatchNorm name -> (mean, biased variance)


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    kind: str  # "conv" | "linear" | "bn_weight" | "bn_bias" | "bias"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def fan_in(self) -> int:
        return math.prod(self.shape[1:]) if len(self.shape) > 1 else 1

    @property
    def is_matrix(self) -> bool:
        return self.kind in ("conv", "linear")


def batch_norm(x: Tensor, name: str, params: Params, stats: Stats | None, collected: Stats) -> Tensor:
    """BatchNorm ``name`` with the given statistics, or the batch's own (then recorded in ``collected``).

    Recorded statistics are detached: later batches are normalised with them as constants, exactly as the
    exported module does in eval mode.
    """
    weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
    if stats is None:
        out, mean, invstd = torch.native_batch_norm(x, weight, bias, None, None, True, 0.0, BN_EPS)
        collected[name] = (mean.detach().float(), (invstd.detach().float() ** -2 - BN_EPS).clamp_min(0.0))
        return out
    mean, var = stats[name]
    return F.batch_norm(x, mean, var, weight, bias, False, 0.0, BN_EPS)


class Target:
    """A target architecture: ``specs`` in generation order and a functional ``forward``."""

    name: str
    in_channels: int
    feature_dim: int

    def specs(self) -> list[ParamSpec]:
        raise NotImplementedError

    def forward(self, params: Params, x: Tensor, stats: Stats | None = None) -> tuple[Tensor, Stats]:
        """Features ``[N, feature_dim]`` and the BatchNorm statistics used."""
        raise NotImplementedError

    def frozen_prefix(self, params: Params, x: Tensor, changing: set[str]) -> tuple[Tensor, Callable]:
        """For repeated passes over one batch ``x`` in which only the parameters named in ``changing`` vary
        (refinement of the last layers): the work that does not depend on them, done once, and a function
        ``(params, prefix) -> forward(params, x)``. This default does nothing ahead."""
        return x, lambda p, h: self.forward(p, h)

    def canonical(self, params: Params) -> Params:
        """``params`` with the degrees of freedom the network's function ignores divided out, so that
        distances between parameter sets measure distances between functions: every convolution here feeds
        a batch-normalisation with the dataset's statistics, so each filter's scale is irrelevant and
        filters are normalised to unit norm. Targets with more such symmetries override this."""
        return {
            name: F.normalize(value.flatten(1), dim=1).view_as(value) if value.dim() == 4 else value
            for name, value in params.items()
        }

    def whiten_last_conv(self, params: Params, x: Tensor, shrinkage: float = 0.1) -> Params:
        raise NotImplementedError(f"whitening of the last convolution is not implemented for {self.name}")

    def module(self) -> nn.Module:
        """A fresh ``torch.nn.Module`` of this architecture whose state-dict names match ``specs``."""
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": self.name, "in_channels": self.in_channels}

    def to_module(self, params: Params, stats: Stats) -> nn.Module:
        """The module in eval mode with ``params`` loaded and BatchNorm running statistics from ``stats``."""
        module = self.module()
        state = {k: v.detach().clone() for k, v in params.items()}
        for name, (mean, var) in stats.items():
            state[f"{name}.running_mean"] = mean.detach().clone()
            state[f"{name}.running_var"] = var.detach().clone()
            state[f"{name}.num_batches_tracked"] = torch.tensor(1)
        module.load_state_dict(state, strict=True)
        return module.eval()

    def random_params(self, generator: torch.Generator | None = None) -> Params:
        """Kaiming-normal convolutions and linear maps, unit BatchNorm: the random-init floor."""
        params = {}
        for spec in self.specs():
            if spec.is_matrix:
                std = math.sqrt(2.0 / spec.fan_in)
                params[spec.name] = torch.randn(spec.shape, generator=generator) * std
            elif spec.kind == "bn_weight":
                params[spec.name] = torch.ones(spec.shape)
            else:
                params[spec.name] = torch.zeros(spec.shape)
        return params


_REGISTRY: dict[str, Callable[..., Target]] = {}


def register(name: str):
    def wrap(factory):
        _REGISTRY[name] = factory
        return factory

    return wrap


def make_target(name: str, in_channels: int = 1, **kwargs) -> Target:
    if name not in _REGISTRY:
        raise ValueError(f"unknown target {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](in_channels=in_channels, **kwargs)


def target_names() -> list[str]:
    return sorted(_REGISTRY)
