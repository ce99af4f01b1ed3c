"""Baselines of the evaluation protocol, each a callable ``TaskBatch -> params`` (the target's spec names)
that plugs into :meth:`pudnet.evaluate.Evaluator.run` (``baselines={name: callable}``) or into
:func:`evaluate_baselines`:

- ``pretrained``: the target trained with cross-entropy over the 6 training classes (head dropped);
- ``protonet``: the target trained episodically (ProtoNet) on tasks of the training classes;
- ``scratch_<adam|gc>_<E>ep_<10perclass|alldata>``: per group, the target trained from random init on the
  group's labelled images (:mod:`pudnet.baselines.scratch`), with its wall time per group.

Model selection of pretrained/ProtoNet uses only a validation split of the TRAINING classes (the last 10%
of each class's training-split images); the unseen classes 6–9 are never looked at.

Shipped weights (ConvNet-3, width 64, 1×28×28), in ``pudnet/baselines/weights/``, produced on 2 shared
CPU cores (one torch thread) with:

    nice -n 10 python -m pudnet.baselines train pretrained --threads 1 \
        --out python/pudnet/baselines/weights/pretrained-convnet3.safetensors
    nice -n 10 python -m pudnet.baselines train protonet --distance cosine --threads 1 \
        --out python/pudnet/baselines/weights/protonet-convnet3.safetensors
    # the alternative, not shipped (lower validation score: 87.20% vs cosine's 89.19%):
    nice -n 10 python -m pudnet.baselines train protonet --distance euclidean --threads 1 \
        --out runs/baselines/protonet-euclidean-convnet3.safetensors

Defaults: pretrained 3 epochs of Adam (lr 1e-3, batch 128, bf16 autocast on that AMX machine) over 32,400 images, validated
every half epoch (best: epoch 2.5, 92.33%; 236 s); ProtoNet 600 episodes of 4-way 50-sketch/10-support/
15-query tasks, cosine logits with learnable τ (ended at 14.1), validated every 100 episodes (best: the
last, 89.19%; 406 s). Validation = 40 four-way groups (100 images/class, 10 labelled, 50 queries) drawn
from the held-out last 10% of each training class. A random-init ConvNet-3 scores 78% there.

Each file's metadata holds the exact command, the training configuration, the wall time and the validation
history (``python -m pudnet.baselines info FILE`` prints them).
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import fields
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..checkpoint import CheckpointError

from ..data.store import ImageStore
from ..targets.base import Params, Target
from .common import (
    DEFAULT_TARGET, FORMAT, Validation, command_line, default_target, load_baseline, save_baseline,
    split_train_val,
)
from .pretrained import PretrainConfig, train_pretrained
from .protonet import ProtoNetConfig, train_protonet
from .scratch import ScratchBaseline, ScratchConfig, centralise_gradients

WEIGHTS = Path(__file__).parent / "weights"
TRAINED = {"pretrained": (PretrainConfig, train_pretrained), "protonet": (ProtoNetConfig, train_protonet)}

__all__ = [
    "FixedBaseline", "PretrainConfig", "ProtoNetConfig", "ScratchBaseline", "ScratchConfig", "Validation",
    "centralise_gradients", "default_target", "evaluate_baselines", "format_baselines", "load_baseline",
    "load_baselines", "save_baseline", "scratch_baselines", "shipped_path", "split_train_val",
    "train_baseline",
]


class FixedBaseline:
    """A baseline whose parameters do not depend on the group: ``__call__`` returns the same params."""

    def __init__(self, name: str, params: Params, metadata: dict | None = None):
        self.name, self.params, self.metadata = name, params, metadata or {}

    def __call__(self, tasks=None) -> Params:
        return self.params


def shipped_path(name: str, target: Target | None = None) -> Path:
    target = target or default_target()
    return WEIGHTS / f"{name}-{target.name}.safetensors"


def load_baselines(
    target: Target | None = None, *, weights_dir: str | os.PathLike | None = None,
    scratch_epochs: tuple[int, ...] = (), optional: tuple[str, ...] = (),
) -> dict[str, Callable]:
    """``{"pretrained": ..., "protonet": ...}`` from the shipped weights (or ``weights_dir``), each a
    callable ``TaskBatch -> params`` for :meth:`Evaluator.run`; plus Adam-from-scratch baselines on the
    protocol's 10 labelled per class for each of ``scratch_epochs``. A baseline named in ``optional`` whose
    file is missing is left out instead of an error."""
    target = target or default_target()
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS
    baselines: dict[str, Callable] = {}
    for name in TRAINED:
        path = folder / f"{name}-{target.name}.safetensors"
        if not path.is_file():
            if name in optional:
                continue
            raise FileNotFoundError(
                f"no {name} weights for target {target.config()} at {path}; the shipped files cover "
                f"{DEFAULT_TARGET}. Train them: python -m pudnet.baselines train {name} --target {target.name} "
                f"--out {path}"
            )
        try:
            params, metadata = load_baseline(path, target, name)
        except CheckpointError as e:
            raise CheckpointError(
                f"{e}. The shipped files cover {DEFAULT_TARGET}; for another target train the baseline with "
                f"pudnet.baselines.train_baseline({name!r}, OUT, target=..., store=...) and pass weights_dir"
            ) from None
        baselines[name] = FixedBaseline(name, params, metadata)
    baselines.update(scratch_baselines(target, epochs=scratch_epochs, labelled=("support",)))
    return baselines


def scratch_baselines(
    target: Target | None = None, epochs: tuple[int, ...] = (1, 5), labelled: tuple[str, ...] = ("support", "all"),
    optimisers: tuple[str, ...] = ("adam",), **overrides,
) -> dict[str, ScratchBaseline]:
    """One :class:`ScratchBaseline` per (optimiser, labelled set, epoch budget), keyed by its name."""
    target = target or default_target()
    out = {}
    for optimiser in optimisers:
        for which in labelled:
            for e in epochs:
                baseline = ScratchBaseline(target, ScratchConfig(e, optimiser, which, **overrides))
                out[baseline.name] = baseline
    return out


def train_baseline(
    name: str, out_path: str | os.PathLike | None = None, *, target: Target | None = None,
    store: ImageStore | None = None, progress: bool = True, command: str | None = None, half: bool = False,
    **overrides,
) -> tuple[Params, dict]:
    """Train ``pretrained`` or ``protonet`` (config fields as keyword overrides, e.g. ``epochs=3``,
    ``steps=600``, ``distance="euclidean"``) on the training classes of ``store`` (default: the
    Fashion-MNIST training split); write the weights to ``out_path`` when given (``half``: as float16).
    Returns (params, info)."""
    if name not in TRAINED:
        raise ValueError(f"unknown baseline {name!r}; trainable: {', '.join(TRAINED)}")
    config_cls, train = TRAINED[name]
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"{name}: unknown option(s) {unknown}; known: {sorted(known)}")
    config = config_cls(**overrides)
    target = target or default_target()
    if store is None:
        from ..data import datasets

        store = datasets.fashion_mnist("train")
    params, info = train(target, config, store, progress)
    info["command"] = command or f"pudnet.baselines.train_baseline({name!r}, ...)"
    info["date"] = time.strftime("%Y-%m-%d")
    info["torch"] = torch.__version__
    info["threads"] = torch.get_num_threads()
    if out_path is not None:
        save_baseline(params, out_path, name, target, info, half)
    return params, info


@torch.no_grad()
def evaluate_baselines(
    baselines: dict[str, Callable], config=None, train_store: ImageStore | None = None,
    test_store: ImageStore | None = None, target: Target | None = None, progress: bool = True,
) -> dict:
    """The evaluation protocol (:class:`pudnet.evaluate.Evaluator`'s groups, its random-init floor drawn
    in the same order, so the same numbers as ``pudnet eval``) for baselines only, without a PudNet.
    Returns accuracy mean ± 95% CI per method, per-group scores and per-group wall seconds of each
    baseline's call (training time for scratch; ~0 for fixed weights)."""
    from ..data import datasets
    from ..evaluate import EvalConfig, Evaluator, accuracy_with, mean_ci

    config = config or EvalConfig()
    target = target or default_target()
    train_store = train_store if train_store is not None else datasets.fashion_mnist("train")
    test_store = test_store if test_store is not None else datasets.fashion_mnist("test")
    evaluator = Evaluator(train_store, test_store, config)
    generator = torch.Generator().manual_seed(config.seed)
    scores: dict[str, list[float]] = {"random_init": [], **{name: [] for name in baselines}}
    seconds: dict[str, list[float]] = {name: [] for name in baselines}
    started = time.perf_counter()
    for g in tqdm(range(config.groups), desc="evaluating baselines", disable=not progress):
        tasks = evaluator.task(g)
        with evaluator.scoring():
            scores["random_init"].append(accuracy_with(target, target.random_params(generator), tasks, 0))
            for name, make_params in baselines.items():
                t0 = time.perf_counter()
                params = make_params(tasks)
                seconds[name].append(time.perf_counter() - t0)
                scores[name].append(accuracy_with(target, params, tasks, 0))
    result = {"groups": config.groups, "eval_config": vars(config).copy(), "accuracy": {}, "seconds": {},
              "scores": scores, "wall_s": round(time.perf_counter() - started, 1)}
    for name, values in scores.items():
        mean, ci = mean_ci([100 * v for v in values])
        result["accuracy"][name] = {"mean": mean, "ci95": ci}
    for name, values in seconds.items():
        result["seconds"][name] = {"median": statistics.median(values), "mean": statistics.fmean(values)}
    return result


def format_baselines(result: dict) -> str:
    lines = [f"{result['groups']} groups; top-1 % (± 95% CI); seconds per group (median)"]
    for name, acc in result["accuracy"].items():
        sec = result["seconds"].get(name)
        cost = f"{sec['median']:8.3f} s" if sec else "       –"
        lines.append(f"  {name:<34} {acc['mean']:6.2f} ± {acc['ci95']:.2f}   {cost}")
    return "\n".join(lines)
