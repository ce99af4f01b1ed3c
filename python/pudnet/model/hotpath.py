"""PudNet's hot path — the AHRU recurrence and the weight-generator convolutions — in eager PyTorch.

These functions are the numerical contract the Triton kernels in ``pudnet.kernels`` match. ``ahru`` and
``generate`` dispatch: CUDA tensors take the Triton path (when triton is installed; the kernels compute in
fp32, so float64 tensors stay on the eager path), CPU tensors the eager one, and
``use_triton(True)`` (or ``PUDNET_TRITON=1``) forces Triton everywhere (on CPU under
``TRITON_INTERPRET=1``); ``use_triton(False)`` (or ``PUDNET_TRITON=0``) forces eager.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor

_FORCE: bool | None = {"1": True, "0": False}.get(os.environ.get("PUDNET_TRITON", ""))


def use_triton(flag: bool | None) -> None:
    """Force the Triton path (True), the eager path (False), or choose by device (None)."""
    global _FORCE
    _FORCE = flag


_HAVE_TRITON: bool | None = None


def _triton_installed() -> bool:
    global _HAVE_TRITON
    if _HAVE_TRITON is None:
        import importlib.util

        _HAVE_TRITON = importlib.util.find_spec("triton") is not None
    return _HAVE_TRITON


def wants_triton(t: Tensor) -> bool:
    """Forced switch first; else CUDA tensors in a dtype the kernels compute (fp32 inside; fp64 stays eager)
    when triton is installed."""
    if _FORCE is not None:
        return _FORCE
    return t.is_cuda and t.dtype != torch.float64 and _triton_installed()


def ahru_eager(
    e: Tensor, h0: Tensor, x0: Tensor, w_x: Tensor, w_h: Tensor, b_x: Tensor, b_h: Tensor,
    alpha: float, steps: int,
) -> Tensor:
    """The AHRU recurrence over ``steps`` target layers; returns ``r'`` of every layer ``[B, steps, E]``.

    ``e`` [B, E] dataset embedding, ``h0`` [B, E] initial hidden state, ``x0`` [E] learned first input;
    ``w_x``, ``w_h`` [E, 3E] and ``b_x``, ``b_h`` [3E] hold the update (z), reset (g) and candidate (n)
    gates in that order. One step (GRU-like, weights shared across steps)::

        z = σ(x W_xz + b_xz + h W_hz + b_hz)
        g = σ(x W_xg + b_xg + h W_hg + b_hg)
        n = tanh(x W_xn + b_xn + g ⊙ (h W_hn + b_hn))
        h = (1 − z) ⊙ n + z ⊙ h
        r' = (1 − α) h + α e          # initial residual connection
        x = r'                        # the next layer's input
    """
    x = x0.expand_as(e)
    h = h0
    outputs = []
    for _ in range(steps):
        gx = x @ w_x + b_x
        gh = h @ w_h + b_h
        xz, xg, xn = gx.chunk(3, dim=-1)
        hz, hg, hn = gh.chunk(3, dim=-1)
        z = torch.sigmoid(xz + hz)
        g = torch.sigmoid(xg + hg)
        n = torch.tanh(xn + g * hn)
        h = (1 - z) * n + z * h
        x = (1 - alpha) * h + alpha * e
        outputs.append(x)
    return torch.stack(outputs, dim=1)


def generate_eager(
    codes: Tensor, lin_w: Tensor, lin_b: Tensor, conv_w: Tensor, conv_b: Tensor,
    out_w: list[Tensor], out_b: list[Tensor], k: int,
) -> list[Tensor]:
    """The weight generators of one group of layers that share a kernel size ``k``.

    ``codes`` [B, L, E] are the layers' conditioning vectors (``r'``); per layer ``l``:
    ``lin_w[l]`` [E, H·k·k], ``lin_b[l]`` [H·k·k], ``conv_w[l]`` [H, H, 3, 3], ``conv_b[l]`` [H],
    ``out_w[l]`` [O_l, H], ``out_b[l]`` [O_l]. Layer ``l`` computes::

        a = reshape(codes[:, l] @ lin_w[l] + lin_b[l], [B, H, k, k])
        a = leaky_relu(conv3x3(a, conv_w[l], conv_b[l], padding=1), 0.2)
        raw[b, o, i, j] = Σ_c out_w[l][o, c] a[b, c, i, j] + out_b[l][o]    # a 1×1 convolution

    and returns ``raw`` [B, O_l, k, k] per layer (the caller reshapes it to the parameter's shape).
    """
    batch, hidden = codes.shape[0], conv_w.shape[1]
    raws = []
    for layer in range(codes.shape[1]):
        a = (codes[:, layer] @ lin_w[layer] + lin_b[layer]).view(batch, hidden, k, k)
        a = F.leaky_relu(F.conv2d(a, conv_w[layer], conv_b[layer], padding=1), 0.2)
        rows = out_w[layer].shape[0]
        bias = out_b[layer][None, :, None].expand(batch, rows, k * k)
        raw = torch.baddbmm(bias, out_w[layer].expand(batch, -1, -1), a.reshape(batch, hidden, k * k))
        raws.append(raw.view(batch, rows, k, k))
    return raws


def ahru(e, h0, x0, w_x, w_h, b_x, b_h, alpha: float, steps: int) -> Tensor:
    if wants_triton(e):
        from pudnet.kernels.ahru import ahru_triton

        return ahru_triton(e, h0, x0, w_x, w_h, b_x, b_h, alpha, steps)
    return ahru_eager(e, h0, x0, w_x, w_h, b_x, b_h, alpha, steps)


def generate(codes, lin_w, lin_b, conv_w, conv_b, out_w, out_b, k: int) -> list[Tensor]:
    if wants_triton(codes):
        from pudnet.kernels.generators import generate_triton

        return generate_triton(codes, lin_w, lin_b, conv_w, conv_b, out_w, out_b, k)
    return generate_eager(codes, lin_w, lin_b, conv_w, conv_b, out_w, out_b, k)
