"""Peak memory and time of a prediction on large datasets, the shipped checkpoint, each case in a fresh process.

    ~/.cache/pudnet/venv/bin/python benchmarks/predict_memory.py [--cases 4000,24040,60000] [--threads 2] [--record]

Cases (real Fashion-MNIST, training split):
- ``4000``: 1,000 images of each unseen class 6–9 plus 10 labelled per class (the API, ``net.predict``);
- ``24040``: the README's prediction, all 24,000 images of classes 6–9 plus 10 labelled per class (the API);
- ``60000``: ``pudnet predict --classes all`` on the whole training split (the CLI).

Peak RSS is the child's ``ru_maxrss`` (the interpreter, torch and the data included); the limit to meet is
4 GiB (issue 13). ``--record`` writes ``predict_peak_rss_<case>`` into benchmarks/results/summary.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT_GIB = 4.0
COMMAND = "python benchmarks/predict_memory.py --record"

API_CASE = """
import json, sys, time, torch
import pudnet
torch.set_num_threads({threads})
net = pudnet.PudNet.from_pretrained("fashion-convnet3")
data = pudnet.datasets.fashion_mnist("train").of_classes([6, 7, 8, 9])
if {per_class} < 6000:
    import numpy as np
    keep = np.concatenate([np.flatnonzero(data.labels == c)[:{per_class}] for c in data.classes])
    data = data.subset(np.sort(keep))
support = data.labelled(per_class=10)
started = time.perf_counter()
model = net.predict(data, support=support)
print(json.dumps({{"images": len(data) + len(support), "predict_s": time.perf_counter() - started}}))
"""


def run_case(case: int, threads: int) -> dict:
    """Runs one case in a child process; its peak RSS and wall time (the whole process and the prediction)."""
    with tempfile.TemporaryDirectory() as folder:
        if case == 60000:
            argv = [sys.executable, "-m", "pudnet", "predict", "--classes", "all", "--threads", str(threads),
                    "--out", str(Path(folder) / "weights.safetensors")]
        else:
            argv = [sys.executable, "-c", API_CASE.format(threads=threads, per_class=(case - 40) // 4)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        wall = time.perf_counter() - started
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode != 0:
        return {"case": case, "failed": done.returncode, "stderr": done.stderr[-2000:], "wall_s": wall}
    if peak_kib <= before:
        raise RuntimeError("ru_maxrss of the children did not grow: run one case per invocation")
    result = {"case": case, "peak_rss_gib": peak_kib / 2**20, "wall_s": wall}
    last = done.stdout.strip().splitlines()[-1]
    result.update(json.loads(last) if last.startswith("{") else {"output": last})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="4000,24040,60000", help="comma list of 4000, 24040, 60000")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="write the figures to benchmarks/results/summary.json")
    args = parser.parse_args()
    for case in (int(c) for c in args.cases.split(",")):
        # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: measure each case in its own process tree
        done = subprocess.run([sys.executable, __file__, "--one", str(case), str(args.threads)],
                              capture_output=True, text=True) if "--one" not in sys.argv else None
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(result))
        if args.record and "peak_rss_gib" in result:
            from pudnet.report import record_figure

            record_figure(f"predict_peak_rss_{case}", round(result["peak_rss_gib"], 3), "GiB",
                          f"the {LIMIT_GIB:g} GiB limit", LIMIT_GIB, COMMAND, wall_s=round(result["wall_s"], 1),
                          predict_s=round(result.get("predict_s", result["wall_s"]), 1), threads=args.threads,
                          images=case, checkpoint="fashion-convnet3")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(json.dumps(run_case(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        main()
