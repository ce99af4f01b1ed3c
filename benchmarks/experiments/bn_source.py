"""Where the target's BatchNorm statistics come from, on the CE-pretrained ConvNet-3: the group's dataset (the
protocol's rule), the pretrained network's training images, or a per-layer mix λ·dataset + (1 − λ)·training.
Rotated-class validation groups (`pudnet train`'s validator, seed + 7919); paired against the dataset's.

    python benchmarks/experiments/bn_source.py --groups 40 --mix 0,0.5,0.8
"""
import argparse
import json

import torch

from pools import validation_evaluator

from pudnet.baselines import shipped_path
from pudnet.baselines.common import load_baseline
from pudnet.evaluate import accuracy_with, mean_ci
from pudnet.targets import make_target


def mixed(dataset_stats, training_stats, share):
    """Per layer: mean and variance of the mixture share·dataset + (1 − share)·training."""
    out = {}
    for name, (mean_d, var_d) in dataset_stats.items():
        mean_t, var_t = training_stats[name]
        mean = share * mean_d + (1 - share) * mean_t
        var = share * (var_d + mean_d**2) + (1 - share) * (var_t + mean_t**2) - mean**2
        out[name] = (mean, var)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=40)
    parser.add_argument("--mix", default="0,0.5,0.8", help="dataset shares λ to score besides 1 (the protocol)")
    parser.add_argument("--degrees", type=float, default=90.0)
    parser.add_argument("--seed", type=int, default=555)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kept, evaluator = validation_evaluator(args.groups, args.degrees, args.seed)
    target = make_target("convnet3", in_channels=1, image_size=28)
    params, _ = load_baseline(shipped_path("pretrained", target), target)
    spaced = torch.linspace(0, len(kept) - 1, 3000).long().numpy()
    with torch.no_grad():
        _, training_stats = target.forward(params, kept.tensor(spaced))
        shares = [1.0] + [float(s) for s in args.mix.split(",")]
        scores = {share: [] for share in shares}
        for g in range(args.groups):
            tasks = evaluator.task(g)
            _, dataset_stats = target.forward(params, tasks.sketch[0])
            for share in shares:
                stats = mixed(dataset_stats, training_stats, share)
                scores[share].append(100 * accuracy_with(target, params, tasks, 0, stats))
    for share, values in scores.items():
        mean, ci = mean_ci(values)
        diff, diff_ci = mean_ci([a - b for a, b in zip(values, scores[1.0])])
        print(json.dumps({"dataset_share": share, "top1": round(mean, 2), "ci95": round(ci, 2),
                          "vs_dataset": [round(diff, 2), round(diff_ci, 2)]}))


if __name__ == "__main__":
    main()
