"""Checkpoints: safetensors tensors plus JSON metadata, written atomically, loaded without pickle."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .model.pudnet import PudNet, PudNetConfig

FORMAT = "pudnet-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint is missing, not safetensors, not PudNet's, or of another architecture."""


def atomic_save(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """Write a safetensors file so that ``path`` holds either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is an ordinary readable file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, or a :class:`CheckpointError` naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for every malformed header
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    return tensors, metadata


def save_checkpoint(net: PudNet, path: str | os.PathLike, **extra: object) -> None:
    metadata = {"format": FORMAT, "config": json.dumps(net.config.to_dict())}
    metadata.update({k: json.dumps(v) for k, v in extra.items()})
    atomic_save(net.state_dict(), path, metadata)


def load_checkpoint(path: str | os.PathLike, target: str | None = None) -> tuple[PudNet, dict]:
    """The PudNet stored at ``path`` (and its extra metadata); ``target`` checks the architecture."""
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a PudNet checkpoint (format {metadata.get('format')!r})")
    try:
        config = PudNetConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: invalid PudNet config in the checkpoint ({e})") from None
    if target is not None and config.target != target:
        raise CheckpointError(
            f"{path}: a checkpoint for target {config.target!r}, but {target!r} was asked for"
        )
    net = PudNet(config)
    check_state(net.state_dict(), tensors, str(path))
    net.load_state_dict(tensors, strict=True)
    extra = {k: json.loads(v) for k, v in metadata.items() if k not in ("format", "config")}
    return net.eval(), extra


def check_state(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], where: str) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = [k for k in expected if k in found and expected[k].shape != found[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(
            part for part in (
                f"missing {missing[:5]}" if missing else "",
                f"unexpected {unexpected[:5]}" if unexpected else "",
                "shape mismatch " + ", ".join(
                    f"{k}: {list(found[k].shape)} != {list(expected[k].shape)}" for k in wrong[:5]
                ) if wrong else "",
            ) if part
        )
        raise CheckpointError(f"{where}: the tensors do not match the architecture ({detail})")
