"""ConvNet-3: three [conv3x3 → BatchNorm → ReLU → max-pool 2] blocks, flattened features."""

from __future__ import annotations

from contextlib import nullcontext

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Params, ParamSpec, Stats, Target, conv_bn_relu_maxpool, register


class ConvNet3Module(nn.Module):
    """The exported ConvNet-3: ``forward`` returns flattened features (no classifier head)."""

    def __init__(self, in_channels: int = 1, width: int = 64, depth: int = 3):
        super().__init__()
        channels = [in_channels] + [width] * depth
        for i in range(depth):
            setattr(self, f"conv{i + 1}", nn.Conv2d(channels[i], channels[i + 1], 3, padding=1, bias=False))
            setattr(self, f"bn{i + 1}", nn.BatchNorm2d(channels[i + 1]))
        self.depth = depth

    def forward(self, x: Tensor) -> Tensor:
        for i in range(1, self.depth + 1):
            x = F.max_pool2d(F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x))), 2)
        return x.flatten(1)


@register("convnet3")
class ConvNet3(Target):
    def __init__(self, in_channels: int = 1, width: int = 64, image_size: int = 28, depth: int = 3):
        self.name = "convnet3"
        self.in_channels, self.width, self.image_size, self.depth = in_channels, width, image_size, depth
        side = image_size
        for _ in range(depth):
            side //= 2
        if side < 1:
            raise ValueError(f"images of {image_size}px are too small for {depth} pooling blocks")
        self.feature_dim = width * side * side

    def config(self) -> dict:
        return {**super().config(), "width": self.width, "image_size": self.image_size, "depth": self.depth}

    def specs(self) -> list[ParamSpec]:
        specs, cin = [], self.in_channels
        for i in range(1, self.depth + 1):
            specs += [
                ParamSpec(f"conv{i}.weight", (self.width, cin, 3, 3), "conv"),
                ParamSpec(f"bn{i}.weight", (self.width,), "bn_weight"),
                ParamSpec(f"bn{i}.bias", (self.width,), "bn_bias"),
            ]
            cin = self.width
        return specs

    def forward(self, params: Params, x: Tensor, stats: Stats | None = None) -> tuple[Tensor, Stats]:
        x, stats = self._blocks(params, x, stats, 1)
        return x.flatten(1), stats

    def _blocks(self, params: Params, x: Tensor, stats: Stats | None, first: int, last: int | None = None
                ) -> tuple[Tensor, Stats]:
        """Blocks ``first``..``last`` (default: to the end), unflattened output."""
        collected: Stats = {}
        for i in range(first, (self.depth if last is None else last) + 1):
            x = conv_bn_relu_maxpool(x, params[f"conv{i}.weight"], f"bn{i}", params, stats, collected)
        return x, (stats if stats is not None else collected)

    def frozen_prefix(self, params: Params, x: Tensor, changing: set[str], differentiable: bool = False
                      ) -> tuple[Tensor, Callable]:
        """Runs the blocks before the first one holding a ``changing`` parameter (BatchNorm statistics from
        ``x``, as ``forward`` computes them)."""
        first = min(int(name.split(".")[0].removeprefix("conv").removeprefix("bn")) for name in changing)
        if first == 1:
            return super().frozen_prefix(params, x, changing, differentiable)
        with nullcontext() if differentiable else torch.no_grad():
            prefix, _ = self._blocks(params, x, None, 1, first - 1)

        def rest(p: Params, h: Tensor) -> tuple[Tensor, Stats]:
            h, stats = self._blocks(p, h, None, first)
            return h.flatten(1), stats

        return prefix, rest

    def canonical(self, params: Params) -> Params:
        """Also each block's BatchNorm weight and bias divided by the weight's RMS: scaling both by c > 0
        scales the block's output by c (ReLU and max-pool are positively homogeneous), which the next
        block's normalisation, or the cosine of the centroid classifier after the last, undoes."""
        params = super().canonical(params)
        for i in range(1, self.depth + 1):
            weight, bias = params[f"bn{i}.weight"], params[f"bn{i}.bias"]
            rms = weight.pow(2).mean().sqrt().clamp_min(1e-12)
            params = {**params, f"bn{i}.weight": weight / rms, f"bn{i}.bias": bias / rms}
        return params

    def module(self) -> nn.Module:
        return ConvNet3Module(self.in_channels, self.width, self.depth)
