"""Launch bookkeeping shared by the Triton kernels: launch counting, poisoned buffers, the interpreter switch.

Kept free of any ``triton`` import so that the benchmark and the tests can use it before deciding whether
the interpreter is on.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator

import torch

# Test hook: when True every buffer a launcher allocates (outputs, saved tensors, scratch) is filled with NaN,
# so an element a kernel forgets to write shows up as a NaN in the comparison against the eager reference.
POISON = False

_COUNTERS: list[Counter] = []


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@contextlib.contextmanager
def count_launches() -> Iterator[Counter]:
    """Count the Triton launches made inside the block, by kernel name (``sum(c.values())`` is the total)."""
    counter: Counter = Counter()
    _COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _COUNTERS.remove(counter)


_IN_LAUNCH = 0


def in_launch() -> bool:
    """True while a Triton launch runs (torch ops the interpreter issues for it are not the path's own)."""
    return _IN_LAUNCH > 0


def launch(kernel, grid, *args, **meta) -> None:
    """Launch ``kernel[grid](*args, **meta)``: counted, and marked ``triton::<name>`` in a torch profile."""
    global _IN_LAUNCH
    name = getattr(getattr(kernel, "fn", kernel), "__name__", str(kernel))
    for counter in _COUNTERS:
        counter[name] += 1
    _IN_LAUNCH += 1
    try:
        with torch.profiler.record_function(f"triton::{name}"):
            kernel[grid](*args, **meta)
    finally:
        _IN_LAUNCH -= 1


def buffer(shape, device, dtype=torch.float32) -> torch.Tensor:
    """An uninitialised buffer the kernel must fill completely (NaN-filled under ``POISON``)."""
    if POISON:
        return torch.full(tuple(shape), float("nan"), device=device, dtype=dtype)
    return torch.empty(tuple(shape), device=device, dtype=dtype)


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def check_device(*tensors: torch.Tensor) -> torch.device:
    """All tensors on one device; CPU tensors only under the interpreter."""
    device = tensors[0].device
    for t in tensors:
        if t.device != device:
            raise ValueError(f"tensors on different devices: {device} and {t.device}")
    if device.type != "cuda" and not interpreting():
        raise RuntimeError(
            "the Triton hot path needs CUDA tensors, or TRITON_INTERPRET=1 set before triton is imported "
            "for CPU tensors (pudnet.model.hotpath runs the eager reference on CPU tensors)"
        )
    if device.type == "cuda" and interpreting():
        raise RuntimeError("under TRITON_INTERPRET=1 the Triton hot path takes CPU tensors only")
    return device
