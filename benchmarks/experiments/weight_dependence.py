"""Where predicted weights differ between a dataset of classes 6–9 and one of classes 0–3 (NOTES.md, D1).

    python benchmarks/experiments/weight_dependence.py CHECKPOINT
"""
import argparse

import torch
import torch.nn.functional as F

from pudnet.data import datasets
from pudnet.model.pudnet import PudNet

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("checkpoint")
args = parser.parse_args()
store = datasets.fashion_mnist("train")


def dataset(classes, per_class=100, labelled=10):
    images, labels = [], []
    for i, c in enumerate(classes):
        images.append(store.of_classes([c]).tensor()[:per_class])
        row = torch.full((per_class,), -1)
        row[:labelled] = i
        labels.append(row)
    return torch.cat(images), torch.cat(labels)


net = PudNet.from_pretrained(args.checkpoint)
a, b = (net.predict_weights(*dataset(classes), bf16=False) for classes in ([6, 7, 8, 9], [0, 1, 2, 3]))
for spec in net.specs:
    x, y = a[spec.name], b[spec.name]
    line = f"{spec.name:14s} relative difference {((x - y).norm() / x.norm()).item():.4f}"
    if spec.kind == "conv":
        xf, yf = (F.normalize(w.flatten(1), dim=1) for w in (x, y))
        line += f", filters normalised {((xf - yf).norm() / xf.norm()).item():.4f}"
    else:
        line += f", cosine {F.cosine_similarity(x, y, dim=0).item():.5f}, norm ratio {(x.norm() / y.norm()).item():.3f}"
    print(line)
