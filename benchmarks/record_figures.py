"""Record headline figures into benchmarks/results/summary.json from the files that measured them.

    python benchmarks/record_figures.py eval RESULT.json --command "pudnet eval --groups 500 --json RESULT.json"
    python benchmarks/record_figures.py predict BENCH.json --command "pytest benchmarks/bench_predict.py ..."
    python benchmarks/record_figures.py train BENCH.json --command "pytest benchmarks/bench_train.py ..."

`eval` takes the JSON of `pudnet eval --json`, the others pytest-benchmark's `--benchmark-json`.
"""

import argparse
import json

from pudnet.report import figure, merge_summary

LATENCY_TARGET_MS = {"convnet3": 10.0, "resnet18": 100.0}


def eval_figures(result: dict, command: str, prefix: str = "fashion_unseen") -> dict:
    acc = result["accuracy"]
    groups = result["groups"]
    entries = {}
    for name in acc:
        if name == "pudnet":
            continue
        entries[f"{prefix}.pudnet_vs_{name}"] = figure(
            acc["pudnet"]["mean"], f"top-1 % ({prefix}), {groups} groups "
            f"(±{acc['pudnet']['ci95']:.2f} vs ±{acc[name]['ci95']:.2f} 95% CI)",
            name, acc[name]["mean"], command)
    diff = result["own_minus_foreign"]
    entries[f"{prefix}.own_minus_foreign_sketch"] = figure(
        diff["mean"], f"paired top-1 points, own sketch − foreign-class sketch (±{diff['ci95']:.2f} 95% CI)",
        "zero (sketch ignored)", 0.0, command)
    spread = result["weight_spread"]
    entries[f"{prefix}.weight_spread_between_vs_within"] = figure(
        spread["between"], "relative spread of predicted weights between evaluated and foreign-class datasets",
        "within the evaluated datasets", spread["within_unseen"], command)
    if "function_between" in spread:
        entries[f"{prefix}.function_spread_between_vs_within"] = figure(
            spread["function_between"], "relative spread of predicted weights without the rescalings the "
            "network ignores (Target.canonical), between evaluated and foreign-class datasets",
            "within the evaluated datasets", spread["function_within_unseen"], command)
    entries[f"{prefix}.median_prediction_ms"] = figure(
        1000 * result["median_prediction_s"], "ms per prediction (weights, their refinement when the checkpoint "
        "refines, and the dataset's BatchNorm statistics)",
        "weights-only latency target", LATENCY_TARGET_MS["convnet3"], command)
    return entries


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
    args = parser.parse_args()
    data = json.loads(open(args.file).read())
    if args.kind == "eval":
        entries = eval_figures(data, args.command, args.prefix)
    else:
        entries = {"predict": predict_figures, "train": train_figures}[args.kind](data, args.command)
    merge_summary(entries)
    for name, e in entries.items():
        print(f"{name}: {e['value']:.3f} vs {e['vs']} {e['vs_value']:.3f}")


if __name__ == "__main__":
    main()
