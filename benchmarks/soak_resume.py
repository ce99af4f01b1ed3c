"""Soak test of crash-safe resume: SIGKILL a small meta-training run (real Fashion-MNIST, a tiny PudNet) at
random moments — anywhere, or while a checkpoint is being written — resume it after every kill, and compare
every state it leaves behind with an uninterrupted run's, bit for bit. ``--record`` writes ``resume_soak`` into
benchmarks/results/summary.json.

    ~/.cache/pudnet/venv/bin/python benchmarks/soak_resume.py [--kills 20] [--steps 100] [--seed 0] [--record]

A resumed run counts as bit-identical when the next state found on disk (after the next kill, or at the end)
equals the uninterrupted run's state of the same step in every tensor (model, optimizer, RNG) and the final
metrics repeat the uninterrupted losses exactly. ``corrupt``: run files that fail to load after a kill;
``orphaned``: temporary files that outlive a restart; ``resumed_runs``: the runs started with ``--resume`` (one
per kill unless a kill came before the first save).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = dict(embedding_dim=16, generator_hidden=4, sketch_width=4, sketch_dim=8,
             target_kwargs={"in_channels": 1, "image_size": 28, "width": 8})
TRAIN = dict(meta_batch=2, ways=3, sketch=6, support=2, query=3, checkpoint_every=1, log_every=1,
             validate_every=0, threads=1)
READY = "training"  # the worker's line once its imports and data are done
COMMAND = "python benchmarks/soak_resume.py"


def worker(out: str, steps: int, resume: bool, snapshots: str | None) -> None:
    """The training process: 200 images per Fashion-MNIST class; ``snapshots`` keeps a copy of every
    training state (the uninterrupted reference run)."""
    import numpy as np

    from pudnet.data import datasets
    from pudnet.model.config import PudNetConfig
    from pudnet.train import TRAIN_STATE, TrainConfig, Trainer, train

    store = datasets.fashion_mnist("train")
    store = store.subset(np.sort(np.concatenate([np.flatnonzero(store.labels == c)[:200] for c in range(10)])))
    if snapshots:
        save = Trainer.save

        def save_and_keep(self):
            save(self)
            shutil.copy(self.out_dir / TRAIN_STATE, Path(snapshots) / f"{self.step:06d}.safetensors")

        Trainer.save = save_and_keep
    print(READY, flush=True)
    train(PudNetConfig(**MODEL), TrainConfig(steps=steps, **TRAIN), out, resume=resume, store=store, progress=False)


def start(out: Path, steps: int, resume: bool = False, snapshots: Path | None = None) -> subprocess.Popen:
    command = [sys.executable, __file__, "--worker", str(out), "--steps", str(steps)]
    command += ["--resume"] * resume + (["--snapshots", str(snapshots)] if snapshots else [])
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    if process.stdout.readline().strip() != READY:
        process.wait()
        raise RuntimeError(f"the training worker failed to start (exit {process.returncode})")
    return process


def temporaries(folder: Path) -> set[str]:
    return {p.name for p in folder.glob(".*.tmp")}


def kill(process: subprocess.Popen, folder: Path, rng: random.Random, window_s: float, stale: set[str]) -> str:
    """SIGKILL ``process`` at a random moment of ``window_s``, or (every other kill, at random) as soon as one
    of its saves' temporary files appears; the moment it hit. ``stale``: the temporary files an earlier kill
    left, there until the worker's start removes them — not this process's saves."""
    mid_save, deadline = rng.random() < 0.5, time.perf_counter() + rng.uniform(0, window_s)
    while time.perf_counter() < deadline and process.poll() is None:
        if mid_save and temporaries(folder) - stale:
            break
        time.sleep(0.0005 if mid_save else 0.005)
    process.kill()
    process.wait()
    return "finished" if process.returncode == 0 else "mid-save" if temporaries(folder) - stale else "anywhere"


def state_of(path: Path) -> tuple[int, dict]:
    """The step and tensors of a checkpoint file (:class:`pudnet.checkpoint.CheckpointError` if unreadable)."""
    from pudnet.model.pudnet import PudNet

    state = PudNet.read_checkpoint(path)
    return state.extra["step"], {**state.model, **{f"training/{k}": v for k, v in state.training.items()}}


def same_as_reference(path: Path, snapshots: Path, model_only: bool = False) -> bool:
    import torch

    step, tensors = state_of(path)
    _, expected = state_of(snapshots / f"{step:06d}.safetensors")
    if model_only:
        expected = {k: v for k, v in expected.items() if not k.startswith("training/")}
    return tensors.keys() == expected.keys() and all(torch.equal(tensors[k], expected[k]) for k in tensors)


def losses(folder: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records]


def inspect(run: Path, snapshots: Path, counts: dict, resumed: bool) -> int:
    """Check the files a killed run left against the reference; the step of its training state (−1: none)."""
    from pudnet.checkpoint import CheckpointError
    from pudnet.train import CHECKPOINT, TRAIN_STATE

    if not (run / TRAIN_STATE).exists():
        return -1
    try:
        step, _ = state_of(run / TRAIN_STATE)
        counts["identical"] += resumed and same_as_reference(run / TRAIN_STATE, snapshots)
        if not (run / CHECKPOINT).exists():  # killed between the two writes of the run's first save
            counts["between_writes"] += 1
            return step
        counts["between_writes"] += step != state_of(run / CHECKPOINT)[0]
        counts["corrupt"] += not same_as_reference(run / CHECKPOINT, snapshots, model_only=True)
        return step
    except CheckpointError:
        counts["corrupt"] += 1
        return -1


def soak(kills: int, steps: int, seed: int, work: Path) -> dict:
    from pudnet.train import CHECKPOINT, TRAIN_STATE

    reference, run, snapshots = work / "reference", work / "run", work / "snapshots"
    snapshots.mkdir(parents=True)
    began = time.perf_counter()
    uninterrupted = start(reference, steps, snapshots=snapshots)
    trained = time.perf_counter()
    uninterrupted.wait()
    window_s = (time.perf_counter() - trained) / kills  # the kills take ~half the run's training time in all
    rng = random.Random(seed)
    counts = dict(kills=0, resumed_runs=0, identical=0, corrupt=0, orphaned=0, mid_save=0, between_writes=0)
    left_behind, last_step = set(), -1
    for _ in range(kills):
        resume = (run / TRAIN_STATE).exists()  # not before the first save
        stale = temporaries(run)
        moment = kill(start(run, steps, resume=resume), run, rng, window_s, stale)
        if moment == "finished":
            break
        counts["kills"] += 1
        counts["resumed_runs"] += resume
        counts["mid_save"] += moment == "mid-save"
        step = inspect(run, snapshots, counts, resumed=resume)
        if step > last_step:  # this restart got past its start (and its clean-up) and saved
            counts["orphaned"] += len(left_behind & temporaries(run))
        left_behind, last_step = temporaries(run), step
    resume = (run / TRAIN_STATE).exists()
    final = start(run, steps, resume=resume)
    final.wait()
    counts["resumed_runs"] += resume
    counts["orphaned"] += len(temporaries(run))
    final_same = (final.returncode == 0 and same_as_reference(run / TRAIN_STATE, snapshots)
                  and same_as_reference(run / CHECKPOINT, snapshots, model_only=True)
                  and losses(run) == losses(reference))
    counts["identical"] += resume and final_same
    return {**counts, "final_identical": final_same, "steps": steps, "seconds": round(time.perf_counter() - began, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", action="store_true", help="write the figures to benchmarks/results/summary.json")
    parser.add_argument("--no-record", action="store_true", help="the default: print the figures only")
    parser.add_argument("--worker", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--snapshots", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.resume, args.snapshots)
        return
    with tempfile.TemporaryDirectory(prefix="pudnet-soak-") as work:
        result = soak(args.kills, args.steps, args.seed, Path(work))
    print(json.dumps(result, indent=1))
    if args.record and not args.no_record:
        from pudnet.report import record_figure

        record_figure(
            "resume_soak", result["kills"], "SIGKILLs", "resumed runs bit-identical to an uninterrupted run",
            result["identical"], f"{COMMAND} --kills {args.kills} --steps {args.steps} --seed {args.seed} --record",
            **{k: v for k, v in result.items() if k not in ("kills", "identical")},
        )


if __name__ == "__main__":
    main()
