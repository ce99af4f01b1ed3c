"""Meta-training throughput (pytest-benchmark): one step of 4 tasks (4-way, 50 sketch + 15 query per class,
ConvNet-3 target), bf16 autocast vs float32 and the native (Rust) vs the reference (Python) data path.

    python -m pytest benchmarks/bench_train.py --benchmark-only

tasks/s = 4 / (seconds per step).
"""

import pytest
import torch

from pudnet.data import native
from pudnet.data.episodes import EpisodeStream
from pudnet.data.sampler import EpisodeSpec
from pudnet.model.pudnet import PudNet, PudNetConfig
from pudnet.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def store():
    from pudnet.data import datasets

    return datasets.fashion_mnist("train")


@pytest.mark.parametrize("bf16", [True, False], ids=["bf16", "fp32"])
def test_train_step(benchmark, store, tmp_path, bf16):
    torch.manual_seed(0)
    trainer = Trainer(PudNet(PudNetConfig()), TrainConfig(bf16=bf16), tmp_path, store)
    benchmark.group = "train-step"
    benchmark.extra_info["tasks_per_step"] = 4
    benchmark.pedantic(trainer.train_step, rounds=6, warmup_rounds=1)


@pytest.mark.parametrize("use_native", [True, False], ids=["native", "reference"])
def test_task_batch(benchmark, store, use_native):
    native.use_native(use_native)
    try:
        stream = EpisodeStream(store, [0, 1, 2, 3, 4, 5], EpisodeSpec(), seed=0)
        counter = iter(range(10**9))
        benchmark.group = "task-batch"
        benchmark(lambda: stream.batch([4 * next(counter) + i for i in range(4)]))
    finally:
        native.use_native(None)
