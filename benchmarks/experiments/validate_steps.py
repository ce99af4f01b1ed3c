"""A run's kept checkpoints on a training-side validation, beside the pretrained network and its refinement,
paired on the same groups (model selection; never the unseen classes or MNIST).

    python benchmarks/experiments/validate_steps.py --validation strokes --groups 30 runs/s9/strokes/step*.safetensors
    python benchmarks/experiments/validate_steps.py --validation rotated-classes --degrees 45 CHECKPOINT ...

Per group: the CE-pretrained ConvNet-3 + centroids with 0, 3 and 10 refinement steps (the package's refinement,
lr 0.2 on the last block); per checkpoint its forward pass, its forward pass from another group's dataset
(foreign), and + its own refinement (its refine_steps at its step sizes). Prints one JSON line per method and
the paired differences that matter.
"""
import argparse
import json
import torch

from pools import validation_evaluator

from pudnet.baselines import shipped_path
from pudnet.baselines.common import load_baseline
from pudnet.evaluate import accuracy_with, mean_ci
from pudnet.model.pudnet import PudNet
from pudnet.model.refine import Refinement, refine

PRETRAINED_STEPS = (0, 3, 10)


def forward_pass(net: PudNet, tasks) -> dict:
    """The checkpoint's weights for the group's dataset without its refinement."""
    dataset = tasks.sketch[0]
    images, labels = net.labelled_dataset(dataset, (dataset[tasks.support_positions], tasks.labels("support")))
    return net.predict_weights(images, labels if net.config.uses_labels else None)


def refined(net: PudNet, params, tasks):
    """``params`` after the checkpoint's own refinement (its steps, at its step sizes)."""
    if not net.config.refine_steps:
        return params
    return refine(net.target, params, tasks.sketch[0], tasks.sketch_labels[0], net.config.refinement,
                  step_sizes=net.refine_step_sizes())


def refine_pretrained(target, params, tasks, steps):
    if not steps:
        return params
    return refine(target, params, tasks.sketch[0], tasks.sketch_labels[0], Refinement(steps))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--validation", default="strokes", choices=["strokes", "rotated-classes"])
    parser.add_argument("--degrees", type=float, default=45.0)
    parser.add_argument("--groups", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="the runs' training seed (groups: seed + 7919)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pretrained", help="the pretrained baseline's weight file (default: the shipped one of "
                        "the checkpoints' target)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, evaluator = validation_evaluator(args.groups, args.degrees, args.seed, args.validation)
    nets = {path: PudNet.from_pretrained(path) for path in args.checkpoints}
    target = next(iter(nets.values())).target
    pretrained, _ = load_baseline(args.pretrained or shipped_path("pretrained", target), target)
    scores: dict[str, list[float]] = {}
    score = lambda name, params, tasks: scores.setdefault(name, []).append(  # noqa: E731
        100 * accuracy_with(target, params, tasks, 0))
    with torch.no_grad():
        for g in range(args.groups):
            tasks, foreign = evaluator.task(g), evaluator.foreign_task(g)
            for k in PRETRAINED_STEPS:
                score(f"pretrained+{k}", refine_pretrained(target, pretrained, tasks, k), tasks)
            for path, net in nets.items():
                params = forward_pass(net, tasks)
                score(f"{path}:forward", params, tasks)
                score(f"{path}:foreign", forward_pass(net, foreign), tasks)
                score(f"{path}:+{net.config.refine_steps}", refined(net, params, tasks), tasks)
    for name, values in scores.items():
        mean, ci = mean_ci(values)
        print(json.dumps({"method": name, "top1": round(mean, 2), "ci95": round(ci, 2)}))
    paired = lambda a, b: [round(x, 2) for x in mean_ci([p - q for p, q in zip(scores[a], scores[b])])]  # noqa: E731
    for path, net in nets.items():
        print(json.dumps({
            "checkpoint": path, "validation": args.validation, "groups": args.groups,
            "forward-pretrained": paired(f"{path}:forward", "pretrained+0"),
            "forward-pretrained+10": paired(f"{path}:forward", "pretrained+10"),
            "own-foreign": paired(f"{path}:forward", f"{path}:foreign"),
            f"+{net.config.refine_steps}-pretrained+{net.config.refine_steps}":
                paired(f"{path}:+{net.config.refine_steps}", f"pretrained+{min(net.config.refine_steps, 10)}")
                if net.config.refine_steps in PRETRAINED_STEPS else None,
        }))


if __name__ == "__main__":
    main()
