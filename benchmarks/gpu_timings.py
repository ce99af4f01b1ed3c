"""GPU timings for ``benchmarks/gpu_check.sh``, recorded in ``benchmarks/results/summary.json`` (pudnet.report):

- the hot-path kernels (``pudnet.bench_kernels.run_kernel_bench``): Triton vs eager vs torch.compile(eager)
  for the AHRU recurrence and the weight generators, forward and forward+backward, meta-batch 1 and 16,
  ConvNet-3 / ResNet-18 / ResNet-34 sizes (keys ``kernels.*``);
- end to end, with the Triton hot path (the custom ops' CUDA kernels) against the eager one
  (``hotpath.use_triton(False)``): a meta-training step (loss, backward, Adam; bf16 autocast) and a prediction
  of the weights for a 400-image dataset (``PudNet.predict_weights``), ConvNet-3 and ResNet-18 (keys
  ``gpu.train_step_ms.*``, ``gpu.predict_weights_ms.*``).

Self-contained on purpose: it moves the PudNet and its synthetic tasks to the GPU itself (no dataset files, no
device handling of ``pudnet.train`` needed); the timings do not depend on the images' content.

    python benchmarks/gpu_timings.py [--budget-s 150] [--record | --summary-json PATH]
    python benchmarks/gpu_timings.py --dry-run [--summary-json PATH]

Records only when asked: ``--record`` (into benchmarks/results/summary.json) or ``--summary-json PATH``.
``--dry-run``: the same code on a tiny configuration on whatever device there is (no GPU: the kernel counts
in Triton's interpreter, the end-to-end steps on CPU, where both paths are eager).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import torch

from pudnet.bench_kernels import run_kernel_bench
from pudnet.data.episodes import TaskBatch
from pudnet.data.sampler import EpisodeSpec
from pudnet.model import hotpath
from pudnet.model.losses import meta_batch_losses
from pudnet.model.config import PudNetConfig
from pudnet.model.pudnet import PudNet
from pudnet.report import SUMMARY, figure, merge_summary

TARGETS = ("convnet3", "resnet18")
SPEC = EpisodeSpec(ways=4, sketch=50, support=10, query=15)  # pudnet.train.TrainConfig's defaults
META_BATCH, DATASET_IMAGES = 4, 400
COMMAND = "benchmarks/gpu_check.sh"


def random_images(net: PudNet, *batch: int, gen: torch.Generator) -> torch.Tensor:
    """Random images ``[*batch, C, H, W]`` of the target's input shape."""
    size = net.config.target_kwargs.get("image_size", 28)
    return torch.rand(*batch, net.target.in_channels, size, size, generator=gen)


def synthetic_tasks(net: PudNet, meta_batch: int, spec: EpisodeSpec, device: torch.device) -> TaskBatch:
    """``meta_batch`` tasks of random images, on ``device``."""
    gen = torch.Generator().manual_seed(0)
    images = lambda n: random_images(net, meta_batch, n, gen=gen).to(device)  # noqa: E731
    classes = torch.stack([torch.randperm(net.config.num_train_classes, generator=gen)[: spec.ways]
                           for _ in range(meta_batch)])
    return TaskBatch(images(spec.ways * spec.sketch), images(spec.ways * spec.query), classes.to(device), spec)


def train_step(net: PudNet, tasks: TaskBatch):
    """One meta-training step as ``pudnet.train.Trainer`` takes it: the losses (under bf16 autocast on CUDA),
    backward, Adam."""
    device = tasks.sketch.device
    global_ids = torch.arange(net.config.num_train_classes, device=device)  # the tasks' classes are 0..K-1
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = meta_batch_losses(net, tasks, global_ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def wall_ms(fn) -> float:
    """One call of ``fn`` in ms, the device synchronised before and after."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    started = time.perf_counter()
    fn()
    sync()
    return (time.perf_counter() - started) * 1e3


def triton_vs_eager(fn, reps: int, warmup: int = 2) -> dict[str, float]:
    """``fn``'s median ms with the hot path's Triton kernels (the ops' normal dispatch) and with its eager
    reference, alternated so that the machine's slow moments fall on both."""
    paths = {"triton": contextlib.nullcontext, "eager": lambda: hotpath.use_triton(False)}
    times: dict[str, list[float]] = {path: [] for path in paths}
    for i in range(warmup + reps):
        for path, kernels in paths.items():
            with kernels():
                ms = wall_ms(fn)
            if i >= warmup:
                times[path].append(ms)
    return {path: statistics.median(values) for path, values in times.items()}


def end_to_end(targets, device: torch.device, meta_batch: int, images: int, reps: int, log=print) -> dict:
    """``{summary key: figure}`` for a meta-training step and a prediction per target."""
    entries = {}
    vs = "the same with the eager hot path (hotpath.use_triton(False))"
    for target in targets:
        net = PudNet(PudNetConfig(target=target)).to(device)
        tasks = synthetic_tasks(net, meta_batch, SPEC, device)
        ms = triton_vs_eager(train_step(net.train(), tasks), reps)
        precision = "bf16 autocast" if device.type == "cuda" else "float32"
        entries[f"gpu.train_step_ms.{target}.B{meta_batch}"] = figure(
            ms["triton"], f"ms per meta-training step on {device.type} (loss, backward, Adam; meta-batch "
            f"{meta_batch}, {SPEC.ways}-way, {SPEC.sketch} sketch + {SPEC.query} query images per class; "
            f"{precision}), Triton hot path", vs, ms["eager"], COMMAND)
        log(f"  {target} train step B={meta_batch}: triton {ms['triton']:.2f} ms, eager {ms['eager']:.2f} ms")
        del tasks
        data = random_images(net.eval(), images, gen=torch.Generator().manual_seed(1)).to(device)
        ms = triton_vs_eager(lambda: net.predict_weights(data), reps)
        entries[f"gpu.predict_weights_ms.{target}"] = figure(
            ms["triton"], f"ms per prediction of the weights on {device.type} (PudNet.predict_weights, "
            f"{images}-image dataset, default precision), Triton hot path", vs, ms["eager"], COMMAND)
        log(f"  {target} predict_weights ({images} images): triton {ms['triton']:.2f} ms, "
            f"eager {ms['eager']:.2f} ms")
        del net, data
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary-json", default=None, help="record into this JSON file")
    parser.add_argument("--record", action="store_true", help=f"record into {SUMMARY}")
    parser.add_argument("--budget-s", type=float, default=150.0,
                        help="seconds after which the kernel benchmark skips its torch.compile timings")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on any device (see the docstring)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("gpu_timings: no CUDA device visible — nothing to time (--dry-run checks the code on CPU)")
        return 1
    summary = args.summary_json or (SUMMARY if args.record else None)
    device = torch.device("cuda" if cuda else "cpu")
    print(f"gpu_timings on {device}{' (dry run)' if args.dry_run else ''}")
    kernel_targets = ("convnet3",) if args.dry_run else ("convnet3", "resnet18", "resnet34")
    run_kernel_bench(targets=kernel_targets, batches=(1,) if args.dry_run else (1, 16),
                     cpu_reps=1, summary_json=summary, command=COMMAND, budget_s=args.budget_s)
    print("\nend to end (Triton hot path vs eager hot path):")
    entries = end_to_end(("convnet3",) if args.dry_run else TARGETS, device, 1 if args.dry_run else META_BATCH,
                         32 if args.dry_run else DATASET_IMAGES, 1 if args.dry_run else 10)
    if summary:
        merge_summary(entries, summary)
        print(f"\nrecorded {len(entries)} end-to-end figures in {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
