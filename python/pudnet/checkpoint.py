"""Checkpoints: safetensors tensors plus JSON metadata, written atomically, loaded without pickle."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .hardware import resolve_device
from .model.pudnet import NonFiniteError, PudNet, PudNetConfig, check_finite

FORMAT = "pudnet-checkpoint-v1"
TRAINING = "training/"  # prefix of the optimizer / RNG tensors a training state adds to the model's
MAX_PARAMETERS = 2_000_000_000  # numbers in a PudNet's state (8 GB of float32): a hostile config stops here


class CheckpointError(ValueError):
    """A checkpoint is missing, not safetensors, not PudNet's, or of another architecture."""


def atomic_save(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """Write a safetensors file so that ``path`` holds either the old file or the complete new one (a killed
    write leaves a ``.NAME.*.tmp`` file, which :func:`remove_stale_temporaries` removes)."""
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


def remove_stale_temporaries(folder: str | os.PathLike, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_save` calls for ``names`` left in ``folder``."""
    stale = [p for name in names for p in Path(folder).glob(f".{name}.*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


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


def save_checkpoint(net: PudNet, path: str | os.PathLike, training: dict[str, torch.Tensor] | None = None,
                    **extra: object) -> None:
    """Write ``net`` (plus, for a training state, the ``training`` tensors under :data:`TRAINING`) and the JSON
    ``extra`` metadata as one file, atomically; refuses with :class:`NonFiniteError` a NaN or infinite tensor."""
    tensors = {**net.state_dict(), **{TRAINING + k: v for k, v in (training or {}).items()}}
    check_finite(tensors, f"{path}: not saved")
    metadata = {"format": FORMAT, "config": json.dumps(net.config.to_dict())}
    metadata.update({k: json.dumps(v) for k, v in extra.items()})
    atomic_save(tensors, path, metadata)


@dataclass
class Checkpoint:
    """A checkpoint file's contents, validated: the model's tensors, a training state's extra tensors (without
    the :data:`TRAINING` prefix; empty for a plain model file) and the extra metadata."""

    config: PudNetConfig
    model: dict[str, torch.Tensor]
    training: dict[str, torch.Tensor]
    extra: dict


def read_checkpoint(path: str | os.PathLike, target: str | None = None) -> Checkpoint:
    """The validated contents of the checkpoint at ``path`` (``target`` checks the architecture); no model is
    built, and nothing but the file's own tensors is allocated."""
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a PudNet checkpoint (format {metadata.get('format')!r})")
    config = _config_of(path, metadata)
    if target is not None and config.target != target:
        raise CheckpointError(
            f"{path}: a checkpoint for target {config.target!r}, but {target!r} was asked for"
        )
    model = {k: v for k, v in tensors.items() if not k.startswith(TRAINING)}
    training = {k[len(TRAINING):]: v for k, v in tensors.items() if k.startswith(TRAINING)}
    check_state(expected_state(config, path), model, str(path))
    try:
        check_finite(model, str(path))
    except NonFiniteError as e:
        raise CheckpointError(str(e)) from None
    return Checkpoint(config, model, training, _extra_of(path, metadata))


def load_checkpoint(path: str | os.PathLike, target: str | None = None, device: str | torch.device = "cpu"
                    ) -> tuple[PudNet, dict]:
    """The PudNet stored at ``path`` (and its extra metadata), moved to ``device`` (:func:`resolve_device`);
    ``target`` checks the architecture."""
    device = resolve_device(device)
    checkpoint = read_checkpoint(path, target)
    net = PudNet(checkpoint.config)
    net.load_state_dict(checkpoint.model, strict=True)
    net.to(device)
    return net.eval(), checkpoint.extra


def _config_of(path: str | os.PathLike, metadata: dict[str, str]) -> PudNetConfig:
    try:
        data = json.loads(metadata["config"])
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
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


def expected_state(config: PudNetConfig, path: str | os.PathLike = "<config>") -> dict[str, torch.Tensor]:
    """The state dict a PudNet of ``config`` has, as shapes only (meta tensors: no memory is allocated)."""
    with torch.device("meta"):
        state = PudNet(config).state_dict()
    numbers = sum(t.numel() for t in state.values())
    if numbers > MAX_PARAMETERS:
        raise CheckpointError(f"{path}: the config asks for {numbers:,} parameters (at most {MAX_PARAMETERS:,})")
    return state


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
