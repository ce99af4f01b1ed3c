"""Type stub of ``pudnet._native``, the Rust core (hand written; see rust/src/lib.rs).

Use it through :mod:`pudnet.data.native`, which adds the Python reference fallback and re-raises
``DataError`` / ``TooFewImagesError`` as pudnet's own classes.
"""

from os import PathLike

import numpy as np
import numpy.typing as npt

__version__: str

class DataError(ValueError):
    """A data file or folder is missing or malformed (message: ``"<path>: <problem>"``)."""

class TooFewImagesError(ValueError):
    """A class holds fewer images than an episode needs."""

_Path = str | PathLike[str]
_U8 = npt.NDArray[np.uint8]
_I64 = npt.NDArray[np.int64]

def read_idx(path: _Path) -> _U8:
    """An IDX file (gzip or raw, unsigned-byte data) as an array of its dimensions."""

def parse_idx(data: bytes, name: str = "<bytes>") -> _U8:
    """IDX bytes held in memory; ``name`` is used in error messages."""

def load_idx(images_path: _Path, labels_path: _Path) -> tuple[_U8, _I64]:
    """Images ``[N, C, H, W]`` (``C = 1`` for ``[N, H, W]`` files) and labels ``[N]``."""

def read_cifar(paths: list[_Path], kind: str, label: str = "fine") -> tuple[_U8, _I64]:
    """CIFAR binary batches (``kind``: ``"cifar10"`` | ``"cifar100"``; ``label``: ``"fine"`` | ``"coarse"``),
    concatenated in order: images ``[N, 3, 32, 32]`` and labels ``[N]``."""

def parse_cifar(data: bytes, kind: str, label: str = "fine", name: str = "<bytes>") -> tuple[_U8, _I64]:
    """One CIFAR binary batch held in memory."""

def read_image_folder(
    root: _Path,
    size: tuple[int, int] | None = None,
    channels: int | None = None,
    progress: bool | None = None,
) -> tuple[_U8, _I64, list[str], list[str]]:
    """(images ``[N, C, H, W]``, labels ``[N]``, class names, files): one subfolder per class, PNG/JPEG
    decoded and resized to ``size = (H, W)`` in parallel; ``channels`` 1 or 3 (None: the files' own)."""

def decode_image(
    data: bytes, name: str = "<bytes>", size: tuple[int, int] | None = None, channels: int | None = None
) -> _U8:
    """One PNG/JPEG held in memory as ``[C, H, W]``."""

def gather(images: _U8, index: _I64) -> _U8:
    """``images[index]`` as a new C-contiguous array of shape ``index.shape + images.shape[1:]``."""

class Sampler:
    """The episodic sampler over fixed labels, class pool and spec (bit-identical to the reference)."""

    def __init__(
        self,
        labels: _I64,
        class_pool: list[int],
        ways: int,
        sketch: int,
        support: int,
        query: int,
        query_labels: _I64 | None = None,
    ) -> None: ...
    def episode(self, seed: int, index: int) -> tuple[_I64, _I64, _I64, _I64]:
        """(classes, sketch, support, query) of episode ``index`` of stream ``seed`` (both < 2**64)."""
    def episodes(self, seed: int, indices: npt.NDArray[np.uint64]) -> tuple[_I64, _I64, _I64, _I64]:
        """The same as ``[B, ...]`` arrays for many indices, drawn in parallel."""
    @property
    def class_pool(self) -> list[int]: ...
    @property
    def spec(self) -> tuple[int, int, int, int]: ...
    @property
    def separate_queries(self) -> bool: ...

def set_num_threads(n: int) -> None:
    """Worker threads of later parallel calls (0: the default)."""

def num_threads() -> int:
    """Worker threads parallel calls use now."""

def _panic_for_test(in_pool: bool) -> None:
    """Panics inside the guard: raises pyo3's PanicException (a BaseException). Only in builds with the
    ``test-hooks`` feature (``make test``)."""
