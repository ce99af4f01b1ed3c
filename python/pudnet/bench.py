"""Prediction latency: the time from a dataset of images to a ready module, per target."""

from __future__ import annotations

import statistics
import time

import torch

from .model.pudnet import PudNet, PudNetConfig

TARGETS = ("convnet3", "resnet18")


def latency_model(target: str) -> PudNet:
    """A PudNet of the default size for ``target`` (latency does not depend on its training)."""
    return PudNet(PudNetConfig(target=target)).eval()


def dataset(images: int = 400, seed: int = 0) -> torch.Tensor:
    return torch.rand(images, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def time_call(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def predict_latency(repeats: int = 20, images: int = 400) -> str:
    """Median milliseconds for the weights alone (sketch + AHRU + generators; bf16 autocast, the default,
    and float32) and for ``predict`` (weights, the dataset's BatchNorm statistics, the exported module)."""
    data = dataset(images)
    lines = [f"median of {repeats} runs, {images}-image dataset, {torch.get_num_threads()} threads"]
    for name in TARGETS:
        net = latency_model(name)
        bf16, fp32 = (
            statistics.median(time_call(lambda: net.predict_weights(data, bf16=flag), repeats)) for flag in (True, False)
        )
        module = statistics.median(time_call(lambda: net.predict(data), repeats))
        lines.append(
            f"  {name:<10} weights {1000 * bf16:8.1f} ms (float32 {1000 * fp32:.1f} ms)   "
            f"ready module {1000 * module:8.1f} ms"
        )
    return "\n".join(lines)
