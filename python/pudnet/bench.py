"""Prediction latency: the time from a dataset of images to a ready module, per target."""

from __future__ import annotations

import statistics
import time

import torch

from .model.pudnet import PudNet, PudNetConfig

TARGETS = ("convnet3", "resnet18")


def latency_model(target: str, **overrides) -> PudNet:
    """A PudNet of the default size for ``target`` (latency does not depend on its training)."""
    return PudNet(PudNetConfig(target=target, **overrides)).eval()


def dataset(images: int = 400, seed: int = 0) -> torch.Tensor:
    return torch.rand(images, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def time_interleaved(fns: dict[str, object], repeats: int) -> dict[str, float]:
    """Median seconds of each callable, called in turn ``repeats`` times (after one warm-up call each), so
    that the shared machine's slow and fast moments fall on all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def predict_latency(repeats: int = 20, images: int = 400) -> str:
    """Median milliseconds, interleaved, for the weights alone (sketch + AHRU + generators) in the default
    configuration (bf16 autocast, a 200-image sketch), in float32, and in float32 with every image sketched;
    and for ``predict`` (weights, the dataset's BatchNorm statistics, the exported module)."""
    data = dataset(images)
    lines = [f"median of {repeats} interleaved runs, {images}-image dataset, {torch.get_num_threads()} threads"]
    for name in TARGETS:
        net, whole = latency_model(name), latency_model(name, sketch_images=0)
        whole.load_state_dict(net.state_dict())
        ms = {key: 1000 * value for key, value in time_interleaved({
            "default": lambda: net.predict_weights(data),
            "float32": lambda: net.predict_weights(data, bf16=False),
            "float32, every image sketched": lambda: whole.predict_weights(data, bf16=False),
            "ready module": lambda: net.predict(data),
        }, repeats).items()}
        lines.append(f"  {name:<10} " + "   ".join(f"{key} {value:.1f} ms" for key, value in ms.items()))
    return "\n".join(lines)
