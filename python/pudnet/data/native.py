"""The native data path: the Rust core ``pudnet._native`` behind the signatures of the Python reference.

Every function here runs in Rust when the extension is importable and falls back to the pure-Python
reference otherwise, or when asked: ``PUDNET_NATIVE=0`` in the environment (read at each call), or
``use_native(False)`` in code. Results are identical either way (the Rust sampler reproduces
:mod:`pudnet.data.sampler` bit for bit); errors are pudnet's own :class:`~pudnet.data.store.DataError`
and :class:`~pudnet.data.sampler.TooFewImagesError` either way, with messages naming the file and the
problem.

Sampling episodes (what a training loop uses)::

    from pudnet.data import native
    from pudnet.data.sampler import EpisodeSpec

    sampler = native.Sampler(store.labels, class_pool, EpisodeSpec(ways=4, sketch=50, support=10, query=15),
                             seed)                        # class members are computed once, here
    episode = sampler.episode(i)                          # one Episode, == sample_episode(..., seed, i)
    batch = sampler.batch(range(i, i + 64))               # EpisodeBatch of [B, ...] index arrays (parallel)
    sketch = native.gather(store.images, batch.sketch)    # uint8 [B, ways*sketch, C, H, W], one call
    query = native.gather(store.images, batch.query)      #   (or the query store's images)
    labels = batch.labels("sketch")                       # [ways*sketch] episode labels (same every row)

Queries from another store: ``Sampler(labels, pool, spec, seed, query_labels=other.labels)``, then gather
``batch.query`` from ``other.images``. The same functions exist one call at a time with the reference's
signatures: :func:`sample_episode`, :func:`sample_episodes`. Episodes are pure functions of
``(seed, index)``, so any number of DataLoader workers or threads gives the same episodes; the Rust thread
pool is fork safe (a forked DataLoader worker gets a fresh pool) and a :class:`Sampler` pickles (spawned
workers rebuild it).

Loading data (numpy arrays over the Rust buffers, no copy; images uint8 ``[N, C, H, W]``, labels int64)::

    native.read_idx(path)                                 # any IDX array (gzip or raw); read_idx_bytes(data)
    native.load_idx(images_path, labels_path)             # (images, labels)
    native.read_cifar(paths, kind=None, label="fine")     # (images [N, 3, 32, 32], labels)
    native.read_image_folder(root, size=28, channels=1)   # (images, labels, class_names, files)

Other controls: :func:`enabled`, :func:`use_native`, :func:`set_num_threads` (or ``PUDNET_NUM_THREADS``).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import idx as _idx_ref
from .sampler import MASK64, Episode, EpisodeSpec, TooFewImagesError, class_members
from .sampler import sample_episode as _sample_episode_ref
from .store import DataError

try:
    from .. import _native
except ImportError as e:  # the extension is not built: the reference path only
    _native = None
    import_error: ImportError | None = e
else:
    import_error = None

#: Whether the extension imported (independent of the switch).
available: bool = _native is not None
_FORCE: bool | None = None

__all__ = [
    "EpisodeBatch", "Sampler", "available", "decode_image", "enabled", "gather", "load_idx", "parse_cifar",
    "read_cifar", "read_idx", "read_idx_bytes", "read_image_folder", "sample_batch", "sample_episode",
    "sample_episodes", "set_num_threads", "use_native",
]


def use_native(flag: bool | None) -> None:
    """Force the native path (True; raises if the extension is missing), the reference (False), or
    decide by ``PUDNET_NATIVE`` and availability (None, the default)."""
    global _FORCE
    if flag and _native is None:
        raise ImportError(f"pudnet._native is not built ({import_error}); run `make build`")
    _FORCE = flag


def enabled() -> bool:
    """Whether calls take the native path now."""
    if _native is None:
        return False
    if _FORCE is not None:
        return _FORCE
    return os.environ.get("PUDNET_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def set_num_threads(n: int) -> None:
    """Threads of the native parallel calls (0: ``PUDNET_NUM_THREADS``, ``RAYON_NUM_THREADS`` or the
    CPU count). Results never depend on it."""
    if _native is not None:
        _native.set_num_threads(int(n))


@contextlib.contextmanager
def _errors():
    """Re-raise the extension's exceptions as pudnet's own."""
    try:
        yield
    except _native.TooFewImagesError as e:
        raise TooFewImagesError(str(e)) from None
    except _native.DataError as e:
        raise DataError(str(e)) from None


# --------------------------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class EpisodeBatch:
    """Index arrays of B episodes, one row each, grouped by class in episode-label order within a row."""

    indices: np.ndarray  # [B] the episode indices (uint64)
    classes: np.ndarray  # [B, ways] original class ids
    sketch: np.ndarray  # [B, ways * sketch]
    support: np.ndarray  # [B, ways * support] (a prefix of each class's sketch images)
    query: np.ndarray  # [B, ways * query]

    def __len__(self) -> int:
        return len(self.classes)

    def labels(self, role: str) -> np.ndarray:
        """Episode labels of a role's columns (the same for every row)."""
        ways = self.classes.shape[1]
        return np.repeat(np.arange(ways), getattr(self, role).shape[1] // ways)

    def episode(self, row: int) -> Episode:
        return Episode(self.classes[row], self.sketch[row], self.support[row], self.query[row])

    def episodes(self) -> list[Episode]:
        return [self.episode(r) for r in range(len(self))]


def _u64(x) -> int:
    return int(x) & MASK64


def _indices_u64(indices: Iterable[int] | np.ndarray) -> np.ndarray:
    if isinstance(indices, range):
        indices = list(indices) if indices.stop > 2**62 or indices.start < 0 else np.arange(
            indices.start, indices.stop, indices.step, dtype=np.int64)
    arr = np.asarray(indices)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.dtype.kind in "iu":
        return np.ascontiguousarray(arr.astype(np.uint64, copy=False))
    if arr.dtype == object or arr.size == 0:
        return np.fromiter((_u64(i) for i in arr), dtype=np.uint64, count=arr.size)
    raise TypeError(f"episode indices must be integers, got {arr.dtype}")


def _labels_i64(labels) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(labels).reshape(-1), dtype=np.int64)


