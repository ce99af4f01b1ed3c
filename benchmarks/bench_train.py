"""Meta-training throughput (pytest-benchmark): one step of 4 tasks (4-way, 50 sketch + 15 query per class)
of the shipped configuration (`pudnet.bench.SHIPPED_PRESET`, ConvNet-3), default precision vs float32, and
the native (Rust) vs the reference (Python) data path.

    OMP_NUM_THREADS=2 python -m pytest benchmarks/bench_train.py --benchmark-only

tasks/s = 4 / (seconds per step). Interleaved variants over threads and precisions, ResNet-18 included, with
the figures recorded: `pudnet bench train --threads 2 --record`.
"""

import pytest
import torch

from pudnet.bench import step_function
from pudnet.data import native
from pudnet.data.episodes import EpisodeStream
from pudnet.data.sampler import EpisodeSpec


@pytest.fixture(scope="module")
def store():
    from pudnet.data import datasets

    return datasets.fashion_mnist("train")


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_train_step(benchmark, precision):
    step = step_function("convnet3", torch.device("cpu"), precision, torch.get_num_threads())
    benchmark.group = "train-step"
    benchmark.extra_info["tasks_per_step"] = 4
    benchmark.pedantic(step, rounds=6, warmup_rounds=1)


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
