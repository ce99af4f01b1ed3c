"""``pudnet bench``: prediction latency and meta-training throughput of what users run, variants interleaved.

Every variant is called in turn, repeat after repeat, so that a shared machine's slow and fast moments fall
on all of them alike; medians and their ratios are reported, and with ``record=True`` written to
``benchmarks/results/summary.json`` (:mod:`pudnet.report`) by the code that measured them.
"""

from __future__ import annotations

import shlex
import statistics
import sys
import time
from typing import Callable

import numpy as np
import torch

from . import hardware
from .model.config import PudNetConfig
from .model.pudnet import PudNet

SHIPPED = "fashion-convnet3"
# the shipped checkpoint's architecture for ResNet-18 (no ResNet-18 checkpoint ships yet: latency and
# throughput depend on the architecture, not on the trained values)
SHIPPED_PRESET = "frozen-base-prototypes"
TARGETS = ("convnet3", "resnet18")
# issue "Fast on every machine": 2 threads, 400-image dataset
LATENCY_TARGET_MS = {("convnet3", "weights"): 10.0, ("convnet3", "module"): 150.0,
                     ("resnet18", "weights"): 100.0, ("resnet18", "module"): 1500.0}
THROUGHPUT_TARGET = {"convnet3": 8.0, "resnet18": 0.5}  # tasks/s, 2 threads