class Sampler:
    """Episodes of one stream ``seed`` over fixed labels, class pool and spec (members computed once).

    ``episode(i)`` equals the reference ``sample_episode(labels, class_pool, spec, seed, i, query_labels)``
    bit for bit; ``batch(indices)`` draws many in parallel (native) into ``[B, ...]`` arrays.
    """

    def __init__(self, labels, class_pool: Sequence[int], spec: EpisodeSpec, seed: int,
                 query_labels=None, *, native: bool | None = None):
        self.spec = spec
        self.seed = _u64(seed)
        self.class_pool = sorted(int(c) for c in class_pool)
        self.native = enabled() if native is None else bool(native)
        if self.native and _native is None:
            raise ImportError(f"pudnet._native is not built ({import_error})")
        labels = _labels_i64(labels)
        query_labels = None if query_labels is None else _labels_i64(query_labels)
        self._state = (labels, query_labels)
        if self.native:
            with _errors():
                self._impl = _native.Sampler(labels, self.class_pool, spec.ways, spec.sketch, spec.support,
                                             spec.query, query_labels)
        else:
            if len(self.class_pool) < spec.ways:
                raise ValueError(
                    f"the class pool holds {len(self.class_pool)} classes, an episode needs {spec.ways}")
            self._labels, self._query_labels = labels, query_labels
            self._members = class_members(labels)
            self._query_members = None if query_labels is None else class_members(query_labels)

    def __reduce__(self):  # picklable (spawned DataLoader workers, DDP): rebuilt from its inputs
        labels, query_labels = self._state
        return (_rebuild_sampler, (labels, self.class_pool, self.spec, self.seed, query_labels, self.native))

    def episode(self, index: int) -> Episode:
        if self.native:
            with _errors():
                return Episode(*self._impl.episode(self.seed, _u64(index)))
        return _sample_episode_ref(self._labels, self.class_pool, self.spec, self.seed, _u64(index),
                                   self._query_labels, members=self._members,
                                   query_members=self._query_members)

    def batch(self, indices: Iterable[int] | np.ndarray) -> EpisodeBatch:
        idx = _indices_u64(indices)
        if self.native:
            with _errors():
                return EpisodeBatch(idx, *self._impl.episodes(self.seed, idx))
        s = self.spec
        eps = []
        for i in idx.tolist():
            try:
                eps.append(self.episode(i))
            except TooFewImagesError as e:
                raise TooFewImagesError(f"episode {i}: {e}") from None
        stack = lambda role, w: (np.stack([getattr(e, role) for e in eps]) if eps  # noqa: E731
                                 else np.zeros((0, w), np.int64))
        return EpisodeBatch(idx, stack("classes", s.ways), stack("sketch", s.ways * s.sketch),
                            stack("support", s.ways * s.support), stack("query", s.ways * s.query))

    def episodes(self, indices: Iterable[int] | np.ndarray) -> list[Episode]:
        return self.batch(indices).episodes()


