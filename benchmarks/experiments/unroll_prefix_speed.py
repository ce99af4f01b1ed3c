"""Meta-training through K refinement steps (`pudnet train --unroll-steps K`, R1's recipe): seconds per step with
the unchanged prefix of the target computed once and kept in the graph, against whole forwards in every step
(the code before session 11), interleaved. Same gradients (tests/test_refine.py); only the time differs.

    python benchmarks/experiments/unroll_prefix_speed.py --target convnet3 --repeats 5 --threads 2
"""
import argparse
import tempfile

import torch

from pudnet.bench import time_interleaved
from pudnet.data import datasets
from pudnet.model.config import PudNetConfig
from pudnet.model.pudnet import PudNet
from pudnet.targets import make_target
from pudnet.targets.base import Target
from pudnet.train import TrainConfig, Trainer

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--target", default="convnet3", choices=["convnet3", "resnet18"])
parser.add_argument("--unroll-steps", type=int, default=3)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
model = {"loss": "metric", "refine_steps": args.unroll_steps, "learn_refine_lr": True}
if args.target == "resnet18":
    model |= {"target": "resnet18", "target_kwargs": {"in_channels": 1, "image_size": 28}, "generator_rank": 1,
              "generator_hidden": 16}
torch.manual_seed(0)
net = PudNet(PudNetConfig.preset("frozen-base-prototypes", **model))
config = TrainConfig(task_pool="transformed", unroll_steps=args.unroll_steps, validate_every=0)
trainer = Trainer(net, config, tempfile.mkdtemp(prefix="pudnet-unroll-"), datasets.fashion_mnist("train"))
target_class = type(make_target(net.config.target, **net.config.target_kwargs))
kept_prefix = target_class.frozen_prefix


def step_with(prefix):
    def step():
        target_class.frozen_prefix = prefix
        trainer.train_step()
    return step


seconds = time_interleaved({"kept prefix": step_with(kept_prefix), "whole forwards": step_with(Target.frozen_prefix)},
                           args.repeats)
target_class.frozen_prefix = kept_prefix
print({k: round(v, 3) for k, v in seconds.items()}, "speed-up", round(seconds["whole forwards"] / seconds["kept prefix"], 2))
