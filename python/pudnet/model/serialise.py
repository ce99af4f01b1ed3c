"""PudNet's checkpoint format: the model's tensors (plus, in a training state, the optimizer / RNG tensors
under :data:`TRAINING`) in one safetensors file, with the config and any extra metadata as JSON.

The public entry points are :class:`~pudnet.model.pudnet.PudNet`'s ``save_pretrained``, ``from_pretrained``
and ``read_checkpoint``. PudNet imports this module, so this module never imports PudNet: the functions
that build a network take ``build`` (the class, or any callable config → module).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..checkpoint import CheckpointError, as_float16, atomic_save, check_state, read_metadata, read_safetensors
from ..ops import NonFiniteError, check_finite
from .config import REMOVED, PudNetConfig

FORMAT = "pudnet-checkpoint-v2"
FORMATS = ("pudnet-checkpoint-v1", FORMAT)  # read; format 1 is migrated (:func:`migrated_config`)
TRAINING = "training/"  # prefix of the optimizer / RNG tensors a training state adds to the model's
MAX_PARAMETERS = 2_000_000_000  # numbers in a PudNet's state (8 GB of float32): a hostile config stops here

Build = Callable[[PudNetConfig], nn.Module]


@dataclass
class Checkpoint:
    """A checkpoint file's contents, validated: the model's tensors, a training state's extra tensors (without
    the :data:`TRAINING` prefix; empty for a plain model file) and the extra metadata."""

    config: PudNetConfig
    model: dict[str, torch.Tensor]
    training: dict[str, torch.Tensor]
    extra: dict


def save(net: nn.Module, path: str | os.PathLike, training: dict[str, torch.Tensor] | None = None,
         half: bool = False, **extra: object) -> None:
    """Write ``net`` (its ``config`` and tensors, plus ``training`` under :data:`TRAINING`) and the JSON
    ``extra`` metadata as one file, atomically; refuses with :class:`NonFiniteError` a NaN or infinite tensor.
    ``half``: the model's float32 tensors are stored as float16 (half the file; :func:`read` gives them back
    as float32)."""
    model = as_float16(net.state_dict()) if half else net.state_dict()
    tensors = {**model, **{TRAINING + k: v for k, v in (training or {}).items()}}
    check_finite(tensors, f"{path}: not saved")
    metadata = {"format": FORMAT, "config": json.dumps(net.config.to_dict())}
    metadata.update({k: json.dumps(v) for k, v in extra.items()})
    atomic_save(tensors, path, metadata)


def read(build: Build, path: str | os.PathLike, target: str | None = None) -> Checkpoint:
    """The validated contents of the checkpoint at ``path`` for a model made by ``build`` (``target`` checks
    the architecture); no model is built, and nothing but the file's own tensors is allocated."""
    tensors, metadata = read_safetensors(path)
    config = _config_of(path, metadata)
    if target is not None and config.target != target:
        raise CheckpointError(
            f"{path}: a checkpoint for target {config.target!r}, but {target!r} was asked for"
        )
    model = {k: v.float() if v.dtype == torch.float16 else v  # stored half (``save(half=True)``)
             for k, v in tensors.items() if not k.startswith(TRAINING)}
    training = {k[len(TRAINING):]: v for k, v in tensors.items() if k.startswith(TRAINING)}
    check_state(expected_state(build, config, path), model, str(path))
    try:
        check_finite(model, str(path))
    except NonFiniteError as e:
        raise CheckpointError(str(e)) from None
    return Checkpoint(config, model, training, _extra_of(path, metadata))


def read_config(path: str | os.PathLike) -> PudNetConfig:
    """The config of the checkpoint at ``path``, from its header alone."""
    return _config_of(path, read_metadata(path))


def expected_state(build: Build, config: PudNetConfig, path: str | os.PathLike = "<config>"
                   ) -> dict[str, torch.Tensor]:
    """The state dict ``build(config)`` has, as shapes only (meta tensors: no memory is allocated)."""
    with torch.device("meta"):
        state = build(config).state_dict()
    numbers = sum(t.numel() for t in state.values())
    if numbers > MAX_PARAMETERS:
        raise CheckpointError(f"{path}: the config asks for {numbers:,} parameters (at most {MAX_PARAMETERS:,})")
    return state


def migrated_config(data: dict, path: str | os.PathLike) -> dict:
    """A format-1 config as format 2 has it: the removed experiment switches (:data:`REMOVED`) dropped where
    they were off; a checkpoint that used one is refused (its numbers are in benchmarks/NOTES.md)."""
    used = {k: data[k] for k, off in REMOVED.items() if k in data and data[k] != off}
    if used:
        raise CheckpointError(f"{path}: the checkpoint uses {used}, experiments removed from pudnet (null results, "
                              "benchmarks/NOTES.md); load it with the pudnet of its commit")
    return {k: v for k, v in data.items() if k not in REMOVED}


def _config_of(path: str | os.PathLike, metadata: dict[str, str]) -> PudNetConfig:
    if metadata.get("format") not in FORMATS:
        raise CheckpointError(f"{path}: not a PudNet checkpoint (format {metadata.get('format')!r})")
    try:
        data = json.loads(metadata["config"])
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        if metadata["format"] != FORMAT:
            data = migrated_config(data, path)
        return PudNetConfig.from_dict(data)
    except KeyError:
        raise CheckpointError(f"{path}: the checkpoint has no PudNet config") from None
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: invalid PudNet config in the checkpoint: {e}") from None


def _extra_of(path: str | os.PathLike, metadata: dict[str, str]) -> dict:
    extra = {}
    for key, text in metadata.items():
        if key in ("format", "config"):
            continue
        try:
            extra[key] = json.loads(text)
        except ValueError:
            raise CheckpointError(f"{path}: metadata field {key!r} is not valid JSON") from None
    return extra