def _rebuild_sampler(labels, class_pool, spec, seed, query_labels, use_native):
    return Sampler(labels, class_pool, spec, seed, query_labels, native=use_native and _native is not None)


def sample_episode(labels, class_pool, spec: EpisodeSpec, seed: int, index: int, query_labels=None, *,
                   members=None, query_members=None) -> Episode:
    """Episode ``index`` of the stream ``seed`` (the reference signature; ``members``/``query_members``
    only matter on the reference path). In a loop, build a :class:`Sampler` once instead."""
    if not enabled():
        return _sample_episode_ref(labels, class_pool, spec, seed, index, query_labels, members=members,
                                   query_members=query_members)
    return Sampler(labels, class_pool, spec, seed, query_labels, native=True).episode(index)


def sample_episodes(labels, class_pool, spec: EpisodeSpec, seed: int, indices, query_labels=None
                    ) -> list[Episode]:
    """Episodes ``indices`` of the stream ``seed`` (drawn in parallel on the native path)."""
    return Sampler(labels, class_pool, spec, seed, query_labels).episodes(indices)


def sample_batch(labels, class_pool, spec: EpisodeSpec, seed: int, indices, query_labels=None
                 ) -> EpisodeBatch:
    """Episodes ``indices`` as one :class:`EpisodeBatch`."""
    return Sampler(labels, class_pool, spec, seed, query_labels).batch(indices)


def gather(images: np.ndarray, index_matrix) -> np.ndarray:
    """``images[index_matrix]`` as a new C-contiguous array of shape ``index.shape + images.shape[1:]``
    (e.g. ``[B, n, C, H, W]``), copied in parallel with the GIL released. Negative or out-of-range
    indices raise ``IndexError`` (no wrap-around)."""
    index = np.asarray(index_matrix)
    if index.dtype.kind not in "iu":
        raise TypeError(f"gather indices must be integers, got {index.dtype}")
    index = np.ascontiguousarray(index, dtype=np.int64)
    if enabled() and images.dtype == np.uint8:
        return _native.gather(np.ascontiguousarray(images), index)
    if index.size and (index.min() < 0 or index.max() >= len(images)):
        bad = index.reshape(-1)[(index.reshape(-1) < 0) | (index.reshape(-1) >= len(images))][0]
        raise IndexError(f"index {bad} is out of range for a store of {len(images)} images")
    return np.ascontiguousarray(images[index])


# ---------------------------------------------------------------------------------------------- loaders


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX array (unsigned bytes; gzip or raw), as :func:`pudnet.data.idx.read_idx`."""
    if not enabled():
        return _idx_ref.read_idx(path)
    with _errors():
        return _native.read_idx(os.fspath(path))


def read_idx_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """An IDX array from bytes held in memory (gzip or raw)."""
    if enabled():
        with _errors():
            return _native.parse_idx(bytes(data), name)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "data.idx")
        with open(path, "wb") as f:
            f.write(data)
        try:
            return _idx_ref.read_idx(path).copy()
        except DataError as e:
            raise DataError(str(e).replace(path, name)) from None


def load_idx(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, C, H, W]`` (``[N, H, W]`` files get ``C = 1``) and labels ``int64 [N]``."""
    if enabled():
        with _errors():
            return _native.load_idx(os.fspath(images_path), os.fspath(labels_path))
    images = _idx_ref.read_idx(images_path)
    labels = _idx_ref.read_idx(labels_path)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DataError(f"{images_path}: expected IDX images of 3 or 4 dimensions, got {images.ndim}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_path}: {list(labels.shape)} labels do not match {len(images)} images in {images_path}")
    return images, labels.astype(np.int64)


