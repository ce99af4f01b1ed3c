"""ResNet-18/34 targets with torchvision's parameter names, adapted to small images.

The exported module is a real ``torchvision.models.ResNet`` (``resnet18``/``resnet34`` with
``weights=None``) with three changes for 28–32 px inputs and the parameter-free centroid classifier:

* ``conv1`` is a 3×3, stride-1, padding-1 convolution from ``in_channels`` (no bias);
* ``maxpool`` is ``nn.Identity``;
* ``fc`` is ``nn.Identity``, so the module returns the 512-d features after global average pooling.

``ResNetTarget.forward`` is the same network written functionally (``base.conv_bn``), so that predicted
weights can be run without building a module, and ``to_module`` turns them into the torchvision model
(eval mode reproduces ``forward(params, x, stats)``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from .base import Params, ParamSpec, Stats, Target, conv_bn, register

# blocks per stage of the BasicBlock ResNets
_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
_WIDTHS = (64, 128, 256, 512)
_FACTORIES = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34}


def adapted_resnet(depth: int, in_channels: int = 1) -> torchvision.models.ResNet:
    """A fresh torchvision ResNet-``depth`` adapted to small images (see the module docstring).

    This is the architecture a saved ResNet state dict loads into:
    ``adapted_resnet(18, 3).load_state_dict(torch_state_dict)``.
    """
    if depth not in _FACTORIES:
        raise ValueError(f"ResNet depth must be one of {sorted(_FACTORIES)}, got {depth}")
    model = _FACTORIES[depth](weights=None)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


class ResNetTarget(Target):
    """BasicBlock ResNet: stem conv3x3 → BN → ReLU, four stages, global average pool (512-d features)."""

    depth: int

    def __init__(self, in_channels: int = 1, image_size: int = 28):
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        if image_size < 8:
            raise ValueError(f"images of {image_size}px are too small for a ResNet (3 stride-2 stages)")
        self.name = f"resnet{self.depth}"
        self.in_channels, self.image_size = in_channels, image_size
        self.feature_dim = _WIDTHS[-1]

    def config(self) -> dict:
        return {**super().config(), "image_size": self.image_size}

    def _blocks(self):
        """(prefix, in planes, planes, stride, has downsample) for every BasicBlock, in order."""
        inplanes = 64
        for stage, (n_blocks, planes) in enumerate(zip(_LAYERS[self.depth], _WIDTHS), start=1):
            for b in range(n_blocks):
                stride = 2 if (stage > 1 and b == 0) else 1
                downsample = stride != 1 or inplanes != planes
                yield f"layer{stage}.{b}", inplanes, planes, stride, downsample
                inplanes = planes

    def specs(self) -> list[ParamSpec]:
        def bn(name: str, c: int) -> list[ParamSpec]:
            return [ParamSpec(f"{name}.weight", (c,), "bn_weight"), ParamSpec(f"{name}.bias", (c,), "bn_bias")]

        specs = [ParamSpec("conv1.weight", (64, self.in_channels, 3, 3), "conv"), *bn("bn1", 64)]
        for prefix, inplanes, planes, _stride, downsample in self._blocks():
            specs += [ParamSpec(f"{prefix}.conv1.weight", (planes, inplanes, 3, 3), "conv"), *bn(f"{prefix}.bn1", planes)]
            specs += [ParamSpec(f"{prefix}.conv2.weight", (planes, planes, 3, 3), "conv"), *bn(f"{prefix}.bn2", planes)]
            if downsample:
                specs += [
                    ParamSpec(f"{prefix}.downsample.0.weight", (planes, inplanes, 1, 1), "conv"),
                    *bn(f"{prefix}.downsample.1", planes),
                ]
        return specs

    def forward(self, params: Params, x: Tensor, stats: Stats | None = None) -> tuple[Tensor, Stats]:
        collected: Stats = {}
        x = self._trunk(params, x, stats, collected)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1), (stats if stats is not None else collected)

    def _trunk(self, params: Params, x: Tensor, stats: Stats | None, collected: Stats,
               before_last_conv2: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """The stem and every block (unpooled output); ``before_last_conv2``: stop at the last block's second
        convolution and return ``(its input, the block's input)``."""
        def conv_then_bn(h: Tensor, conv: str, bn: str, stride: int = 1, padding: int = 1) -> Tensor:
            return conv_bn(h, params[f"{conv}.weight"], bn, params, stats, collected, stride, padding)

        # in-place ReLUs and sums: fresh buffers of this size cost page faults on CPU, and nothing saved
        # for backward is overwritten (autograd would raise)
        x = F.relu_(conv_then_bn(x, "conv1", "bn1"))
        blocks = list(self._blocks())
        for i, (prefix, _inplanes, _planes, stride, downsample) in enumerate(blocks):
            out = F.relu_(conv_then_bn(x, f"{prefix}.conv1", f"{prefix}.bn1", stride))
            if before_last_conv2 and i == len(blocks) - 1:
                return out, x
            out = conv_then_bn(out, f"{prefix}.conv2", f"{prefix}.bn2")
            if downsample:
                out += conv_then_bn(x, f"{prefix}.downsample.0", f"{prefix}.downsample.1", stride, padding=0)
            else:
                out += x
            x = F.relu_(out)
        return x

    def frozen_prefix(self, params: Params, x: Tensor, changing: set[str], differentiable: bool = False
                      ) -> tuple[Tensor, Callable]:
        """Where only the last block's second convolution and BatchNorm change (the refinement's default
        tensors): everything up to that convolution, done once; the prefix is its input (the block's own
        input, the identity it adds, is kept by the returned function)."""
        last, *_, downsample = list(self._blocks())[-1]
        tail = {f"{last}.conv2.weight", f"{last}.bn2.weight", f"{last}.bn2.bias"}
        if downsample or not changing <= tail:
            return super().frozen_prefix(params, x, changing, differentiable)
        with nullcontext() if differentiable else torch.no_grad():
            hidden, identity = self._trunk(params, x, None, {}, before_last_conv2=True)

        def rest(p: Params, h: Tensor) -> tuple[Tensor, Stats]:
            collected: Stats = {}
            out = conv_bn(h, p[f"{last}.conv2.weight"], f"{last}.bn2", p, None, collected, 1, 1)
            out = F.relu(out + identity)  # not in place: the prefix serves every pass
            return F.adaptive_avg_pool2d(out, (1, 1)).flatten(1), collected

        return hidden, rest

    def module(self) -> nn.Module:
        return adapted_resnet(self.depth, self.in_channels)

    def to_module(self, params: Params, stats: Stats) -> nn.Module:
        """As ``Target.to_module``, without paying for torchvision's random init (~0.2 s for ResNet-18 on CPU).

        The module is built on the meta device and every tensor is assigned from ``params``/``stats``
        (strictly: a missing or extra name raises), so it lives on their device and dtype.
        """
        with torch.device("meta"):
            module = self.module()
        state = {k: v.detach().clone() for k, v in params.items()}
        for name, (mean, var) in stats.items():
            state[f"{name}.running_mean"] = mean.detach().clone()
            state[f"{name}.running_var"] = var.detach().clone()
            state[f"{name}.num_batches_tracked"] = torch.tensor(1, device=mean.device)
        module.load_state_dict(state, strict=True, assign=True)
        return module.eval()


@register("resnet18")
class ResNet18(ResNetTarget):
    depth = 18


@register("resnet34")
class ResNet34(ResNetTarget):
    depth = 34
