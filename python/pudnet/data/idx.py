"""Pure-Python reader of IDX files (MNIST, Fashion-MNIST), gzip or raw."""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from .store import DataError

_DTYPES = {0x08: np.uint8}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX array (unsigned-byte data only), from a raw or gzip-compressed file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip stream ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic {raw[:4].hex()})")
    if raw[2] not in _DTYPES:
        raise DataError(f"{path}: unsupported IDX element type 0x{raw[2]:02x} (only unsigned byte)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    count = int(np.prod(dims, dtype=object))
    if len(raw) - header != count:
        raise DataError(
            f"{path}: truncated or oversized IDX data: dimensions {dims} need {count} bytes, "
            f"the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