_CIFAR_RECORD = {"cifar10": 3073, "cifar100": 3074}


def cifar_kind(paths: Sequence[str | os.PathLike]) -> str:
    """``"cifar10"`` or ``"cifar100"`` from the standard file names, else from the file sizes."""
    names = [Path(p).name for p in paths]
    if all(re.fullmatch(r"(data_batch_\d+|test_batch)\.bin", n) for n in names):
        return "cifar10"
    if all(n in ("train.bin", "test.bin") for n in names):
        return "cifar100"
    sizes = []
    for p in paths:
        try:
            sizes.append(os.path.getsize(p))
        except OSError:
            raise DataError(f"{os.fspath(p)}: no such file") from None
    fits = [k for k, rec in _CIFAR_RECORD.items() if all(s and s % rec == 0 for s in sizes)]
    if len(fits) != 1:
        raise DataError(f"{os.fspath(paths[0])}: cannot tell CIFAR-10 from CIFAR-100 by name or size; "
                        f"pass kind='cifar10' or kind='cifar100'")
    return fits[0]


def _parse_cifar_ref(raw: bytes, name: str, kind: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    rec = _CIFAR_RECORD[kind]
    title = "CIFAR-10" if kind == "cifar10" else "CIFAR-100"
    if not raw:
        raise DataError(f"{name}: empty file, not a {title} binary batch")
    if len(raw) % rec:
        raise DataError(f"{name}: truncated or not a {title} binary batch: {len(raw)} bytes is not a whole "
                        f"number of {rec}-byte records")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, rec)
    checks = ([(0, 10, "label")] if kind == "cifar10" else [(0, 20, "coarse label"), (1, 100, "fine label")])
    for col, limit, what in checks:
        bad = np.flatnonzero(records[:, col] >= limit)
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{name}: record {i}: {what} {records[i, col]} out of range 0..{limit - 1} "
                            f"for {title}")
    col = 1 if kind == "cifar100" and label == "fine" else 0
    return records[:, rec - 3072:].reshape(-1, 3, 32, 32).copy(), records[:, col].astype(np.int64)


def read_cifar(paths: str | os.PathLike | Sequence[str | os.PathLike], kind: str | None = None,
               label: str = "fine") -> tuple[np.ndarray, np.ndarray]:
    """CIFAR binary batches, concatenated in the given order: images ``uint8 [N, 3, 32, 32]`` and labels.

    ``kind``: ``"cifar10"`` / ``"cifar100"`` (default: from the file names or sizes); ``label``: CIFAR-100's
    ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses) labels.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [os.fspath(p) for p in paths]
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
    if not paths:
        raise DataError("<cifar>: no batch files given")
    kind = kind or cifar_kind(paths)
    if kind not in _CIFAR_RECORD:
        raise ValueError(f"kind must be 'cifar10' or 'cifar100', got {kind!r}")
    if enabled():
        with _errors():
            return _native.read_cifar(paths, kind, label)
    parts = []
    for p in paths:
        try:
            raw = Path(p).read_bytes()
        except FileNotFoundError:
            raise DataError(f"{p}: no such file") from None
        except IsADirectoryError:
            raise DataError(f"{p}: is a directory, not a CIFAR binary batch") from None
        parts.append(_parse_cifar_ref(raw, p, kind, label))
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


def parse_cifar(data: bytes, kind: str, label: str = "fine", name: str = "<bytes>"
                ) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR binary batch held in memory (e.g. read from a tar archive)."""
    if enabled():
        with _errors():
            return _native.parse_cifar(bytes(data), kind, label, name)
    return _parse_cifar_ref(bytes(data), name, kind, label)


