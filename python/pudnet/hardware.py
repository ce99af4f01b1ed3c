"""Where and in which precision pudnet computes: the one place that decides, for every path (training,
prediction, the BatchNorm-statistics pass, refinement, baselines, evaluation).

``precision="auto"`` follows the hardware. On a CPU, bfloat16 autocast only where oneDNN runs it natively
(AMX or AVX-512 BF16: ~3.7× float32 on a Sapphire Rapids core); elsewhere float32, because oneDNN's
fallback for bf16 is a reference kernel (~150× *slower* than float32 on an AVX2 AMD EPYC). On CUDA, bf16
autocast where the device supports it, float32 otherwise. ``"fp32"``, ``"bf16"`` and ``"fp16"`` override.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_features() -> dict:
    """The CPU's feature flags as torch's cpuinfo reads them (``avx2``, ``avx512_bf16``, ``amx_bf16``, ...)."""
    return dict(torch._C._cpu._get_cpu_capability())


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 matrix products natively (AMX-BF16 or AVX-512 BF16) and oneDNN uses it."""
    features = cpu_features()
    native = bool(features.get("amx_bf16") or features.get("avx512_bf16"))
    return native and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None``: the first CUDA device if there is one, else the CPU; ``"cpu"``, ``"cuda"``,
    ``"cuda:N"`` or a ``torch.device`` are checked to exist."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r} (expected auto, cpu, cuda or cuda:N): {e}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asked for, but no CUDA device is visible")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} asked for, but only {torch.cuda.device_count()} CUDA "
                             "device(s) are visible")
    elif device.type != "cpu":
        raise ValueError(f"device type {device.type!r} is not supported (cpu or cuda)")
    return device


def compute_dtype(device: str | torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype matrix products and convolutions run in on ``device`` (float32 = no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return _DTYPES[precision]
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def autocast(device: str | torch.device, precision: str = "auto") -> AbstractContextManager:
    """``torch.autocast`` to :func:`compute_dtype` on ``device``'s type; disabled when that is float32."""
    device = torch.device(device)
    dtype = compute_dtype(device, precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def describe(device: str | torch.device, precision: str = "auto") -> str:
    """One line for logs: ``cpu, float32 (auto: no native bf16 on this CPU)``."""
    device = torch.device(device)
    dtype = str(compute_dtype(device, precision)).removeprefix("torch.")
    if precision != "auto":
        return f"{device}, {dtype} (--precision {precision})"
    if device.type == "cpu":
        why = "native bf16 on this CPU" if cpu_has_native_bf16() else "no native bf16 on this CPU"
    else:
        why = "bf16 supported" if dtype == "bfloat16" else "no bf16 on this GPU"
    return f"{device}, {dtype} (auto: {why})"
