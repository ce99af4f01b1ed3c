"""Paired effect of sketching 200 of each unseen-class group's images instead of all of them.

    python benchmarks/experiments/sketch_size_effect.py CHECKPOINT [--groups 60]
"""
import argparse

import torch

from pudnet.data import datasets
from pudnet.evaluate import EvalConfig, Evaluator, accuracy_with, mean_ci
from pudnet.model.pudnet import PudNet

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("checkpoint")
parser.add_argument("--groups", type=int, default=60)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
net = PudNet.from_pretrained(args.checkpoint)
evaluator = Evaluator(datasets.fashion_mnist("train"), datasets.fashion_mnist("test"), EvalConfig(groups=args.groups))
scores = {0: [], 200: []}
for g in range(args.groups):
    tasks = evaluator.task(g)
    for cap in scores:
        net.config.sketch_images = cap
        scores[cap].append(100 * accuracy_with(net.target, evaluator.predict(net, tasks), tasks, 0))
for cap, values in scores.items():
    print(f"sketch of {'all' if cap == 0 else cap} images: %.2f ± %.2f" % mean_ci(values))
print("200 − all, paired: %.3f ± %.3f" % mean_ci([a - b for a, b in zip(scores[200], scores[0])]))