def time_interleaved(fns: dict[str, Callable], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each callable, called in turn ``repeats`` times after ``warmup`` calls each."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def shipped_net(target: str, device: torch.device) -> tuple[PudNet, str]:
    """The shipped checkpoint for ``target`` (or the shipped configuration, untrained, where none ships)."""
    if target == "convnet3":
        return PudNet.from_pretrained(SHIPPED, device=device), f"shipped checkpoint {SHIPPED}"
    net = PudNet(PudNetConfig.preset(SHIPPED_PRESET, target=target)).eval().to(device)
    return net, f"preset {SHIPPED_PRESET} (no {target} checkpoint ships; timing does not depend on the values)"


def unseen_dataset(images_per_class: int = 100, labelled: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Real Fashion-MNIST images of the unseen classes 6–9 (training split) and labels (−1 unlabelled)."""
    from .data import datasets

    store = datasets.fashion_mnist("train")
    picks = np.concatenate([np.flatnonzero(store.labels == c)[:images_per_class] for c in (6, 7, 8, 9)])
    labels = torch.full((len(picks),), -1, dtype=torch.long)
    for k in range(4):
        labels[k * images_per_class : k * images_per_class + labelled] = k
    return store.subset(picks).tensor(), labels


def command_line() -> str:
    return "pudnet " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def predict_latency(repeats: int = 20, device: str = "cpu", precision: str = "auto", record: bool = False) -> str:
    """Median milliseconds, interleaved, from a 400-image dataset (real unseen Fashion-MNIST, 40 labelled) to
    the weights (the hypernetwork's pass) and to a ready module (plus the refinement the checkpoint asks for,
    the dataset's BatchNorm statistics and the export), in ``precision`` and in float32 (and bf16 where it
    is native)."""
    device = hardware.resolve_device(device)
    images, labels = unseen_dataset()
    lines = [f"median of {repeats} interleaved runs, {len(images)}-image dataset, {torch.get_num_threads()} "
             f"threads, {hardware.describe(device, precision)}"]
    entries = {}
    for target in TARGETS:
        net, what = shipped_net(target, device)
        variants = {
            "weights": lambda: net.predict_weights(images, labels, precision),
            "weights fp32": lambda: net.predict_weights(images, labels, "fp32"),
            "ready module": lambda: _ready_module(net, images, labels, precision),
        }
        if _bf16_is_native(device):
            variants["weights bf16"] = lambda: net.predict_weights(images, labels, "bf16")
        ms = {key: 1000 * value for key, value in time_interleaved(variants, repeats).items()}
        lines.append(f"  {target:<9} ({what})")
        lines += [f"    {key:<14} {value:9.1f} ms" for key, value in ms.items()]
        entries.update(_latency_entries(target, what, ms, precision))
    if record:
        _record(entries, device)
    return "\n".join(lines)


def _ready_module(net: PudNet, images: torch.Tensor, labels: torch.Tensor, precision: str) -> torch.nn.Module:
    params, stats = net.predict_params(images, labels, precision)
    return net.target.to_module(params, stats)


def _bf16_is_native(device: torch.device) -> bool:
    return device.type == "cuda" or hardware.cpu_has_native_bf16()


def _latency_entries(target: str, what: str, ms: dict[str, float], precision: str) -> dict:
    from .report import figure

    threads, command = torch.get_num_threads(), command_line()
    unit = f"ms, median, 400-image dataset, {threads} threads, precision {precision}, {what}"
    timed = {"checkpoint": SHIPPED} if target == "convnet3" else {}  # report.merge_summary hashes it
    entries = {
        f"predict_latency.{target}.weights_ms": figure(
            ms["weights"], f"{unit}, hypernetwork forward", "target", LATENCY_TARGET_MS[(target, "weights")],
            command, **timed),
        f"predict_latency.{target}.weights_default_vs_fp32_ms": figure(
            ms["weights"], f"{unit}, hypernetwork forward, default precision", "float32", ms["weights fp32"],
            command, **timed),
        f"predict_latency.{target}.module_ms": figure(
            ms["ready module"], f"{unit}, weights + refinement (if the checkpoint refines) + BatchNorm "
            "statistics + nn.Module", "target", LATENCY_TARGET_MS[(target, "module")], command, **timed),
    }
    if "weights bf16" in ms:
        entries[f"predict_latency.{target}.weights_bf16_vs_fp32_ms"] = figure(
            ms["weights bf16"], f"{unit}, hypernetwork forward in bf16 (native here)", "float32",
            ms["weights fp32"], command, **timed)
    return entries


def _record(entries: dict, device: torch.device) -> None:
    """Merge ``entries`` into the summary under names that tell the kind of machine: the figures of a CPU
    without native bf16 keep the plain names, a native-bf16 CPU's and a GPU's get a segment of their own
    (``predict_latency.cpu_native_bf16.convnet3.weights_ms``), so that one kind never overwrites another's."""
    from .report import merge_summary

    kind = machine_kind(device)
    named = {}
    for name, entry in entries.items():
        head, rest = name.split(".", 1)
        named[f"{head}.{kind}.{rest}" if kind else name] = {**entry, "device": str(device)}
    merge_summary(named)


def machine_kind(device: torch.device) -> str:
    """"" for a CPU without native bf16, "cpu_native_bf16" for one with it, else the device type."""
    if device.type != "cpu":
        return device.type
    return "cpu_native_bf16" if hardware.cpu_has_native_bf16() else ""


def train_throughput(repeats: int = 5, targets: tuple[str, ...] = TARGETS, threads: tuple[int, ...] = (1, 2),
                     device: str = "cpu", precision: str = "auto", record: bool = False) -> str:
    """Meta-training tasks per second of the shipped configuration (preset ``frozen-base-prototypes``,
    24 rotated classes, meta-batch 4 of 4-way 50-sketch/10-support/15-query tasks), interleaved over
    ``threads`` × precisions (``precision`` and float32; bf16 too where it is native)."""
    device = hardware.resolve_device(device)
    lines = [f"meta-training, median of {repeats} interleaved steps of 4 tasks, {hardware.describe(device, precision)}"]
    entries = {}
    precisions = dict.fromkeys([precision, "fp32"] + (["bf16"] if _bf16_is_native(device) else []))
    for target in targets:
        steps = {(p, t): step_function(target, device, p, t) for p in precisions for t in threads}
        seconds = time_interleaved(steps, repeats)
        tasks = {key: 4 / value for key, value in seconds.items()}
        lines.append(f"  {target}: " + "   ".join(f"{p} {t} thread(s) {v:.2f} tasks/s" for (p, t), v in tasks.items()))
        entries.update(_throughput_entries(target, tasks, precision, threads))
    if record:
        _record(entries, device)
    return "\n".join(lines)


def step_function(target: str, device: torch.device, precision: str, threads: int) -> Callable:
    """One meta-training step of its own trainer (own model, own episodes) at ``threads`` threads."""
    import tempfile

    from .data import datasets
    from .data.store import with_rotated_classes
    from .train import TrainConfig, Trainer

    store, classes = with_rotated_classes(datasets.fashion_mnist("train"), [0, 1, 2, 3, 4, 5])
    config = TrainConfig(train_classes=classes, precision=precision, device=str(device), validate_every=0)
    torch.manual_seed(0)
    net = PudNet(PudNetConfig.preset(SHIPPED_PRESET, target=target, num_train_classes=len(classes)))
    trainer = Trainer(net, config, tempfile.mkdtemp(prefix="pudnet-bench-"), store)

    def step() -> None:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            trainer.train_step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        finally:
            torch.set_num_threads(previous)

    step.trainer = trainer
    return step


def _throughput_entries(target: str, tasks: dict, precision: str, threads: tuple[int, ...]) -> dict:
    from .report import figure

    command, most = command_line(), max(threads)
    unit = f"meta-training tasks/s, shipped configuration ({SHIPPED_PRESET}, 24 classes), {target}"
    entries = {
        f"train.tasks_per_s.{target}.{most}_threads": figure(
            tasks[(precision, most)], f"{unit}, {most} threads, precision {precision}", "target",
            THROUGHPUT_TARGET[target], command),
        f"train.tasks_per_s.{target}.default_vs_fp32": figure(
            tasks[(precision, most)], f"{unit}, {most} threads, precision {precision}", "float32",
            tasks[("fp32", most)], command),
    }
    if len(threads) > 1:
        entries[f"train.tasks_per_s.{target}.{most}_vs_{min(threads)}_threads"] = figure(
            tasks[(precision, most)], f"{unit}, {most} threads", f"{min(threads)} thread(s)",
            tasks[(precision, min(threads))], command)
    if ("bf16", most) in tasks:
        entries[f"train.tasks_per_s.{target}.bf16_vs_fp32"] = figure(
            tasks[("bf16", most)], f"{unit}, {most} threads, bf16 (native here)", "float32",
            tasks[("fp32", most)], command)
    return entries


def profile_step(target: str = "convnet3", repeats: int = 3, device: str = "cpu", precision: str = "auto") -> dict:
    """Median seconds of each phase of one meta-training step of the shipped configuration, measured phase
    by phase: data (sample + gather), the hypernetwork's forward (sketch, AHRU, generators + finalise), the
    target's forward on every task (losses included), the target's backward (to the predicted weights), the
    hypernetwork's backward (from those gradients) and the optimizer step."""
    from .model.losses import task_losses

    device = hardware.resolve_device(device)
    step = step_function(target, device, precision, torch.get_num_threads())
    trainer, net = step.trainer, step.trainer.net
    global_ids = trainer.loss.global_ids  # a world of one: the loss module is not wrapped
    phases: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        phases.setdefault(name, []).append(time.perf_counter() - started)
        return out

    for _ in range(repeats + 1):
        tasks = timed("data", lambda: trainer.stream.batch(trainer.episode_indices()).to(device))
        labels = tasks.sketch_labels if net.config.sketch_support else None
        with hardware.autocast(device, precision):
            e = timed("sketch", lambda: net.embedding(tasks.sketch, labels))
            codes = timed("AHRU", lambda: net.layer_codes(e))
            weights = timed("generators", lambda: [net._finalise(i, raw) for i, raw in enumerate(net.generators(codes))])
            leaves = [w.detach().requires_grad_() for w in weights]
            loss = timed("target forward", lambda: torch.stack(
                [task_losses(net, net.params_of(leaves, b), tasks, b, global_ids).loss for b in range(len(tasks.sketch))]).mean())
        grads = timed("target backward", lambda: torch.autograd.grad(loss, leaves))
        trainer.optimizer.zero_grad(set_to_none=True)
        timed("hypernetwork backward", lambda: torch.autograd.backward(weights, grads))
        timed("optimizer", trainer.optimizer.step)
    return {name: statistics.median(values[1:]) for name, values in phases.items()}


def format_profile(target: str, shares: dict[str, float]) -> str:
    total = sum(shares.values())
    lines = [f"{target}: one step of 4 tasks, {1000 * total:.0f} ms (phases timed one by one)"]
    lines += [f"  {name:<22} {1000 * s:8.1f} ms  {100 * s / total:5.1f}%" for name, s in shares.items()]
    return "\n".join(lines)
