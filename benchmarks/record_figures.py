"""Transcribe figures measured elsewhere (saved JSON) into benchmarks/results/summary.json — a fallback.

    python benchmarks/record_figures.py eval RESULT.json --command "pudnet eval --groups 500 --json RESULT.json"
    python benchmarks/record_figures.py predict BENCH.json --command "pytest benchmarks/bench_predict.py ..."
    python benchmarks/record_figures.py train BENCH.json --command "pytest benchmarks/bench_train.py ..."

`eval` takes the JSON of `pudnet eval --json`, the others pytest-benchmark's `--benchmark-json`.

Prefer the measuring code writing its own figures: `pudnet eval --record` (with the checkpoint's sha256),
`pudnet bench predict|train --record`. An entry written here is marked ``transcribed_from`` (the file, its
sha256 and, for pytest-benchmark files, the commit/dirty/time the file itself records); its ``started``,
``argv`` and ``git_*`` are this transcription's, not the measurement's, and it carries no checkpoint hash.
"""

import argparse
import hashlib
import json
from pathlib import Path

from pudnet.report import ROOT, SUMMARY, eval_entries, figure, merge_summary

LATENCY_TARGET_MS = {"convnet3": 10.0, "resnet18": 100.0}


def transcribed_from(file: str, data: dict) -> dict:
    """What an entry copied from ``file`` says about its source."""
    path = Path(file).resolve()
    try:
        name = str(path.relative_to(ROOT))
    except ValueError:
        name = str(path)
    source = {"file": name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    commit = data.get("commit_info") or {}
    if commit.get("id"):  # pytest-benchmark records the run's commit and time
        source.update(measured_git_commit=commit["id"], measured_git_dirty=commit.get("dirty"))
    if data.get("datetime"):
        source["measured_at"] = data["datetime"]
    return source


def bench_medians(bench: dict) -> dict[str, float]:
    return {b["name"]: b["stats"]["median"] for b in bench["benchmarks"]}


def predict_figures(bench: dict, command: str) -> dict:
    medians = bench_medians(bench)
    entries = {}
    for target, target_ms in LATENCY_TARGET_MS.items():
        weights = 1000 * medians[f"test_predict_weights[{target}-default]"]
        slow = 1000 * medians[f"test_predict_weights[{target}-fp32-all-images]"]
        module = 1000 * medians[f"test_predict_module[{target}]"]
        entries[f"predict_latency.{target}.weights_ms"] = figure(
            weights, "ms, median, 400-image dataset, hypernetwork forward only (bf16, 200-image sketch)",
            "target", target_ms, command)
        entries[f"predict_latency.{target}.weights_default_vs_fp32_all_images_ms"] = figure(
            weights, "ms, median, 400-image dataset, hypernetwork forward (bf16, 200-image sketch)",
            "float32, every image sketched", slow, command)
        entries[f"predict_latency.{target}.module_ms"] = figure(
            module, "ms, median, 400-image dataset, weights + BatchNorm statistics + nn.Module",
            "weights only", weights, command)
    return entries


def train_figures(bench: dict, command: str) -> dict:
    medians = bench_medians(bench)
    tasks = {k: 4 / v for k, v in medians.items()}
    return {
        "train.tasks_per_s.bf16_vs_fp32": figure(
            tasks["test_train_step[bf16]"], "meta-training tasks/s (ConvNet-3, 1 thread)", "float32",
            tasks["test_train_step[fp32]"], command),
        "train.task_batch.native_vs_reference": figure(
            1 / medians["test_task_batch[native]"], "task batches (4 tasks sampled + gathered) per second",
            "Python reference data path", 1 / medians["test_task_batch[reference]"], command),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["eval", "predict", "train"])
    parser.add_argument("file")
    parser.add_argument("--command", required=True, help="the command that produced FILE")
    parser.add_argument("--prefix", default="fashion_unseen", help="eval: key prefix (e.g. mnist_cross_domain)")
    parser.add_argument("--summary-json", default=str(SUMMARY), help="where to write (default: %(default)s)")
    args = parser.parse_args()
    data = json.loads(open(args.file).read())
    if args.kind == "eval":
        entries = eval_entries(data, args.command, args.prefix)
    else:
        entries = {"predict": predict_figures, "train": train_figures}[args.kind](data, args.command)
    source = transcribed_from(args.file, data)
    entries = merge_summary({name: {**e, "transcribed_from": source} for name, e in entries.items()},
                            args.summary_json)
    for name, e in entries.items():
        print(f"{name}: {e['value']:.3f} vs {e['vs']} {e['vs_value']:.3f} (transcribed from {source['file']})")


if __name__ == "__main__":
    main()
