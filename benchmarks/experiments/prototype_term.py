"""A closed-form, data-reading change of the last convolution (issue 12 item 3a, before any training): amplify
the input directions of conv3 along which the dataset's class prototypes differ,

    W3' = W3 · (I + η · S_B / ‖S_B‖),   S_B = Σ_k Σ_p (v_kp − v̄_p)(v_kp − v̄_p)ᵀ,

v_kp the mean 3×3×C input patch of conv3 at position p over the labelled images of class k (the prototype of
the last block's input; `--pooled`: positions averaged too). Because the block's input is linear in W3, this is
also the Hebbian product of output and input prototypes. Scored like refine_specificity.py (the task's own
BatchNorm statistics and centroids) on training-pool tasks, with pretrained and pretrained + 10 refinement steps.

    python benchmarks/experiments/prototype_term.py [--tasks 48] [--etas 0.1,0.3,1,3]
"""
import argparse
import json
import math

import torch
import torch.nn.functional as F

from pools import training_pools

from pudnet.baselines.common import default_target, load_baseline
from pudnet.evaluate import accuracy_with
from pudnet.model.refine import Refinement, refine

BASE = "python/pudnet/baselines/weights/pretrained-convnet3.safetensors"
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--tasks", type=int, default=48)
parser.add_argument("--etas", default="0.1,0.3,1,3")
parser.add_argument("--pooled", action="store_true")
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)
etas = [float(e) for e in args.etas.split(",")]

target = default_target()
base, _ = load_baseline(BASE, target)


def between_class_scatter(images, labels) -> torch.Tensor:
    h, _ = target._blocks(base, images, None, 1, target.depth - 1)           # the last block's input
    rows = F.unfold(h.float(), 3, padding=1)                                 # [N, C·9, positions]
    known = labels >= 0
    classes = int(labels.max()) + 1
    means = torch.stack([rows[known & (labels == k)].mean(0) for k in range(classes)])  # [K, C·9, P]
    if args.pooled:
        means = means.mean(-1, keepdim=True)
    centred = means - means.mean(0, keepdim=True)
    scatter = torch.einsum("kip,kjp->ij", centred, centred)
    return scatter / scatter.norm()


def with_prototype_term(eta, scatter):
    w = base["conv3.weight"]
    flat = w.flatten(1)
    return base | {"conv3.weight": (flat + eta * flat @ scatter).view_as(w)}


for pool, stream in training_pools().items():
    rows = []
    for first in range(0, args.tasks, 4):
        tasks = stream.batch(list(range(first, first + 4)))
        for b in range(4):
            images, labels = tasks.sketch[b], tasks.sketch_labels[b]
            scatter = between_class_scatter(images, labels)
            candidates = [base, refine(target, base, images, labels, Refinement(10))]
            candidates += [with_prototype_term(eta, scatter) for eta in etas]
            rows.append([100 * accuracy_with(target, p, tasks, b) for p in candidates])
    table = torch.tensor(rows)
    names = ["pretrained", "refined_10"] + [f"eta_{eta:g}" for eta in etas]
    ci = lambda x: round(1.96 * x.std().item() / math.sqrt(len(x)), 2)  # noqa: E731
    print(json.dumps({"pool": pool, "pooled": args.pooled, "tasks": args.tasks,
                      **{n: [round(table[:, i].mean().item(), 2), ci(table[:, i] - table[:, 0])]
                         for i, n in enumerate(names)}}), flush=True)
