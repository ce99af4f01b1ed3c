"""Hot-path benchmark: the Triton kernels against eager PyTorch (and torch.compile on a GPU).

The Triton path is the hot path's custom ops (``pudnet.model.hotpath.ahru`` / ``generate``: on CUDA tensors by
dispatch, on CPU tensors through ``hotpath.use_triton`` in Triton's interpreter); the eager path is the eager
reference (``ahru_eager`` / ``generate_eager``) called directly. ``run_kernel_bench()`` (the
``pudnet bench kernels`` command, ``python -m pudnet.bench_kernels``) measures, for the ConvNet-3, ResNet-18 and
ResNet-34 targets (their real parameter lists: AHRU steps = number of parameter tensors, generator groups by
kernel size, ``O_l`` rows per layer), embedding 128, generator hidden 32, meta-batch 1 and 16:

* on a GPU: median time (``triton.testing.do_bench``) of eager, Triton and ``torch.compile`` for the AHRU
  recurrence and the weight generators, forward and forward+backward, and the CUDA kernels each launches
  (torch profiler);
* everywhere (no GPU needed): the eager time on the CPU, and the number of kernel launches of the eager path
  (the torch operators that reach a backend kernel, counted by a TorchDispatchMode — views, metadata and
  allocations excluded; each is one kernel launch on a GPU, where the torch profiler's count of CUDA kernels
  is recorded too) against the Triton path's (Triton launches counted at the launcher, plus any torch
  operator it issues outside a launch; the ``pudnet::`` ops themselves are containers, not launches). On a
  CPU the Triton path runs in the interpreter with each layer's ``O_l`` capped (the launch structure does
  not depend on ``O_l`` or on the batch; the eager count is measured at the real sizes and at the capped ones
  to show it does not either).

A GPU measurement that cannot run (or that ``budget_s`` leaves no time for) is reported as skipped with the
reason, never estimated.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import json
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from .kernels import _common
from .model import hotpath

TARGETS = ("convnet3", "resnet18", "resnet34")
BATCHES = (1, 16)
EMBEDDING, HIDDEN, ALPHA = 128, 32, 0.3
INTERPRETER_ROW_CAP = 64  # O_l cap for running the Triton path in the CPU interpreter (launch counts only)

# aten ops that launch no kernel: views, metadata, allocation
NON_KERNEL_OPS = {
    "aten::view", "aten::_unsafe_view", "aten::reshape", "aten::_reshape_alias", "aten::expand", "aten::expand_as",
    "aten::as_strided", "aten::t", "aten::transpose", "aten::permute", "aten::unsqueeze", "aten::squeeze",
    "aten::select", "aten::slice", "aten::split", "aten::split_with_sizes", "aten::chunk", "aten::unbind",
    "aten::narrow", "aten::detach", "aten::detach_", "aten::alias", "aten::empty", "aten::empty_strided",
    "aten::empty_like", "aten::resolve_conj", "aten::resolve_neg", "aten::lift_fresh", "aten::view_as",
    "aten::contiguous", "aten::numpy_T", "aten::_local_scalar_dense", "aten::item", "aten::is_nonzero",
    "aten::set_", "aten::result_type", "aten::to", "aten::broadcast_to", "aten::movedim", "aten::resize_",
    "aten::diagonal", "aten::flatten", "aten::unflatten", "aten::_has_compatible_shallow_copy_type",
    "aten::_nnpack_available", "aten::new_empty", "aten::new_empty_strided", "aten::sym_size", "aten::sym_stride",
    "aten::sym_numel", "aten::sym_storage_offset", "aten::is_same_size", "aten::_unsafe_split",
}


# ----------------------------------------------------------------------------------------------- the sizes


def hotpath_sizes(target: str) -> dict:
    """AHRU steps and generator groups ``{k: [O_l, ...]}`` of a target, from ``pudnet.targets``."""
    from .model.generators import kernel_size, rows
    from .targets import make_target

    in_channels = 1 if target == "convnet3" else 3  # Fashion-MNIST ConvNet-3; RGB ResNets
    specs = make_target(target, in_channels=in_channels).specs()
    groups: dict[int, list[int]] = {}
    for spec in specs:
        groups.setdefault(kernel_size(spec), []).append(rows(spec))
    return {"target": target, "in_channels": in_channels, "steps": len(specs), "groups": groups,
            "params": sum(s.numel for s in specs)}


def make_inputs(sizes: dict, batch: int, device, requires_grad: bool, row_cap: int | None = None,
                seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    e, h = EMBEDDING, HIDDEN

    def t(*shape, scale=1.0):
        x = (scale * torch.randn(*shape, generator=gen)).to(device)
        return x.requires_grad_(requires_grad)

    ahru = [t(batch, e), t(batch, e, scale=0.5), t(e, scale=0.1), t(e, 3 * e, scale=e ** -0.5),
            t(e, 3 * e, scale=e ** -0.5), t(3 * e, scale=0.1), t(3 * e, scale=0.1)]
    groups = []
    for k, rows in sizes["groups"].items():
        rows = [min(o, row_cap) for o in rows] if row_cap else rows
        n = len(rows)
        groups.append(dict(
            k=k, codes=t(batch, n, e),
            stacked=[t(n, e, h * k * k, scale=e ** -0.5), t(n, h * k * k, scale=0.1),
                     t(n, h, h, 3, 3, scale=(9 * h) ** -0.5), t(n, h, scale=0.1)],
            out_w=[t(o, h, scale=h ** -0.5) for o in rows], out_b=[t(o, scale=0.1) for o in rows]))
    return {"ahru": ahru, "groups": groups, "steps": sizes["steps"]}


def make_ops(inputs: dict, ahru_fn, gen_fn) -> dict:
    """``{op: callable}`` for the four measured operations of one path (the backward ones return gradients;
    the upstream gradients are made here, outside the measured calls)."""
    a, steps = inputs["ahru"], inputs["steps"]
    batch, emb = a[0].shape
    like = dict(device=a[0].device, dtype=a[0].dtype)
    ahru_grad = [torch.ones(batch, steps, emb, **like)]
    gen_grads = [torch.ones(batch, w.shape[0], g["k"], g["k"], **like) for g in inputs["groups"] for w in g["out_w"]]
    gen_leaves = [x for g in inputs["groups"] for x in [g["codes"], *g["stacked"], *g["out_w"], *g["out_b"]]]

    def ahru_fwd():
        return ahru_fn(*a, ALPHA, steps)

    def gen_fwd():
        return [r for g in inputs["groups"]
                for r in gen_fn(g["codes"], *g["stacked"], g["out_w"], g["out_b"], g["k"])]

    return {
        "ahru_fwd": ahru_fwd,
        "ahru_fwd_bwd": lambda: torch.autograd.grad([ahru_fwd()], a, ahru_grad),
        "gen_fwd": gen_fwd,
        "gen_fwd_bwd": lambda: torch.autograd.grad(gen_fwd(), gen_leaves, gen_grads),
    }


# ------------------------------------------------------------------------------------------------ counting


def interpreter_ready() -> bool:
    """Whether Triton kernels can run in the interpreter in this process: TRITON_INTERPRET=1 must have been
    set before triton itself was imported (its standard library is decorated at import time)."""
    if not _common.interpreting():
        return "triton" not in sys.modules  # can still be set now
    if "triton" not in sys.modules:
        return True
    from triton.runtime.interpreter import InterpretedFunction
    import triton.language.standard as std

    return isinstance(std.zeros, InterpretedFunction)


def _prepare_kernels() -> None:
    """Import the kernel modules under the interpreter when there is no GPU (reloaded if imported without it),
    so that the hot path's lazy imports find them so."""
    on_cpu = not torch.cuda.is_available()
    if on_cpu:
        if not interpreter_ready():
            raise RuntimeError("TRITON_INTERPRET=1 must be set before triton is imported to run the kernels on CPU")
        os.environ["TRITON_INTERPRET"] = "1"
    from triton.runtime.interpreter import InterpretedFunction

    for name, probe in (("pudnet.kernels.ahru", "_ahru_fwd_kernel"), ("pudnet.kernels.generators",
                                                                     "_gen_out_fwd_kernel")):
        mod = importlib.import_module(name)
        if isinstance(getattr(mod, probe), InterpretedFunction) != on_cpu:
            importlib.reload(mod)


