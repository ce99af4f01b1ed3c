"""What the baselines share: the training/validation split of the training classes, parameter dicts in the
target's spec names, the validation score used for model selection, and the weight files."""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import CheckpointError, as_float16, atomic_save, read_safetensors
from .. import hardware
from ..ops import check_finite
from ..data.episodes import EpisodeStream
from ..data.sampler import EpisodeSpec
from ..data.store import ImageStore, hold_out
from ..targets import make_target
from ..targets.base import Params, Target

FORMAT = "pudnet-baseline-v1"
TRAIN_CLASSES = [0, 1, 2, 3, 4, 5]
DEFAULT_TARGET = {"name": "convnet3", "in_channels": 1, "image_size": 28, "width": 64}


def default_target() -> Target:
    """ConvNet-3, width 64, one channel, 28 px: the target of the shipped baseline weights."""
    config = dict(DEFAULT_TARGET)
    return make_target(config.pop("name"), **config)


def target_from_config(config: dict) -> Target:
    config = dict(config)
    return make_target(config.pop("name"), **config)


def split_train_val(
    store: ImageStore, classes: list[int], val_fraction: float = 0.1
) -> tuple[ImageStore, ImageStore]:
    """Training and validation images of ``classes``: :func:`pudnet.data.store.hold_out`, the same held-out
    images as PudNet's own validation (:func:`pudnet.train.holdout_split`)."""
    return hold_out(store, classes, val_fraction)


def params_from_module(module: nn.Module, target: Target) -> Params:
    """The module's parameters under the target's spec names (float32, detached copies, spec order)."""
    state = module.state_dict()
    return {spec.name: state[spec.name].detach().float().clone() for spec in target.specs()}


def load_params_into(module: nn.Module, params: Params) -> None:
    with torch.no_grad():
        named = dict(module.named_parameters())
        for name, value in params.items():
            named[name].copy_(value)


def check_params(params: Params, target: Target, where: str = "params") -> None:
    expected = {spec.name: spec.shape for spec in target.specs()}
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    wrong = [k for k in expected if k in params and tuple(params[k].shape) != expected[k]]
    if missing or extra or wrong:
        raise CheckpointError(
            f"{where}: does not match target {target.config()} (missing {missing[:4]}, unexpected "
            f"{extra[:4]}, wrong shapes {wrong[:4]})"
        )


@dataclass
class Validation:
    """Model selection on held-out images of the TRAINING classes, scored exactly like the evaluation
    protocol (4-way groups; BatchNorm statistics from the group's dataset; cosine to centroids of 10
    labelled per class). Sketch and query images both come from the held-out store, disjoint."""

    store: ImageStore
    classes: list[int]
    groups: int = 40
    seed: int = 7
    spec: EpisodeSpec = EpisodeSpec(4, 100, 10, 50)

    def __post_init__(self):
        stream = EpisodeStream(self.store, self.classes, self.spec, self.seed)
        self.tasks = [stream.batch([g]) for g in range(self.groups)]

    @torch.no_grad()
    def score(self, target: Target, params: Params, precision: str = "auto") -> float:
        """Mean top-1 (fraction) over the validation groups."""
        from ..evaluate import accuracy_with

        with hardware.autocast("cpu", precision):
            scores = [accuracy_with(target, params, tasks, 0) for tasks in self.tasks]
        return float(np.mean(scores))


def command_line() -> str:
    return "python -m pudnet.baselines " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def save_baseline(params: Params, path: str | os.PathLike, name: str, target: Target, info: dict,
                  half: bool = False) -> None:
    """Write ``params`` (spec names) as safetensors with metadata naming the baseline, the target config,
    the training configuration, the command and the validation figures; ``half``: stored as float16
    (:func:`load_baseline` gives float32 back)."""
    check_params(params, target)
    if half:
        params = as_float16(params)
        check_finite(params, f"{path}: not saved (float16 cannot hold a value)")
    metadata = {"format": FORMAT, "baseline": name, "target": json.dumps(target.config())}
    metadata.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in info.items()})
    atomic_save(params, path, metadata)


def load_baseline(path: str | os.PathLike, target: Target | None = None, name: str | None = None
                  ) -> tuple[Params, dict]:
    """Params and metadata of a baseline weight file; checks the format, the baseline's name and that its
    target config (and every tensor shape) match ``target``."""
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pudnet baseline file (format {metadata.get('format')!r})")
    if name is not None and metadata.get("baseline") != name:
        raise CheckpointError(f"{path}: holds baseline {metadata.get('baseline')!r}, not {name!r}")
    stored = json.loads(metadata["target"])
    if target is None:
        target = target_from_config(stored)
    elif target.config() != stored:
        raise CheckpointError(f"{path}: weights for target {stored}, but {target.config()} was asked for")
    check_params(tensors, target, str(path))
    return {spec.name: tensors[spec.name].float() for spec in target.specs()}, metadata


def resolve(path: str | os.PathLike) -> Path:
    return Path(path).expanduser()