_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _size_hw(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    h, w = (int(s) for s in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return h, w


def read_image_folder(root: str | os.PathLike, size: int | tuple[int, int] | None = 28,
                      channels: int | None = 1, progress: bool | None = None
                      ) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """An image folder (one subfolder per class; PNG/JPEG files found recursively, in sorted order).

    Returns images ``uint8 [N, C, H, W]``, labels ``int64 [N]`` (class id = position of the subfolder's
    name in sorted order), the class names and the files in store order. ``size``: ``(H, W)`` or an int
    for square, every image resized with a bilinear (antialiased when downscaling) filter; ``None`` keeps
    the files' own size, which must then agree. ``channels``: 1 (grayscale, PIL's ``convert("L")``
    weights) or 3 (RGB); ``None`` keeps the files' own, which must then agree. ``progress``: a progress
    bar on stderr (``None``: for 2,000 files or more, when stderr is a terminal).
    """
    hw = _size_hw(size)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels!r}")
    if enabled():
        with _errors():
            images, labels, classes, files = _native.read_image_folder(os.fspath(root), hw, channels, progress)
        return images, labels, list(classes), list(files)
    return _read_image_folder_ref(root, hw, channels)


def _scan_ref(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    visible = lambda d: sorted(p for p in d.iterdir() if not p.name.startswith("."))  # noqa: E731
    class_dirs = [p for p in visible(root) if p.is_dir()]
    if not class_dirs:
        raise DataError(f"{root}: no class subfolders (expected one subfolder of images per class)")
    files: list[tuple[str, int]] = []

    def walk(d: Path, label: int, found: list):
        for p in visible(d):
            if p.is_dir():
                walk(p, label, found)
            elif p.suffix.lower() in _EXTENSIONS:
                found.append((str(p), label))

    for label, d in enumerate(class_dirs):
        found: list = []
        walk(d, label, found)
        if not found:
            raise DataError(f"{d}: empty class folder (no .png, .jpg or .jpeg images)")
        files += found
    return [d.name for d in class_dirs], files


def decode_image_ref(path, hw: tuple[int, int] | None, channels: int | None, name: str | None = None
                     ) -> np.ndarray:
    """The PIL reference decode of a file (path or binary file object): ``uint8 [C, H, W]`` (see
    :func:`read_image_folder`)."""
    from PIL import Image, UnidentifiedImageError

    name = name or str(path)
    try:
        with Image.open(path) as im:
            if im.format not in ("PNG", "JPEG"):
                raise DataError(f"{name}: unsupported image format {im.format} (PNG or JPEG only)")
            own = 1 if im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "F") else 3
            c = channels or own
            im = im.convert("L" if c == 1 else "RGB")
            if hw is not None and (im.height, im.width) != hw:
                im = im.resize((hw[1], hw[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{name}: undecodable image ({e})") from None
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _read_image_folder_ref(root, hw, channels):
    classes, files = _scan_ref(Path(root))
    decoded = []
    for path, _ in files:
        a = decode_image_ref(path, hw, channels)
        if decoded and a.shape[1:] != decoded[0].shape[1:]:
            raise DataError(f"{path}: mixed image sizes: this image is {a.shape[1]}x{a.shape[2]}, "
                            f"{files[0][0]} is {decoded[0].shape[1]}x{decoded[0].shape[2]} (pass size= to resize)")
        if decoded and a.shape[0] != decoded[0].shape[0]:
            raise DataError(f"{path}: mixed channel counts: this image has {a.shape[0]} channel(s), "
                            f"{files[0][0]} has {decoded[0].shape[0]} (pass channels=1 or 3 to convert)")
        decoded.append(a)
    images = np.stack(decoded)
    labels = np.asarray([label for _, label in files], dtype=np.int64)
    return images, labels, classes, [p for p, _ in files]


def decode_image(data: bytes, name: str = "<bytes>", size: int | tuple[int, int] | None = None,
                 channels: int | None = None) -> np.ndarray:
    """One PNG/JPEG held in memory, decoded like :func:`read_image_folder` does: ``uint8 [C, H, W]``."""
    hw = _size_hw(size)
    if enabled():
        with _errors():
            return _native.decode_image(bytes(data), name, hw, channels)
    import io

    return decode_image_ref(io.BytesIO(bytes(data)), hw, channels, name=name)
