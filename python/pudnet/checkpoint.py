"""Checkpoint IO that knows no model: safetensors files written atomically and read without pickle, and the
check that a file's tensors match the state a model expects. PudNet's own format (config, training state)
is :mod:`pudnet.model.serialise`; the baselines' is :mod:`pudnet.baselines.common`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


class CheckpointError(ValueError):
    """A checkpoint is missing, not safetensors, not of the format asked for, or of another architecture."""


def as_float16(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` with every float32 one stored as float16 (half the file; readers give float32 back). A value
    float16 cannot hold becomes infinite, which the writers' finiteness check refuses."""
    return {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}


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


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` so that ``path`` holds either the old file or the complete new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary readable files
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
    return _read(path, with_tensors=True)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file (its header only: no tensor is read)."""
    return _read(path, with_tensors=False)[1]


def _read(path: str | os.PathLike, with_tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except Exception as e:  # safetensors raises its own error types for every malformed header
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    return tensors, metadata


def check_state(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], where: str) -> None:
    """A :class:`CheckpointError` at ``where`` unless ``found`` has exactly the names and shapes of ``expected``."""
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
