"""A pretrained baseline on the protocol's unseen Fashion groups (analysis only, never selection): BatchNorm
statistics from the group's dataset (the protocol's rule) vs from 2,000 training-class images.

    python benchmarks/experiments/bn_source_unseen.py resnet18 benchmarks/results/checkpoints/baselines/pretrained-resnet18.safetensors 10
"""
import sys, torch
from pudnet.baselines.common import load_baseline
from pudnet.data import datasets
from pudnet.evaluate import EvalConfig, Evaluator, accuracy_with, mean_ci
from pudnet.targets import make_target
torch.set_num_threads(2)
name = sys.argv[1]
target = make_target(name, in_channels=1, image_size=28) if name != "convnet3" else make_target("convnet3", width=64)
path = sys.argv[2]
params, _ = load_baseline(path, target, "pretrained")
train, test = datasets.fashion_mnist("train"), datasets.fashion_mnist("test")
ev = Evaluator(train, test, EvalConfig(groups=int(sys.argv[3])))
g = torch.Generator().manual_seed(0)
pick = torch.randperm(len(train.labels), generator=g)
keep = [int(i) for i in pick if train.labels[int(i)] < 6][:2000]
train_images = torch.as_tensor(train.images[keep]).float() / 255
with torch.no_grad():
    train_stats = target.dataset_stats(params, train_images)
    own, trn = [], []
    for i in range(ev.config.groups):
        tasks = ev.task(i)
        own.append(100 * accuracy_with(target, params, tasks, 0))
        trn.append(100 * accuracy_with(target, params, tasks, 0, train_stats))
print(name, "dataset BN", mean_ci(own), "training-class BN", mean_ci(trn))
