"""Triton hot path (issue 4) against eager PyTorch and torch.compile (pytest-benchmark).

Run: ``nice -n 10 python -m pytest benchmarks/bench_kernels.py --benchmark-only -s``
(the full table in one command: ``pudnet bench kernels`` / ``python -m pudnet.bench_kernels``; on a GPU machine,
``benchmarks/gpu_check.sh`` runs everything that needs the GPU).

For ConvNet-3, ResNet-18 and ResNet-34 (their real parameter lists: AHRU steps = number of parameter tensors,
generator groups by kernel size, the real ``O_l``), embedding 128, generator hidden 32, meta-batch 1 and 16:

- ``test_launch_counts`` (CPU or GPU): kernel launches of one call, eager (torch operators that reach a
  kernel) vs the Triton path (Triton launches + torch operators outside them), for the AHRU recurrence and
  the generators, forward and forward+backward. On a CPU the Triton path runs in Triton's interpreter with
  ``O_l`` capped (launch counts do not depend on it); asserts the fused path launches less;
- ``test_cpu_eager``: the eager hot path on the CPU (one intra-op thread);
- ``test_gpu``: eager vs Triton vs ``torch.compile`` on a GPU, median of ``triton.testing.do_bench`` in
  ``extra_info`` (pytest-benchmark times the same call followed by a synchronize). Skipped, with the reason,
  where there is no CUDA device — never estimated.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported (benchmarks/conftest.py too)

import pytest  # noqa: E402

from pudnet import bench_kernels as bench  # noqa: E402 (imports no triton)

TARGETS = list(bench.TARGETS)
BATCHES = list(bench.BATCHES)
OPS = ["ahru_fwd", "ahru_fwd_bwd", "gen_fwd", "gen_fwd_bwd"]
HAVE_GPU = torch.cuda.is_available()


@pytest.fixture(scope="module")
def sizes():
    return {t: bench.hotpath_sizes(t) for t in TARGETS}


@pytest.mark.parametrize("target", TARGETS)
def test_launch_counts(benchmark, target):
    # runs in a fresh interpreter process if triton was imported here before TRITON_INTERPRET was set
    result = benchmark.pedantic(
        lambda: bench.run_kernel_bench(targets=(target,), counts_only=True, verbose=False,
                                       command="pytest benchmarks/bench_kernels.py::test_launch_counts"),
        rounds=1, iterations=1)
    counts = result["launches"][target]
    for op, c in counts.items():
        eager, fused = c["eager"]["total"], c["triton"]["total"]
        benchmark.extra_info[f"{op}_eager_launches"] = eager
        benchmark.extra_info[f"{op}_triton_launches"] = fused
        assert c["eager_capped_rows"] == eager, f"{op}: eager launch count depends on O_l"
        assert fused < eager, f"{op}: the fused path launches {fused} kernels, eager {eager}"
    assert counts["ahru_fwd"]["triton"]["total"] == 1  # the whole recurrence in one launch


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("target", TARGETS)
def test_cpu_eager(benchmark, sizes, target, batch, op):
    from pudnet.model import hotpath

    inputs = bench.make_inputs(sizes[target], batch, "cpu", requires_grad=True)
    fn = bench.make_ops(inputs, hotpath.ahru_eager, hotpath.generate_eager)[op]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        heavy = sizes[target]["params"] * batch > 5e7
        benchmark.pedantic(fn, rounds=2 if heavy else 5, iterations=1, warmup_rounds=1)
    finally:
        torch.set_num_threads(before)
    benchmark.extra_info.update(target=target, batch=batch, op=op, path="eager", device="cpu", threads=1)


@pytest.mark.parametrize("path", ["eager", "triton", "compile"])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("target", TARGETS)
def test_gpu(benchmark, sizes, target, batch, op, path):
    if not HAVE_GPU:
        pytest.skip("no CUDA device: GPU timings (Triton vs eager vs torch.compile) cannot be measured here")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        pytest.skip("TRITON_INTERPRET is set: GPU timings need compiled kernels (unset it)")
    import triton.testing

    from pudnet.model import hotpath

    inputs = bench.make_inputs(sizes[target], batch, "cuda", requires_grad=True)
    fns = {"eager": (hotpath.ahru_eager, hotpath.generate_eager),
           "triton": (hotpath.ahru, hotpath.generate),  # the custom ops: Triton kernels on CUDA tensors
           "compile": (torch.compile(hotpath.ahru_eager), torch.compile(hotpath.generate_eager))}[path]
    fn = bench.make_ops(inputs, *fns)[op]
    median_ms = triton.testing.do_bench(fn, return_mode="median")

    def call():
        fn()
        torch.cuda.synchronize()

    benchmark.pedantic(call, rounds=20, iterations=1, warmup_rounds=3)
    benchmark.extra_info.update(target=target, batch=batch, op=op, path=path, device=torch.cuda.get_device_name(0),
                                do_bench_median_ms=median_ms)
