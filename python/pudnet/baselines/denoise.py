"""Denoising baselines for a noisy image collection ``[N, 1, H, W]`` (floats in [0, 1], the noise model of
:mod:`pudnet.tasks.denoising`), none of which sees a clean image:

- :func:`bm3d_denoise`: BM3D (PyPI ``bm3d``), told the true noise level, per image;
- :func:`zs_n2n_denoise`: Zero-Shot Noise2Noise (Mansour & Heckel, CVPR 2023), a tiny network per image
  trained on that image alone — all the collection's networks trained at once (grouped convolutions);
- :func:`unet_from_scratch`: the target :class:`~pudnet.targets.unet.UNet` from random init, trained
  self-supervised (blind-spot) on the noisy collection only.

Timings in the docstrings: one torch thread (``OMP_NUM_THREADS=1``) on a shared 2-core CPU with another
training process running, so upper-end figures.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..targets.unet import UNet
from ..tasks.denoising import blind_spot, blind_spot_loss

__all__ = ["bm3d_denoise", "recompute_batchnorm", "unet_from_scratch", "zs_n2n_denoise"]

ZS_N2N_WIDTH = 48
ZS_N2N_SLOPE = 0.2  # LeakyReLU negative slope
ZS_N2N_STEPS = 45  # default: ~9 s for 50 images of 28×28 on one thread (see zs_n2n_denoise)


# ------------------------------------------------------------------------------------------- checks


def check_noisy(noisy: Tensor, name: str = "noisy", min_side: int = 1) -> None:
    """Raise ``ValueError`` naming the problem unless ``noisy`` is a non-empty float tensor
    ``[N, 1, H, W]`` with H, W ≥ ``min_side`` and finite values in [0, 1]."""
    if not isinstance(noisy, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, 1, H, W], got {type(noisy).__name__}")
    if noisy.ndim != 4 or noisy.shape[1] != 1:
        raise ValueError(f"{name} must be grayscale images [N, 1, H, W], got shape {list(noisy.shape)}")
    if not noisy.is_floating_point():
        raise ValueError(f"{name} must be floats in [0, 1] (images / 255), got dtype {noisy.dtype}")
    if noisy.shape[0] == 0:
        raise ValueError(f"{name} holds no images (shape {list(noisy.shape)})")
    if min(noisy.shape[-2:]) < min_side:
        raise ValueError(f"{name} images must be at least {min_side}×{min_side} pixels, got "
                         f"{noisy.shape[-2]}×{noisy.shape[-1]}")
    if not torch.isfinite(noisy).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    low, high = float(noisy.min()), float(noisy.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} values must lie in [0, 1] (images / 255), got range [{low:.4g}, {high:.4g}]")


def _check_count(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _check_rate(lr: float) -> None:
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")


# ------------------------------------------------------------------------------------------- BM3D


def bm3d_denoise(noisy: Tensor, sigma: float) -> Tensor:
    """BM3D of every image: ``bm3d.bm3d(image, sigma_psd=sigma / 255)`` (``sigma``: the noise standard
    deviation in 0–255 units, as :func:`pudnet.tasks.denoising.add_noise` takes it), output clipped to
    [0, 1]; same shape, dtype and device as ``noisy``. ``sigma = 0`` returns the input unchanged.

    Cost: one call per image on the CPU, measured 0.37–1.1 s for a 28×28 image (typically 0.75 s) and
    0.9–1.3 s for a 64×64 one (typically 1.0 s) — mostly fixed overhead of the binary's hard-thresholding
    stage; the spread is the shared machine's load.
    """
    check_noisy(noisy)
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0 (0–255 units), got {sigma!r}")
    if sigma == 0:
        return noisy.clone()
    try:
        import bm3d
    except ImportError:
        raise ImportError("bm3d_denoise needs the PyPI package bm3d: `pip install bm3d`") from None
    images = noisy.detach().cpu().double().numpy()[:, 0]
    out = np.stack([bm3d.bm3d(image, sigma_psd=sigma / 255.0) for image in images])
    return torch.from_numpy(np.clip(out, 0.0, 1.0)[:, None]).to(noisy.dtype).to(noisy.device)


# ------------------------------------------------------------------------------------------- ZS-N2N


def zs_n2n_denoise(noisy: Tensor, steps: int = ZS_N2N_STEPS, lr: float = 1e-3, seed: int = 0) -> Tensor:
    """Zero-Shot Noise2Noise (Mansour & Heckel, CVPR 2023) of every image, each with its own network.

    Per image ``y``: a network ``f`` (conv3×3 1→48, LeakyReLU 0.2, conv3×3 48→48, LeakyReLU 0.2,
    conv1×1 48→1; PyTorch's default init) predicts the noise. The two half-size images
    ``D1(y), D2(y)`` (fixed stride-2 filters [[0, ½], [½, 0]] and [[½, 0], [0, ½]]) hold nearly independent
    noise of the same image, so ``f`` is trained with Adam for ``steps`` steps on

    - the residual loss ``½ (‖D1 − f(D1) − D2‖² + ‖D2 − f(D2) − D1‖²)`` and
    - the consistency loss ``½ (‖D1 − f(D1) − D1(y − f(y))‖² + ‖D2 − f(D2) − D2(y − f(y))‖²)``,

    (mean squared errors); the result is ``y − f(y)``, clipped to [0, 1]. The paper trains 2,000 steps;
    the default here fits a CPU budget. All the images' networks are trained at once as grouped
    convolutions (``groups = N``) on the sum of the per-image losses — with Adam's per-element updates,
    the same as N separate trainings. Deterministic given ``seed`` (the inits).

    Cost (default 45 steps, one thread): measured 9.2 s for 50 images of 28×28 pixels (PSNR 20.4 → 25.1 dB
    on natural patches at σ = 25; 50 steps took 10.9 s) and 65 s for 50 of 64×64; the time grows with
    N·H·W·steps (compute-bound: the 48→48 convolution at full and half resolution).
    """
    check_noisy(noisy, min_side=2)
    _check_count("steps", steps, 0)
    _check_count("seed", seed, 0)
    _check_rate(lr)
    y = noisy.detach().float().transpose(0, 1)  # [1, N, H, W]: the channel axis indexes the image (group)
    params = _zs_n2n_init(y.shape[1], torch.Generator().manual_seed(seed), y.device)
    optimiser = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        loss = _zs_n2n_loss(params, y).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        denoised = (y - _zs_n2n_net(params, y)).clamp_(0.0, 1.0)
    return denoised.transpose(0, 1).to(noisy.dtype).contiguous()


def _zs_n2n_init(n: int, generator: torch.Generator, device: torch.device) -> list[Tensor]:
    """``[w1, b1, w2, b2, w3, b3]`` of ``n`` stacked networks, each drawn like ``nn.Conv2d``'s default
    (uniform in ±1/√fan_in for weights and biases)."""
    params = []
    for cout, cin, k in ((ZS_N2N_WIDTH, 1, 3), (ZS_N2N_WIDTH, ZS_N2N_WIDTH, 3), (1, ZS_N2N_WIDTH, 1)):
        bound = 1.0 / math.sqrt(cin * k * k)
        for shape in ((n * cout, cin, k, k), (n * cout,)):
            p = (torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound
            params.append(p.to(device).requires_grad_(True))
    return params


def _zs_n2n_net(params: list[Tensor], x: Tensor) -> Tensor:
    """The stacked networks on ``x`` [B, N, H, W] (network ``i`` sees channel ``i``) → noise [B, N, H, W]."""
    w1, b1, w2, b2, w3, b3 = params
    n = x.shape[1]
    h = F.leaky_relu(F.conv2d(x, w1, b1, padding=1, groups=n), ZS_N2N_SLOPE)
    h = F.leaky_relu(F.conv2d(h, w2, b2, padding=1, groups=n), ZS_N2N_SLOPE)
    return F.conv2d(h, w3, b3, groups=n)


_ZS_N2N_FILTERS = torch.tensor([[[0.0, 0.5], [0.5, 0.0]], [[0.5, 0.0], [0.0, 0.5]]])


def _downsample(x: Tensor, which: int) -> Tensor:
    """``x`` [B, N, H, W] filtered with the ``which``-th (0 or 1) fixed 2×2 filter, stride 2 (an odd last
    row/column is dropped)."""
    n = x.shape[1]
    weight = _ZS_N2N_FILTERS[which].to(x)[None, None].expand(n, 1, 2, 2)
    return F.conv2d(x, weight, stride=2, groups=n)


def _per_image_mse(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).pow(2).mean(dim=(0, 2, 3))  # [N]


def _zs_n2n_loss(params: list[Tensor], y: Tensor) -> Tensor:
    """Residual + consistency loss of every image [N] (see :func:`zs_n2n_denoise`)."""
    halves = torch.cat([_downsample(y, 0), _downsample(y, 1)])  # [2, N, H/2, W/2]
    denoised_halves = halves - _zs_n2n_net(params, halves)
    residual = (_per_image_mse(denoised_halves[:1], halves[1:]) + _per_image_mse(denoised_halves[1:], halves[:1])) / 2
    denoised = y - _zs_n2n_net(params, y)
    consistency = (_per_image_mse(denoised_halves[:1], _downsample(denoised, 0))
                   + _per_image_mse(denoised_halves[1:], _downsample(denoised, 1))) / 2
    return residual + consistency


# ------------------------------------------------------------------------------------------- U-Net


def unet_from_scratch(noisy: Tensor, epochs: int, width: int = 32, seed: int = 0, batch_size: int = 16,
                      lr: float = 1e-3) -> tuple[nn.Module, float]:
    """A fresh ``UNet(1, width)`` trained on the noisy collection only, and the wall seconds it took.

    Self-supervised: each step masks a mini-batch with :func:`~pudnet.tasks.denoising.blind_spot` and
    minimises :func:`~pudnet.tasks.denoising.blind_spot_loss`; an epoch is one pass over the collection
    in shuffled mini-batches of ``batch_size``; Adam with ``lr``. Afterwards the BatchNorm running
    statistics are recomputed over the whole collection (:func:`recompute_batchnorm`). Returns the module
    in eval mode, on ``noisy``'s device, and the seconds of training plus that recomputation.
    Deterministic given ``seed`` (init, shuffling and masks); the global RNG is left untouched.

    Cost (width 32, batch 16, one thread): measured 0.75 s per epoch on 50 images of 28×28 pixels and
    3.4 s on 50 of 64×64.
    """
    check_noisy(noisy)
    _check_count("epochs", epochs, 0)
    _check_count("width", width, 1)
    _check_count("seed", seed, 0)
    _check_count("batch_size", batch_size, 1)
    _check_rate(lr)
    noisy = noisy.detach().float()
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UNet(1, width)
    model = model.to(noisy.device).train()
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        for index in torch.randperm(len(noisy), generator=generator).split(batch_size):
            batch = noisy[index.to(noisy.device)]
            masked, mask = blind_spot(batch, generator)
            loss = blind_spot_loss(model(masked), batch, mask)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    recompute_batchnorm(model, noisy)
    return model, time.perf_counter() - started


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, images: Tensor) -> nn.Module:
    """Reset every BatchNorm's running statistics and set them to those of ``images`` (one forward pass of
    the whole collection in train mode: mean and unbiased variance); leaves ``model`` in eval mode with its
    BatchNorm momenta as they were."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    model.train()
    model(images)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    return model.eval()
