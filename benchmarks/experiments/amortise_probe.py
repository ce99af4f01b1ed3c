"""Can the hypernetwork predict what the refinement does to a dataset's weights? Capacity and generalisation
apart from the rest of meta-training: the refinement's change to the frozen pretrained base (10 steps on the last
block, the shipped settings) is computed once for a fixed set of transformed-pool tasks, the frozen-base PudNet is
fitted to it by the params distillation term alone (model/losses.unexplained_change), and the unexplained
fraction is reported on those tasks and on held-out ones against the best dataset-blind answer (the mean change
of the fitted tasks), with the centroid accuracy of the fitted weights on the held-out tasks.

    python benchmarks/experiments/amortise_probe.py [--fit 192] [--held-out 64] [--epochs 30] [--model JSON]
"""
import argparse
import json
import math
import time

import torch

from pudnet.data import datasets
from pudnet.evaluate import accuracy_with
from pudnet.model.config import PudNetConfig
from pudnet.model.losses import unexplained_change
from pudnet.model.pudnet import PudNet
from pudnet.model.refine import Refinement, refine
from pudnet.train import TrainConfig, holdout_split, load_base, task_stream

BASE = "python/pudnet/baselines/weights/pretrained-convnet3.safetensors"
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--fit", type=int, default=192, help="tasks fitted (a multiple of 4)")
parser.add_argument("--held-out", type=int, default=64, help="tasks held out (a multiple of 4)")
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--model", default="{}", help="PudNetConfig overrides of frozen-base-prototypes")
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

net = PudNet(PudNetConfig.preset("frozen-base-prototypes", loss="metric", **json.loads(args.model)))
load_base(net, BASE)
base = {k: v.clone() for k, v in net.base_params().items()}
names = [s.name for s in net.specs][-3:]
kept, _, _ = holdout_split(datasets.fashion_mnist("train"), [0, 1, 2, 3, 4, 5], 0.1)
stream = task_stream(kept, TrainConfig(task_pool="transformed", validation_degrees=45, seed=424242))


def draw(first: int, count: int) -> list:
    """(task batch of one, the refined base's last tensors) for ``count`` consecutive episodes."""
    out = []
    for i in range(first, first + count):
        tasks = stream.batch([i])
        teacher = refine(net.target, base, tasks.sketch[0], tasks.sketch_labels[0], Refinement(10))
        out.append((tasks, {n: teacher[n] for n in names}))
    return out


started = time.perf_counter()
fit, held = draw(0, args.fit), draw(10**6, args.held_out)
print(f"teachers: {time.perf_counter() - started:.0f} s", flush=True)
mean_change = {n: torch.stack([t[n] - base[n] for _, t in fit]).mean(0) for n in names}
blind = base | {n: base[n] + mean_change[n] for n in names}


def student_of(tasks) -> dict:
    weights = net(tasks.sketch, tasks.sketch_labels)
    return net.params_of(weights, 0)


def report(label: str) -> None:
    with torch.no_grad():
        rows = {}
        for split, items in (("fit", fit), ("held_out", held)):
            own = [unexplained_change(student_of(t), teacher, base, names).item() for t, teacher in items]
            dataset_blind = [unexplained_change(blind, teacher, base, names).item() for _, teacher in items]
            rows[split] = {"unexplained": round(sum(own) / len(own), 4),
                           "dataset_blind": round(sum(dataset_blind) / len(dataset_blind), 4)}
        accs = torch.tensor([[100 * accuracy_with(net.target, p, t, 0) for p in
                              (base, base | teacher, student_of(t) | {}, blind)] for t, teacher in held])
        diff = accs[:, 2] - accs[:, 0]
        rows["held_out_accuracy"] = {"pretrained": round(accs[:, 0].mean().item(), 2),
                                     "refined": round(accs[:, 1].mean().item(), 2),
                                     "student": round(accs[:, 2].mean().item(), 2),
                                     "student_minus_pretrained": round(diff.mean().item(), 2),
                                     "ci95": round(1.96 * diff.std().item() / math.sqrt(len(diff)), 2),
                                     "mean_change": round(accs[:, 3].mean().item(), 2)}
    print(json.dumps({"at": label, **rows}), flush=True)


report("start")
optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
for epoch in range(1, args.epochs + 1):
    order = torch.randperm(len(fit)).tolist()
    for first in range(0, len(order), args.batch):
        loss = sum(unexplained_change(student_of(fit[i][0]), fit[i][1], base, names) for i in order[first:first + args.batch])
        optimizer.zero_grad()
        (loss / args.batch).backward()
        optimizer.step()
    if epoch % 5 == 0 or epoch == args.epochs:
        report(f"epoch {epoch} ({time.perf_counter() - started:.0f} s)")