def triton_kernels():
    """A context in which the hot path's ops run their Triton kernels: by dispatch on a GPU, through the test
    hook (Triton's interpreter) on CPU tensors."""
    return contextlib.nullcontext() if torch.cuda.is_available() else hotpath.use_triton(True)


class _OpCounter:
    """Counts the torch operators that reach a backend kernel (a TorchDispatchMode sees each operator once,
    after autograd and after composite operators decomposed, and not the operators a kernel calls inside)."""

    def __new__(cls):
        from torch.utils._python_dispatch import TorchDispatchMode

        class Mode(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.ops = Counter()

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func._schema.name
                if not _common.in_launch() and name not in NON_KERNEL_OPS and not name.startswith("pudnet::"):
                    self.ops[name] += 1
                return func(*args, **(kwargs or {}))

        return Mode()


def count_launches(fn) -> dict:
    """Kernel launches of one call of ``fn``: Triton launches (counted at the launcher), torch operators that
    launch a kernel (outside the Triton launches; views, metadata and allocations excluded) and, on a GPU,
    the CUDA kernels the torch profiler saw executing."""
    cuda_kernels = None
    with _common.count_launches() as triton_launches:
        if torch.cuda.is_available():
            from torch.profiler import ProfilerActivity, profile

            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                with _OpCounter() as mode:
                    fn()
                torch.cuda.synchronize()
            cuda_kernels = sum(1 for e in prof.events()
                               if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA
                               and not e.name.startswith(("Memcpy", "Memset")))
        else:
            with _OpCounter() as mode:
                fn()
    out = {"triton": sum(triton_launches.values()), "torch_ops": sum(mode.ops.values()),
           "total": sum(triton_launches.values()) + sum(mode.ops.values()), "torch_op_names": dict(mode.ops)}
    if cuda_kernels is not None:
        out["cuda_kernels"] = cuda_kernels
    return out


# ------------------------------------------------------------------------------------------------- timing


def _cpu_median_ms(fn, reps: int, warmup: int = 1, threads: int = 1) -> float:
    """Median wall time on the CPU with ``threads`` intra-op threads (one by default: on a shared machine,
    OpenMP workers spinning at every one of eager's small ops make multi-threaded timings meaningless)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(before)
    return statistics.median(times)


def _gpu_median_ms(fn) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, return_mode="median"))


def machine() -> str:
    from .report import machine as describe

    return describe()


def run_kernel_bench(targets=TARGETS, batches=BATCHES, cpu_reps: int = 5, gpu: bool | None = None,
                     compile_eager: bool = True, summary_json: str | os.PathLike | None = None,
                     verbose: bool = True, counts_only: bool = False,
                     command: str = "pudnet bench kernels", budget_s: float | None = None) -> dict:
    """Run the hot-path benchmark; print a table (``verbose``) and return every number.

    ``gpu=None`` measures on the GPU when one is present. ``summary_json`` merges the launch counts (and,
    with a GPU, the timings) into that JSON file (other keys are kept). ``counts_only`` skips the timings.
    ``budget_s``: once this many seconds have passed, the torch.compile timings (minutes of compilation for the
    ResNets' unrolled loops) are skipped, with the reason recorded.
    """
    if not torch.cuda.is_available() and not interpreter_ready():
        # triton was imported without the interpreter (e.g. through torchvision): run in a fresh process,
        # recorded here (the provenance, argv included, is this process's)
        result = _run_in_child(dict(targets=list(targets), batches=list(batches), cpu_reps=cpu_reps, gpu=gpu,
                                    compile_eager=compile_eager, counts_only=counts_only, command=command,
                                    summary_json=None, verbose=verbose, budget_s=budget_s))
        if summary_json:
            merge_summary(summary_json, summary_entries(result, command))
        return result
    _prepare_kernels()
    import triton

    compile_until = None if not compile_eager else time.monotonic() + (float("inf") if budget_s is None else budget_s)
    have_gpu = torch.cuda.is_available()
    gpu = have_gpu if gpu is None else gpu
    result = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine(),
              "triton": triton.__version__, "embedding": EMBEDDING, "hidden": HIDDEN, "rows": [],
              "launches": {}, "gpu": None}
    log = print if verbose else (lambda *a, **k: None)
    log(f"hot-path benchmark on {result['machine']}")
    for target in targets:
        sizes = hotpath_sizes(target)
        groups = {k: len(v) for k, v in sizes["groups"].items()}
        log(f"\n{target}: {sizes['steps']} AHRU steps, generator groups (k: layers) {groups}, "
            f"{sizes['params']:,} parameters")
        result["launches"][target] = _launch_counts(sizes, log)
        for batch in () if counts_only else batches:
            if gpu:
                result["rows"] += _gpu_rows(sizes, batch, compile_until, log)
            else:
                result["rows"] += _cpu_rows(sizes, batch, cpu_reps, log)
    if not gpu and not counts_only:
        result["gpu"] = {"skipped": "no CUDA device: GPU timings (Triton vs eager vs torch.compile) not measured"
                         if not have_gpu else "GPU timing disabled (gpu=False)"}
        log(f"\nGPU: {result['gpu']['skipped']}")
    if summary_json:
        merge_summary(summary_json, summary_entries(result, command))
    return result


def _launch_counts(sizes: dict, log) -> dict:
    """Launches per op: eager at the real sizes and with ``O_l`` capped; the Triton path (capped in the
    interpreter on CPU)."""
    have_gpu = torch.cuda.is_available()
    device = "cuda" if have_gpu else "cpu"
    full = make_inputs(sizes, 1, device, requires_grad=True)
    capped = make_inputs(sizes, 1, device, requires_grad=True, row_cap=INTERPRETER_ROW_CAP)
    eager_full = make_ops(full, hotpath.ahru_eager, hotpath.generate_eager)
    eager_capped = make_ops(capped, hotpath.ahru_eager, hotpath.generate_eager)
    fused = make_ops(full if have_gpu else capped, hotpath.ahru, hotpath.generate)
    counts = {}
    for op in eager_full:
        with triton_kernels():
            triton_count = count_launches(fused[op])
        counts[op] = c = {"eager": count_launches(eager_full[op]),
                          "eager_capped_rows": count_launches(eager_capped[op])["total"], "triton": triton_count}
        log(f"  launches {op:<13} eager {c['eager']['total']:>5} (capped rows: {c['eager_capped_rows']})"
            f"  triton {c['triton']['total']:>3} ({c['triton']['triton']} Triton + "
            f"{c['triton']['torch_ops']} torch)" + (f"  CUDA kernels eager {c['eager']['cuda_kernels']} "
                                                   f"triton {c['triton']['cuda_kernels']}" if have_gpu else ""))
    return counts


def _gpu_rows(sizes: dict, batch: int, compile_until: float | None, log) -> list[dict]:
    """Median GPU ms of eager, Triton and torch.compile of eager (until the monotonic time ``compile_until``;
    never if None), per op."""
    inputs = make_inputs(sizes, batch, "cuda", requires_grad=True)
    paths = {"eager": make_ops(inputs, hotpath.ahru_eager, hotpath.generate_eager),
             "triton": make_ops(inputs, hotpath.ahru, hotpath.generate)}
    if compile_until is not None:
        paths["compile"] = make_ops(inputs, torch.compile(hotpath.ahru_eager), torch.compile(hotpath.generate_eager))
    rows = []
    for op in paths["eager"]:
        row = {"target": sizes["target"], "batch": batch, "op": op, "device": "cuda"}
        for path, ops in paths.items():
            if path == "compile" and time.monotonic() > compile_until:
                row.update(compile_ms=None, compile_error="skipped: past the time budget (budget_s)")
            else:
                _time_path(row, path, ops[op])
        for other in ("eager", "compile"):
            if row.get("triton_ms") and row.get(f"{other}_ms"):
                row[f"speedup_vs_{other}"] = row[f"{other}_ms"] / row["triton_ms"]
        rows.append(row)
        log(f"  B={batch:<2} {op:<13} " + _describe(row, paths))
    del inputs, paths
    torch.cuda.empty_cache()
    return rows


def _time_path(row: dict, path: str, fn) -> None:
    try:
        row[f"{path}_ms"] = _gpu_median_ms(fn)
    except Exception as exc:  # noqa: BLE001 — recorded, never replaced by a guess
        row[f"{path}_ms"] = None
        row[f"{path}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"


def _describe(row: dict, paths) -> str:
    cells = [f"{p} {row[f'{p}_ms']:.3f} ms" if row.get(f"{p}_ms") is not None
             else f"{p} {row.get(f'{p}_error', 'failed').split(':')[0]}" for p in paths]
    if "speedup_vs_eager" in row:
        cells.append(f"speed-up vs eager {row['speedup_vs_eager']:.2f}x")
    return "  ".join(cells)


def _cpu_rows(sizes: dict, batch: int, reps: int, log) -> list[dict]:
    """Median CPU ms of the eager path (one thread), per op."""
    ops = make_ops(make_inputs(sizes, batch, "cpu", requires_grad=True), hotpath.ahru_eager, hotpath.generate_eager)
    rows = []
    for op, fn in ops.items():
        ms = _cpu_median_ms(fn, reps)
        rows.append({"target": sizes["target"], "batch": batch, "op": op, "device": "cpu", "eager_ms": ms,
                     "reps": reps, "threads": 1})
        log(f"  B={batch:<2} {op:<13} eager on CPU {ms:10.2f} ms (median of {reps}, 1 thread)")
    return rows


def _run_in_child(kwargs: dict) -> dict:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, TRITON_INTERPRET="1")
        subprocess.run([sys.executable, "-m", "pudnet.bench_kernels", "--kwargs", json.dumps(kwargs),
                        "--out", str(out)], env=env, check=True)
        return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------------- records


def summary_entries(result: dict, command: str = "pudnet bench kernels") -> dict:
    """``{name: {value, unit, vs, vs_value, ratio, command, machine}}`` for summary.json (``merge_summary``
    adds the provenance)."""
    common = {"command": command, "machine": result["machine"]}
    out = {}
    for target, counts in result["launches"].items():
        for op, c in counts.items():
            eager, fused = c["eager"]["total"], c["triton"]["total"]
            where = ("CUDA" if "cuda_kernels" in c["triton"]
                     else "CPU; Triton path in the interpreter with O_l capped, count independent of O_l")
            out[f"kernels.launches.{target}.{op}"] = {
                "value": fused, "unit": f"kernel launches per call, Triton path ({where})",
                "vs": "eager PyTorch (torch operators reaching a kernel, TorchDispatchMode count)",
                "vs_value": eager,
                "ratio": fused / eager if eager else None, **common}
    vs = {"eager": "eager PyTorch", "compile": "torch.compile of eager PyTorch"}
    for row in result["rows"]:
        for other, label in vs.items():
            if row.get("device") == "cuda" and row.get(f"speedup_vs_{other}"):
                key = f"kernels.gpu_ms.{row['target']}.B{row['batch']}.{row['op']}"
                out[key if other == "eager" else f"{key}.vs_compile"] = {
                    "value": row["triton_ms"], "unit": "ms (median, triton.testing.do_bench), Triton path",
                    "vs": label, "vs_value": row[f"{other}_ms"], "ratio": row["triton_ms"] / row[f"{other}_ms"],
                    **common}
    return out


def merge_summary(path: str | os.PathLike, entries: dict) -> None:
    from .report import merge_summary as merge

    merge(entries, path)


def format_counts_table(result: dict) -> str:
    lines = ["| target | op | eager launches | Triton path launches | ratio |", "|---|---|---:|---:|---:|"]
    for target, counts in result["launches"].items():
        for op, c in counts.items():
            e, t = c["eager"]["total"], c["triton"]["total"]
            lines.append(f"| {target} | {op} | {e} | {t} ({c['triton']['triton']} Triton + "
                         f"{c['triton']['torch_ops']} torch) | {e / t:.0f}× fewer |" if t else "")
    return "\n".join(lines)


def format_cpu_table(result: dict) -> str:
    rows = [r for r in result["rows"] if r["device"] == "cpu"]
    lines = ["| target | meta-batch | op | eager on CPU, ms (median) |", "|---|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['target']} | {r['batch']} | {r['op']} | {r['eager_ms']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Triton hot path vs eager (see the module docstring)")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS))
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--cpu-reps", type=int, default=5)
    parser.add_argument("--summary-json", help="merge launch counts (and GPU speed-ups) into this JSON file")
    parser.add_argument("--counts-only", action="store_true", help="launch counts only, no timings")
    parser.add_argument("--budget-s", type=float, help="skip the torch.compile timings after this many seconds")
    parser.add_argument("--kwargs", help=argparse.SUPPRESS)  # used by the re-launch in a fresh process
    parser.add_argument("--out", help="write the full result as JSON here")
    args = parser.parse_args(argv)
    command = "python -m pudnet.bench_kernels " + " ".join(argv if argv is not None else sys.argv[1:])
    kwargs = json.loads(args.kwargs) if args.kwargs else dict(
        targets=args.targets, batches=args.batches, cpu_reps=args.cpu_reps, summary_json=args.summary_json,
        counts_only=args.counts_only, command=command.strip(), budget_s=args.budget_s)
    result = run_kernel_bench(**kwargs)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
