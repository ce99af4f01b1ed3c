"""Copy a PudNet checkpoint with the prediction-time refinement switched on (model/refine.py); the weights
and the rest of the config are unchanged.

    python benchmarks/experiments/with_refinement.py IN OUT --steps 10 --lr 0.2 --last 3 --pseudo 1
"""
import argparse
from dataclasses import replace

from pudnet.model.pudnet import PudNet

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("checkpoint")
parser.add_argument("out")
parser.add_argument("--steps", type=int, default=10)
parser.add_argument("--lr", type=float, default=0.2)
parser.add_argument("--last", type=int, default=3)
parser.add_argument("--pseudo", type=float, default=1.0)
args = parser.parse_args()
state = PudNet.read_checkpoint(args.checkpoint)
net = PudNet.from_checkpoint(state)
net.config = replace(net.config, refine_steps=args.steps, refine_lr=args.lr, refine_last=args.last,
                     refine_pseudo=args.pseudo)
net.save_pretrained(args.out, **state.extra)
print(f"{args.checkpoint} -> {args.out}: refinement {net.config.refinement}")
