"""Denoising as a task: the noise model, the losses (supervised, blind-spot) and the metrics.

Noise model (every output states it): Gaussian noise of standard deviation ``sigma`` in 0–255 units added to
the image in 0–255 units, the result clipped to [0, 255]; images are handled as floats in [0, 1] (``/255``).
This is *not* the authors' released code, which adds σ = 25 after mean/std normalisation (effective σ ≈ 5.7/255).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

NOISE_MODEL = "gaussian, sigma in 0-255 units added to [0, 255] images, clipped to [0, 255]"
BLIND_SPOT_FRACTION = 0.1  # masked pixels per image (Noise2Void / the authors' release: ~10%)
BLIND_SPOT_RADIUS = 2  # a masked pixel takes the value of a random other pixel of its 5×5 neighbourhood


def add_noise(clean: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """``clean`` floats in [0, 1] → noisy floats in [0, 1] (:data:`NOISE_MODEL`)."""
    if sigma < 0:
        raise ValueError(f"sigma must be ≥ 0 (0–255 units), got {sigma}")
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32).to(clean.device)
    return (clean * 255.0 + sigma * noise).clamp_(0.0, 255.0) / 255.0


def blind_spot(noisy: Tensor, generator: torch.Generator | None = None,
               fraction: float = BLIND_SPOT_FRACTION) -> tuple[Tensor, Tensor]:
    """``(input, mask)`` for the blind-spot loss: ``input`` is ``noisy`` [N, C, H, W] with a random
    ``fraction`` of pixel positions each replaced by a random other pixel of its 5×5 neighbourhood (same
    channel); ``mask`` [N, 1, H, W] marks them."""
    n, _, h, w = noisy.shape
    mask = torch.rand((n, 1, h, w), generator=generator) < fraction
    offsets = torch.randint(-BLIND_SPOT_RADIUS, BLIND_SPOT_RADIUS + 1, (2, n, 1, h, w), generator=generator)
    same = (offsets[0] == 0) & (offsets[1] == 0)
    offsets[0][same] = 1  # never the pixel itself
    rows = _reflected(torch.arange(h)[None, None, :, None], offsets[0], h)
    cols = _reflected(torch.arange(w)[None, None, None, :], offsets[1], w)
    flat = noisy.flatten(2)  # [N, C, H·W]
    source = (rows * w + cols).flatten(2).expand(-1, noisy.shape[1], -1).to(noisy.device)
    replaced = flat.gather(2, source).view_as(noisy)
    mask = mask.to(noisy.device)
    return torch.where(mask, replaced, noisy), mask


def _reflected(position: Tensor, offset: Tensor, size: int) -> Tensor:
    """``position + offset``, or ``position − offset`` where that leaves the image (so never the pixel itself
    when the image is at least 2·radius + 1 wide), clamped for smaller images."""
    moved = position + offset
    outside = (moved < 0) | (moved >= size)
    return torch.where(outside, position - offset, moved).clamp(0, size - 1)


def supervised_loss(denoised: Tensor, clean: Tensor) -> Tensor:
    """Mean squared error to the clean images (training collections have them)."""
    return F.mse_loss(denoised.float(), clean.float())


def blind_spot_loss(denoised: Tensor, noisy: Tensor, mask: Tensor) -> Tensor:
    """L1 between the output and the noisy image on the masked pixels only (needs no clean image)."""
    mask = mask.expand_as(noisy).float()
    return ((denoised.float() - noisy.float()).abs() * mask).sum() / mask.sum().clamp_min(1.0)


def psnr(denoised: Tensor, clean: Tensor) -> np.ndarray:
    """PSNR in dB of each image (output clipped to [0, 1]), from scikit-image."""
    from skimage.metrics import peak_signal_noise_ratio

    return np.array([peak_signal_noise_ratio(c, d, data_range=1.0) for c, d in _pairs(denoised, clean)])


def ssim(denoised: Tensor, clean: Tensor) -> np.ndarray:
    """SSIM of each image (output clipped to [0, 1], 7×7 Gaussian-free window), from scikit-image."""
    from skimage.metrics import structural_similarity

    side = min(clean.shape[-2:])
    window = min(7, side if side % 2 else side - 1)
    return np.array([structural_similarity(c, d, data_range=1.0, win_size=window, channel_axis=0)
                     for c, d in _pairs(denoised, clean)])


def _pairs(denoised: Tensor, clean: Tensor):
    if denoised.shape != clean.shape:
        raise ValueError(f"denoised {list(denoised.shape)} and clean {list(clean.shape)} differ in shape")
    d = denoised.detach().float().clamp(0, 1).cpu().numpy().astype(np.float64)
    c = clean.detach().float().cpu().numpy().astype(np.float64)
    return zip(c, d)
