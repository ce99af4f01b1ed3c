"""What ``PudNet.predict`` accepts, turned into float tensors: a dataset as an :class:`ImageStore`, a uint8 or
float tensor or numpy array ``[N, C, H, W]``, or an image folder; labelled samples as an :class:`ImageStore`
or ``(images, labels)``. Labelled images that are also images of the dataset are counted once."""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import torch
from torch import Tensor

from .datasets import image_folder
from .store import ImageStore

Images = ImageStore | Tensor | np.ndarray | str | os.PathLike
Support = ImageStore | tuple


def images_of(data: object, channels: int, size: int | None, what: str = "data") -> Tensor:
    """``data`` as images ``[N, channels, H, W]``, floats in [0, 1] (uint8 divided by 255); a folder is read
    at ``size`` px (``None``: as stored) with ``channels`` channels. A clear error names what is wrong."""
    if isinstance(data, (str, os.PathLike)):
        data = image_folder(data, size=size, channels=channels)
    if isinstance(data, ImageStore):
        data = torch.from_numpy(np.ascontiguousarray(data.images))
    if isinstance(data, np.ndarray):
        if data.dtype == object or not (data.dtype == np.uint8 or np.issubdtype(data.dtype, np.floating)):
            raise TypeError(f"{what}: a numpy array of images must be uint8 or floats in [0, 1], got {data.dtype}")
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, Tensor):
        raise TypeError(f"{what}: expected an ImageStore, an image folder, or images [N, {channels}, H, W] as a "
                        f"tensor or numpy array, got {type(data).__name__}")
    return _checked(data, channels, what)


def _checked(images: Tensor, channels: int, what: str) -> Tensor:
    if images.dim() != 4 or images.shape[1] != channels:
        raise ValueError(f"{what}: images must be [N, {channels}, H, W] ({channels} channel(s)), got "
                         f"{list(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise TypeError(f"{what}: images must be uint8 or floats in [0, 1], got {images.dtype}")
    if bool(torch.isnan(images).any()):
        raise ValueError(f"{what}: the images contain NaN values")
    low, high = (float(v) for v in images.aminmax())
    if low < 0 or high > 1:
        raise ValueError(f"{what}: float images must lie in [0, 1], these span [{low:g}, {high:g}] "
                         "(divide 0–255 values by 255, or pass uint8)")
    return images.float()


def labelled_of(support: object, channels: int, size: int | None) -> tuple[Tensor, Tensor]:
    """The images of ``support`` (an ImageStore, or ``(images, labels)`` with any integer class ids) and
    their labels as class indices 0..K−1 in the order of the sorted class ids; at least 2 classes."""
    if isinstance(support, ImageStore):
        images, ids = images_of(support, channels, size, "support"), support.labels
    elif isinstance(support, tuple) and len(support) == 2:
        images, ids = images_of(support[0], channels, size, "support images"), support[1]
    else:
        raise TypeError("support must be an ImageStore (e.g. data.labelled(per_class=10)) or (images, labels), "
                        f"got {type(support).__name__}")
    ids = np.asarray(ids.cpu() if isinstance(ids, Tensor) else ids)
    if ids.shape != (len(images),) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"support: one integer label per image expected ({len(images)} images), got labels of "
                         f"dtype {ids.dtype} and shape {list(ids.shape)}")
    classes, labels = np.unique(ids, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"support: support needs at least 2 classes of labelled images, got {len(classes)}")
    return images, torch.from_numpy(labels.astype(np.int64))


def with_support(images: Tensor, support: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The dataset ``images`` with the ``support`` images labelled: a support image equal to an image of the
    dataset labels that image in place (it is counted once); the others are appended. Labels −1 = unlabelled."""
    if support.shape[1:] != images.shape[1:]:
        raise ValueError(f"support images are {list(support.shape[1:])}, the dataset's {list(images.shape[1:])}")
    positions = defaultdict(list)
    for i, key in enumerate(_keys(images)):
        positions[key].append(i)
    labels = labels.to(images.device)
    dataset_labels = torch.full((len(images),), -1, dtype=torch.long, device=images.device)
    extra = []
    for j, key in enumerate(_keys(support)):
        free = positions.get(key)
        if free:
            dataset_labels[free.pop(0)] = labels[j]
        else:
            extra.append(j)
    picked = torch.tensor(extra, dtype=torch.long, device=images.device)
    return torch.cat([images, support[picked]]), torch.cat([dataset_labels, labels[picked]])


def _keys(images: Tensor) -> list[bytes]:
    flat = images.detach().cpu().contiguous().flatten(1).numpy()
    return [row.tobytes() for row in flat]
