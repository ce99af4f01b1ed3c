"""Does a checkpoint read its meta-training tasks' data? Accuracy on training tasks of each task pool with the
task's own predicted weights and with the weights predicted for another task of the same pool (the next one of
its meta-batch); centroids and BatchNorm statistics are always the task's own. own − foreign ≈ 0 on the tasks
it was trained on means the hypernetwork solves them without their data (memorisation, Yin et al. 2020).

    python benchmarks/experiments/memorisation.py [--tasks 48] [--start] CHECKPOINT ...

Tasks: the training images left after the validation hold-out, episode seed 424242 (not a training seed);
"classes" = the six classes and their quarter turns (24), "transformed" = the transformed pool (its classes kept
20° clear of 45°). `--start`: also the untrained frozen-base PudNet on the pretrained base (the runs' start).
"""
import argparse
import json
import math

import torch

from pools import training_pools

from pudnet.model.losses import metric_logits
from pudnet.model.config import PudNetConfig
from pudnet.model.pudnet import PudNet
from pudnet.train import load_base

BASE = "python/pudnet/baselines/weights/pretrained-convnet3.safetensors"
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("checkpoints", nargs="*")
parser.add_argument("--tasks", type=int, default=48, help="tasks per pool (a multiple of 4)")
parser.add_argument("--start", action="store_true")
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)

streams = training_pools()

models = [(path, PudNet.from_pretrained(path), PudNet.read_checkpoint(path).extra) for path in args.checkpoints]
if args.start:
    torch.manual_seed(0)
    start = PudNet(PudNetConfig.preset("frozen-base-prototypes", loss="metric"))
    load_base(start, BASE)
    models.insert(0, ("start (untrained residual on the pretrained base)", start.eval(), {"step": 0}))


@torch.no_grad()
def scores(net: PudNet, stream) -> dict:
    own, foreign = [], []
    for first in range(0, args.tasks, 4):
        tasks = stream.batch(list(range(first, first + 4)))
        weights = net(tasks.sketch, tasks.sketch_labels if net.config.sketch_support else None)
        labels = tasks.labels("query")
        for b in range(4):
            for into, source in ((own, b), (foreign, (b + 1) % 4)):
                logits, _ = metric_logits(net, net.params_of(weights, source), tasks, b)
                into.append(100.0 * (logits.argmax(1) == labels).float().mean().item())
    diff = torch.tensor(own) - torch.tensor(foreign)
    ci = lambda x: 1.96 * x.std().item() / math.sqrt(len(x))  # noqa: E731
    return {"own": round(sum(own) / len(own), 2), "own_ci95": round(ci(torch.tensor(own)), 2),
            "own_minus_foreign": round(diff.mean().item(), 2), "own_minus_foreign_ci95": round(ci(diff), 2)}


for name, net, extra in models:
    net.eval()
    print(json.dumps({"checkpoint": name, "step": extra.get("step"),
                      **{pool: scores(net, stream) for pool, stream in streams.items()}}), flush=True)
