"""Oracle for a gradient-step PudNet: does adapting the CE-pretrained ConvNet-3 to each group by a few SGD steps
beat it on rotated-class validation groups? Paired differences against no adaptation.

    python benchmarks/experiments/adapt_pretrained.py --variants sgd:0.05:1,sgd:0.05:3,pl:0.05:10:1,ent:0.05:3:1
    python benchmarks/experiments/adapt_pretrained.py --only bn --variants sgd:0.2:3,sgd:1:3
    python benchmarks/experiments/adapt_pretrained.py --checkpoint CHECKPOINT --degrees 45 --only conv3,bn3 ...

A variant is KIND:LR:STEPS[:WEIGHT]. Every kind minimises the centroid cross-entropy (τ = 10) of the group's
labelled images (centroids from the same images; BatchNorm statistics from the group's dataset, as in the
protocol); ``pl`` adds WEIGHT × the cross-entropy of every dataset image against its own nearest centroid
(hard pseudo-labels), ``ent`` WEIGHT × the entropy of every dataset image's class posterior. Queries never
enter. With --checkpoint, the start is that PudNet's predicted weights for each group instead. Groups:
`pudnet train`'s validator (seed + 7919), held-out training-class images turned by --degrees.
The package's version of the `pl` kind on the last block is `pudnet.model.refine` (PudNetConfig.refine_*).
"""
import argparse
import json

import torch

from pools import validation_evaluator
import torch.nn.functional as F

from pudnet.baselines import shipped_path
from pudnet.baselines.common import load_baseline
from pudnet.evaluate import accuracy_with, mean_ci
from pudnet.model.pudnet import PudNet
from pudnet.model.refine import refinement_loss
from pudnet.ops import centroids, cosine_logits
from pudnet.targets import make_target

KINDS = ("sgd", "pl", "ent")


def adaptation_loss(target, params, tasks, kind, weight):
    features, _ = target.forward(params, tasks.sketch[0])
    labels = tasks.sketch_labels[0]
    if kind != "ent":
        return refinement_loss(features, labels, 10.0, weight if kind == "pl" else 0.0)
    known = labels >= 0
    logits = cosine_logits(features, centroids(features[known], labels[known], tasks.spec.ways), 10.0)
    entropy = -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()
    return F.cross_entropy(logits[known], labels[known]) + weight * entropy


def adapted(target, params, tasks, kind, lr, steps, weight, only=()):
    """``params`` after ``steps`` SGD steps; with ``only``, just the tensors whose names contain one of them."""
    params = {name: value.clone().requires_grad_(not only or any(o in name for o in only))
              for name, value in params.items()}
    trained = [value for value in params.values() if value.requires_grad]
    for _ in range(steps):
        grads = torch.autograd.grad(adaptation_loss(target, params, tasks, kind, weight), trained)
        with torch.no_grad():
            for value, grad in zip(trained, grads):
                value -= lr * grad
    return {name: value.detach() for name, value in params.items()}


def parse_variant(text):
    kind, lr, steps, *weight = text.split(":")
    if kind not in KINDS:
        raise SystemExit(f"variant {text!r}: kind must be one of {KINDS}")
    return kind, float(lr), int(steps), float(weight[0]) if weight else 1.0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="sgd:0.05:1,sgd:0.05:3,sgd:0.05:10,sgd:0.2:1,sgd:0.2:3")
    parser.add_argument("--groups", type=int, default=40)
    parser.add_argument("--degrees", type=float, default=90.0)
    parser.add_argument("--seed", type=int, default=555, help="training seed; the groups use seed + 7919")
    parser.add_argument("--only", default="", help="comma list: adapt only tensors whose names contain one "
                        "(e.g. bn for the BatchNorm affines, conv3,bn3 for the last block); default all")
    parser.add_argument("--checkpoint", help="start from this PudNet's predicted weights for each group")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, evaluator = validation_evaluator(args.groups, args.degrees, args.seed)
    target = make_target("convnet3", in_channels=1, image_size=28)
    pretrained, _ = load_baseline(shipped_path("pretrained", target), target)
    net = PudNet.from_pretrained(args.checkpoint) if args.checkpoint else None
    variants = {text: parse_variant(text) for text in args.variants.split(",")}
    only = tuple(o for o in args.only.split(",") if o)
    scores = {"none": []} | {text: [] for text in variants}
    for g in range(args.groups):
        tasks = evaluator.task(g)
        start = evaluator.predict(net, tasks) if net else pretrained
        scores["none"].append(100 * accuracy_with(target, start, tasks, 0))
        for text, variant in variants.items():
            params = adapted(target, start, tasks, *variant, only)
            scores[text].append(100 * accuracy_with(target, params, tasks, 0))
    for name, values in scores.items():
        mean, ci = mean_ci(values)
        diff, diff_ci = mean_ci([a - b for a, b in zip(values, scores["none"])])
        print(json.dumps({"variant": name, "top1": round(mean, 2), "ci95": round(ci, 2),
                          "vs_none": [round(diff, 2), round(diff_ci, 2)]}))


if __name__ == "__main__":
    main()
