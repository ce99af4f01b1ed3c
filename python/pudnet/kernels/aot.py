"""Compile every hot-path kernel ahead of time for a GPU architecture — no GPU needed.

``python -m pudnet.kernels.aot [--arch 90]`` compiles each kernel with the block sizes and launch options the
launchers use on a GPU (every code path: tl.dot / broadcast AHRU, k = 1 / 3 / 7 generators, short and long
column chunks) down to a cubin with the ptxas bundled in the triton wheel, and reports shared memory,
registers and spill bytes. It catches what the interpreter cannot (GPU-only compile errors, tl.dot shape
limits, shared-memory overflow, register spills) on a machine without a GPU. Must run without
``TRITON_INTERPRET`` (the module re-imports the kernels in a clean child process when it is set).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile


def _jobs():
    from . import ahru as A
    from . import generators as G

    jobs = []
    for batch in (1, 4, 16):
        cfg = A._config(batch, 128)
        tag = f"B{batch} {'dot' if cfg['USE_DOT'] else 'broadcast'}"
        opts = {k: cfg.pop(k) for k in ("num_warps", "num_stages")}
        jobs.append((f"ahru fwd {tag}", A._ahru_fwd_kernel, {"alpha": "fp32"}, cfg, opts))
        jobs.append((f"ahru bwd {tag}", A._ahru_bwd_kernel, {"alpha": "fp32"}, dict(cfg), opts))
    jobs.append(("ahru wgrad", A._ahru_wgrad_kernel, {}, dict(BLOCK_M=64, BLOCK_N=64, BLOCK_R=32),
                 dict(num_warps=4, num_stages=3)))
    tables = {n: "*i32" for n in ("tile_layer_ptr", "tile_o0_ptr", "o_ptr", "tile_start_ptr", "tile_count_ptr")}
    tables.update({n: "*i64" for n in ("w_tab_ptr", "b_tab_ptr", "y_tab_ptr", "dy_tab_ptr", "dw_tab_ptr",
                                       "db_tab_ptr")})
    hp = G._hidden_size(32)
    for k in (1, 3, 7):
        for batch in (1, 16):
            cfg = G._config(batch * k * k)
            hidden = dict(K=k, HP=hp, BLOCK_B=cfg["BLOCK_B"], BLOCK_J=cfg["BLOCK_J"], BLOCK_E=cfg["BLOCK_E"],
                          BLOCK_R=cfg["BLOCK_R"])
            tag = f"k{k} B{batch}"
            if batch == 16:
                jobs.append((f"gen hidden fwd k{k}", G._gen_hidden_fwd_kernel, tables, hidden, G._LAUNCH_OPTS))
                jobs.append((f"gen hidden bwd k{k}", G._gen_hidden_bwd_kernel, tables, hidden, G._LAUNCH_OPTS))
            fwd = dict(KK=k * k, HP=hp, BLOCK_O=cfg["BLOCK_O"], SUB=cfg["ROWS"] // cfg["BLOCK_O"],
                       BLOCK_N=cfg["BLOCK_N"])
            bwd = dict(fwd, BLOCK_O=cfg["BLOCK_O_BWD"], SUB=cfg["ROWS"] // cfg["BLOCK_O_BWD"])
            jobs.append((f"gen out fwd {tag}", G._gen_out_fwd_kernel, tables, fwd, G._LAUNCH_OPTS))
            jobs.append((f"gen out bwd {tag}", G._gen_out_bwd_kernel, tables, bwd, G._LAUNCH_OPTS))
    return jobs


def _ptxas_report(ptx: str, arch: int) -> tuple[int | None, int | None]:
    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    try:
        target = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        err = subprocess.run([ptxas, f"-arch={target}", "-v", f.name, "-o", os.devnull],
                             capture_output=True, text=True).stderr
    finally:
        os.unlink(f.name)
    regs = re.search(r"Used (\d+) registers", err)
    spill = re.search(r"(\d+) bytes spill stores", err)
    return (int(regs.group(1)) if regs else None, int(spill.group(1)) if spill else None)


def compile_all(arch: int = 90, only: str | None = None) -> list[dict]:
    """Compile every kernel configuration for ``sm_<arch>``; one result row per configuration."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    rows = []
    for name, fn, types, constexprs, opts in _jobs():
        if only and only not in name:
            continue
        signature, consts = {}, {}
        for i, arg in enumerate(fn.arg_names):
            if arg in constexprs:
                signature[arg] = "constexpr"
                consts[(i,)] = constexprs[arg]
            elif arg.endswith("_ptr"):
                signature[arg] = types.get(arg, "*fp32")
            else:
                signature[arg] = types.get(arg, "i32")
        row = dict(kernel=name, arch=arch, **opts, **{k: v for k, v in constexprs.items()})
        try:
            compiled = triton.compile(ASTSource(fn, signature, consts), target=GPUTarget("cuda", arch, 32),
                                      options=dict(opts))
            row["shared_bytes"] = compiled.metadata.shared
            row["registers"], row["spill_bytes"] = _ptxas_report(compiled.asm["ptx"], arch)
            row["ok"] = True
        except Exception as exc:  # noqa: BLE001 — reported, not raised: the point is to see every failure
            row["ok"] = False
            row["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (H100), 80 (A100)")
    parser.add_argument("--only", help="substring of the kernel names to compile")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        return subprocess.call([sys.executable, "-m", "pudnet.kernels.aot", *(argv or sys.argv[1:])], env=env)
    rows = compile_all(args.arch, args.only)
    for r in rows:
        status = "ok  " if r["ok"] else "FAIL"
        detail = (f"shared {r['shared_bytes']:>6} B  registers {r['registers']}  spills {r['spill_bytes']} B"
                  if r["ok"] else r["error"])
        print(f"{status} sm_{r['arch']} {r['kernel']:<24} {detail}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
