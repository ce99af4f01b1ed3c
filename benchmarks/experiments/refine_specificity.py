"""How much of the prediction-time refinement is specific to the dataset it ran on? On meta-training tasks
(the transformed pool and the rotated classes) and on the validation's rotated held-out classes: the pretrained
network, pretrained + k refinement steps on the task's own dataset (the teacher an amortised hypernetwork would
imitate), and the weights refined on *another* task's dataset (the next task), always with the task's own
BatchNorm statistics and centroids. own − foreign ≈ the whole refinement gain means a hypernetwork that reads
the dataset has something to learn; ≈ 0 means the refinement is a shared shift a constant residual captures.

    python benchmarks/experiments/refine_specificity.py [--tasks 48] [--steps 10]
"""
import argparse
import json
import math

import torch

from pools import training_pools

from pudnet.baselines.common import default_target, load_baseline
from pudnet.evaluate import accuracy_with
from pudnet.model.refine import Refinement, refine

BASE = "python/pudnet/baselines/weights/pretrained-convnet3.safetensors"
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--tasks", type=int, default=48, help="tasks per pool (a multiple of 4)")
parser.add_argument("--steps", type=int, default=10)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)

target = default_target()
base, _ = load_baseline(BASE, target)
refinement = Refinement(args.steps)
streams = training_pools()


def ci(values: torch.Tensor) -> float:
    return 1.96 * values.std().item() / math.sqrt(len(values))


def scores(stream) -> dict:
    rows = []
    for first in range(0, args.tasks, 4):
        tasks = stream.batch(list(range(first, first + 4)))
        refined = [refine(target, base, tasks.sketch[b], tasks.sketch_labels[b], refinement) for b in range(4)]
        for b in range(4):
            rows.append([100 * accuracy_with(target, p, tasks, b) for p in (base, refined[b], refined[(b + 1) % 4])])
    pre, own, foreign = torch.tensor(rows).T
    summary = lambda x: {"mean": round(x.mean().item(), 2), "ci95": round(ci(x), 2)}  # noqa: E731
    return {"pretrained": summary(pre), "refined_own": summary(own), "refined_foreign": summary(foreign),
            "own_minus_pretrained": summary(own - pre), "own_minus_foreign": summary(own - foreign)}


for pool, stream in streams.items():
    print(json.dumps({"pool": pool, "steps": args.steps, "tasks": args.tasks, **scores(stream)}), flush=True)
