"""Score checkpoints (and, with the first, the shipped baselines) on rotated-class validation groups.

    python benchmarks/experiments/validation_scores.py --degrees 45 CHECKPOINT [CHECKPOINT ...]

Defaults give the groups `pudnet train` validates on (seed 0 + 7919, 30 groups); `--seed 555 --groups 60`
gives the ranking check of benchmarks/NOTES.md (V1). `--extra NAME=FILE` adds a baseline weight file.
"""
import argparse
import json

import torch

from pudnet.baselines import FixedBaseline, load_baselines
from pudnet.baselines.common import load_baseline
from pudnet.data import datasets
from pudnet.model.pudnet import PudNet
from pudnet.train import TrainConfig, Validator, holdout_split

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("checkpoints", nargs="+")
parser.add_argument("--degrees", type=float, default=90.0)
parser.add_argument("--groups", type=int, default=30)
parser.add_argument("--seed", type=int, default=0, help="training seed; the groups use seed + 7919")
parser.add_argument("--extra", action="append", default=[], metavar="NAME=FILE")
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--weights-dir", help="the baseline files of the checkpoints' target (default: the shipped ones)")
args = parser.parse_args()
torch.set_num_threads(args.threads)
config = TrainConfig(validate_every=1, validation_groups=args.groups, validation_degrees=args.degrees, seed=args.seed)
_, sketch, query = holdout_split(datasets.fashion_mnist("train"), config.train_classes, config.validation_fraction)
evaluator = Validator(sketch, query, config).evaluator
for i, path in enumerate(args.checkpoints):
    state = PudNet.read_checkpoint(path)
    net, extra = PudNet.from_checkpoint(state), state.extra
    baselines = None
    if i == 0:
        baselines = load_baselines(net.target, weights_dir=args.weights_dir, optional=("protonet",))
        for item in args.extra:
            name, file = item.split("=", 1)
            baselines[name] = FixedBaseline(name, *load_baseline(file, net.target))
    result = evaluator.run(net, progress=False, baselines=baselines)
    diff = result["own_minus_foreign"]
    print(json.dumps({
        "checkpoint": path, "step": extra.get("step"),
        "accuracy": {k: round(v["mean"], 2) for k, v in result["accuracy"].items()},
        "ci95": round(result["accuracy"]["pudnet"]["ci95"], 2),
        "own_minus_foreign": [round(diff["mean"], 2), round(diff["ci95"], 2)],
        "weight_spread": {k: round(v, 4) for k, v in result["weight_spread"].items()},
    }), flush=True)
