"""A residual U-Net denoiser (the paper's denoising extension), a plain module made a target by
:meth:`Target.from_module`.

Two levels of [conv3×3 → BatchNorm → ReLU] × 2 with 2× max-pooling, a bottleneck, transposed-convolution
upsampling with skip concatenation, and a 1×1 convolution that predicts the noise: ``output = input −
noise``. Any image size works: the input is padded (edge values) to a multiple of 4 and the output cropped
back. BatchNorm statistics come from the collection the weights are predicted for (the targets' rule).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ModuleTarget, register

_MULTIPLE = 4  # two 2× poolings


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """``UNet(in_channels, width)(noisy [N, C, H, W]) -> denoised [N, C, H, W]`` (floats, images in [0, 1];
    the output is not clipped)."""

    def __init__(self, in_channels: int = 1, width: int = 32):
        super().__init__()
        self.enc1, self.enc2 = _block(in_channels, width), _block(width, 2 * width)
        self.mid = _block(2 * width, 4 * width)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = _block(4 * width, 2 * width)
        self.up1 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec1 = _block(2 * width, width)
        self.noise = nn.Conv2d(width, in_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        padded = F.pad(x, (0, -w % _MULTIPLE, 0, -h % _MULTIPLE), mode="replicate")
        e1 = self.enc1(padded)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return x - self.noise(d1)[..., :h, :w]


@register("unet")
def unet_target(in_channels: int = 1, width: int = 32) -> ModuleTarget:
    return ModuleTarget(UNet(in_channels, width), name="unet", in_channels=in_channels,
                        config={"width": width})
