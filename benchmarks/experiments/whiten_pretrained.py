"""Test-time whitening of conv3 (PudNetConfig.whiten) on the CE-pretrained weights: the protocol's first 60 unseen groups.

    python benchmarks/experiments/whiten_pretrained.py
"""
import torch
from pudnet.data import datasets
from pudnet.evaluate import Evaluator, EvalConfig, accuracy_with, mean_ci
from pudnet.baselines.common import load_baseline
from pudnet.targets import make_target
torch.set_num_threads(1)
ev = Evaluator(datasets.fashion_mnist("train"), datasets.fashion_mnist("test"), EvalConfig(groups=60))
target = make_target("convnet3", in_channels=1, image_size=28)
params, _ = load_baseline("python/pudnet/baselines/weights/pretrained-convnet3.safetensors", target)
rows = {k: [] for k in ["pretrained", "w0.01", "w0.1", "w1.0", "w0.1_foreign"]}
for g in range(60):
    tasks = ev.task(g)
    x = tasks.sketch[0]
    rows["pretrained"].append(accuracy_with(target, params, tasks, 0))
    for lam in (0.01, 0.1, 1.0):
        rows[f"w{lam}"].append(accuracy_with(target, target.whiten_last_conv(params, x, lam), tasks, 0))
    fx = ev.foreign.batch([g]).sketch[0]
    rows["w0.1_foreign"].append(accuracy_with(target, target.whiten_last_conv(params, fx, 0.1), tasks, 0))
for k, v in rows.items():
    m, ci = mean_ci([100 * a for a in v]); d, dci = mean_ci([100 * (a - b) for a, b in zip(v, rows["pretrained"])])
    print(f"{k:14s} {m:.2f} ± {ci:.2f}   vs pretrained {d:+.2f} ± {dci:.2f}")
