"""Grayscale natural-image patches from the photographs and textures bundled inside scikit-image.

The files are read straight from the installed package's ``skimage/data`` folder (``skimage.io.imread``),
never through ``skimage.data``'s fetchers, so nothing is ever downloaded (no pooch). Each source image is
one class: label = its index in :data:`NATURAL_IMAGES`, ``class_names`` = its name.

Used: the natural photographs (camera, astronaut, chelsea, coffee, coins, moon, rocket, motorcycle — the
left view of ``stereo_motorcycle``) and the natural textures (brick, grass, gravel). Left out:
synthetic or graphic images (chessboard, horse — a binary silhouette, logo, phantom, color), documents
(page, text), a deliberately motion-blurred photo (clock_motion), a near-duplicate (motorcycle_right),
microscopy and medical images (cell, ihc, retina, microaneurysms), a mostly black sky (hubble_deep_field,
mean 19/255) and tiny test files (multipage tifs, the gif, lfw_subset's 25×25 faces).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .store import DataError, ImageStore

#: class id → (name, file in ``skimage/data``)
NATURAL_IMAGES: tuple[tuple[str, str], ...] = (
    ("camera", "camera.png"),
    ("astronaut", "astronaut.png"),
    ("chelsea", "chelsea.png"),
    ("coffee", "coffee.png"),
    ("coins", "coins.png"),
    ("moon", "moon.png"),
    ("rocket", "rocket.jpg"),
    ("motorcycle", "motorcycle_left.png"),
    ("brick", "brick.png"),
    ("grass", "grass.png"),
    ("gravel", "gravel.png"),
)


def skimage_data_dir() -> Path:
    """The folder of the image files shipped inside the installed scikit-image."""
    try:
        import skimage.data
    except ImportError:
        raise DataError("natural patches need the PyPI package scikit-image: `pip install scikit-image`") from None
    return Path(skimage.data.__file__).parent


def natural_patches(size: int = 64, per_image: int = 50, seed: int = 0) -> ImageStore:
    """``per_image`` grayscale ``size``×``size`` patches of every image of :data:`NATURAL_IMAGES`, as an
    :class:`ImageStore` of uint8 ``[11·per_image, 1, size, size]``, one class per source image.

    Patches do not overlap while the image holds enough of them (a randomly offset grid of ``size``×``size``
    tiles, ``per_image`` tiles drawn without replacement); beyond that, the extra ones are at random positions.
    Deterministic from ``seed`` (each image has its own stream, so one image's patches do not depend on the
    others). Images are ordered by class, then by draw.
    """
    _check_args(size, per_image, seed)
    folder = skimage_data_dir()
    images, labels = [], []
    for label, (name, file) in enumerate(NATURAL_IMAGES):
        gray = load_gray(folder / file, name)
        rng = np.random.default_rng([seed, label])
        images.append(_cut(gray, _positions(gray.shape, size, per_image, rng, name), size))
        labels.append(np.full(per_image, label, dtype=np.int64))
    return ImageStore(np.ascontiguousarray(np.concatenate(images)[:, None]), np.concatenate(labels),
                      source=f"skimage-natural(size={size}, per_image={per_image}, seed={seed})",
                      class_names={i: name for i, (name, _) in enumerate(NATURAL_IMAGES)})


def load_gray(path: Path, name: str = "") -> np.ndarray:
    """A bundled image file as uint8 ``[H, W]`` (RGB → ``skimage.color.rgb2gray``, rounded)."""
    if not path.is_file():
        raise DataError(f"natural image {name or path.stem!r}: {path} is not in the installed scikit-image "
                        f"(it ships no such file); nothing is downloaded")
    from skimage.color import rgb2gray
    from skimage.io import imread

    image = imread(path)
    if image.ndim == 3:
        image = np.round(rgb2gray(image[..., :3]) * 255.0)
    if image.ndim != 2:
        raise DataError(f"{path}: expected a grayscale or RGB image, got shape {list(image.shape)}")
    return np.clip(image, 0, 255).astype(np.uint8)


def _check_args(size: int, per_image: int, seed: int) -> None:
    for name, value, low in (("size", size, 1), ("per_image", per_image, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _positions(shape: tuple[int, int], size: int, count: int, rng: np.random.Generator,
               name: str) -> np.ndarray:
    """``count`` top-left corners ``[count, 2]``: non-overlapping grid tiles first, then random ones."""
    h, w = shape
    if size > min(h, w):
        raise ValueError(f"size {size} exceeds natural image {name!r} of {h}×{w} pixels")
    rows, cols = h // size, w // size
    offset = rng.integers(0, h - rows * size + 1), rng.integers(0, w - cols * size + 1)
    grid = np.stack(np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij"), -1).reshape(-1, 2)
    tiles = grid[rng.permutation(len(grid))[:count]] * size + np.asarray(offset)
    extra = count - len(tiles)
    free = np.stack([rng.integers(0, h - size + 1, extra), rng.integers(0, w - size + 1, extra)], -1)
    return np.concatenate([tiles, free.reshape(-1, 2)]).astype(np.int64)


def _cut(image: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
    return np.stack([image[r:r + size, c:c + size] for r, c in corners])
