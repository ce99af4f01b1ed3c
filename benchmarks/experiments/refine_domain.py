"""Where the refinement's gain comes from on a new domain: the group's own data, or the domain.

    python benchmarks/experiments/refine_domain.py --domain strokes --groups 40 [--checkpoint CKPT]
    python benchmarks/experiments/refine_domain.py --domain mnist --groups 40     # analysis only, no selection

Per group, the weights refined 10 steps (the package's refinement: lr 0.2 on the last block, labelled +
pseudo-label centroid loss) on the group's own dataset, on another group's dataset of the same domain (other
classes: "foreign"), and on its own labelled images alone (no pseudo-labels); every variant scored on the
group's queries with the group's own centroids and BatchNorm statistics. If the foreign refinement gains about
as much as the own one, the gain is a shift to the domain that a dataset-blind residual could hold; if it
gains nothing, the gain is specific to the group and a forward pass must read the group's data to match it.
"""
import argparse
import json

import torch

from pools import validation_evaluator
from validate_steps import forward_pass

from pudnet.baselines import shipped_path
from pudnet.baselines.common import load_baseline
from pudnet.data import datasets
from pudnet.evaluate import EvalConfig, Evaluator, accuracy_with, mean_ci, split_per_class
from pudnet.model.pudnet import PudNet
from pudnet.model.refine import Refinement, refine

STEPS = 10


def evaluator_for(domain: str, groups: int):
    """Groups of ``domain``: strokes = the training-side stroke validation (pudnet.train.Validator), mnist /
    fashion = the protocol's groups (`pudnet eval --domain`)."""
    if domain == "strokes":
        return validation_evaluator(groups, 45.0, 0, "strokes")[1]
    if domain == "mnist":
        data, queries = split_per_class(datasets.mnist(), 300)
        return Evaluator(data, queries, EvalConfig(groups=groups, classes=list(range(10)),
                                                   foreign_classes=list(range(10))))
    return Evaluator(datasets.fashion_mnist("train"), datasets.fashion_mnist("test"), EvalConfig(groups=groups))


def parsed_variant(text: str) -> Refinement:
    """``steps:lr:last:pseudo`` as a Refinement."""
    steps, lr, last, pseudo = text.split(":")
    return Refinement(int(steps), float(lr), int(last), float(pseudo))


def refined_on(target, params, tasks, refinement, step_sizes=None):
    return refine(target, params, tasks.sketch[0], tasks.sketch_labels[0], refinement, step_sizes=step_sizes)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", choices=["strokes", "mnist", "fashion"], default="strokes")
    parser.add_argument("--groups", type=int, default=40)
    parser.add_argument("--checkpoint", help="also a PudNet's forward pass and its refinement, own vs foreign")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", default="", help="more own-dataset refinements of the pretrained weights, "
                        "comma-separated steps:lr:last:pseudo (e.g. 1:0.2:3:0 = one labelled-only step)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    evaluator = evaluator_for(args.domain, args.groups)
    net = PudNet.from_pretrained(args.checkpoint) if args.checkpoint else None
    target = net.target if net else PudNet().target
    pretrained, _ = load_baseline(shipped_path("pretrained", target), target)
    full, labelled_only = Refinement(STEPS), Refinement(STEPS, pseudo=0.0)
    variants = {v: parsed_variant(v) for v in args.variants.split(",") if v}
    scores: dict[str, list[float]] = {}

    def score(name, params, tasks):
        scores.setdefault(name, []).append(100 * accuracy_with(target, params, tasks, 0))

    with torch.no_grad():
        for g in range(args.groups):
            tasks, foreign = evaluator.task(g), evaluator.foreign_task(g)
            score("pretrained", pretrained, tasks)
            score("pretrained+10 own", refined_on(target, pretrained, tasks, full), tasks)
            score("pretrained+10 foreign", refined_on(target, pretrained, foreign, full), tasks)
            score("pretrained+10 own labelled only", refined_on(target, pretrained, tasks, labelled_only), tasks)
            for name, refinement in variants.items():
                score(f"pretrained own {name}", refined_on(target, pretrained, tasks, refinement), tasks)
            if net is not None:
                own, other = forward_pass(net, tasks), forward_pass(net, foreign)
                sizes = net.refine_step_sizes()
                score("pudnet forward own", own, tasks)
                score("pudnet forward foreign", other, tasks)
                score("pudnet+10 own", refined_on(target, own, tasks, full, sizes), tasks)
                score("pudnet+10 foreign", refined_on(target, other, foreign, full, sizes), tasks)
            print(f"group {g + 1}/{args.groups}", flush=True)
    for name, values in scores.items():
        mean, ci = mean_ci(values)
        diff, dci = mean_ci([a - b for a, b in zip(values, scores["pretrained"])])
        print(json.dumps({"domain": args.domain, "groups": args.groups, "method": name, "top1": round(mean, 2),
                          "ci95": round(ci, 2), "minus_pretrained": [round(diff, 2), round(dci, 2)]}))


if __name__ == "__main__":
    main()
