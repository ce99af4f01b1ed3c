"""Checkpoints shipped inside the package (see the README for the commands that produced them)."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).parent


def available() -> list[str]:
    return sorted(p.name.removesuffix(".safetensors") for p in HERE.glob("*.safetensors"))


def path_of(name_or_path: str | os.PathLike) -> Path:
    """The file of a shipped checkpoint name, or ``name_or_path`` itself when it is a path."""
    if name_or_path in available():
        return HERE / f"{name_or_path}.safetensors"
    path = Path(name_or_path)
    if path.suffix != ".safetensors" and not path.exists():
        raise ValueError(
            f"{name_or_path!r} is neither a shipped checkpoint ({', '.join(available()) or 'none'}) "
            f"nor an existing file"
        )
    return path
