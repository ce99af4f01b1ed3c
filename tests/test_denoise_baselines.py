"""Denoising baselines and the bundled natural-image patches: shapes, determinism, no downloads, each
baseline beating the noisy input on a smooth image, and errors that name the problem. Fast (seconds)."""

import math

import numpy as np
import pytest
import torch

from pudnet import datasets
from pudnet.baselines.denoise import bm3d_denoise, recompute_batchnorm, unet_from_scratch, zs_n2n_denoise
from pudnet.data import natural
from pudnet.data.natural import NATURAL_IMAGES, natural_patches
from pudnet.tasks.denoising import add_noise, psnr

SIGMA = 25.0


def smooth_images(n: int = 2, side: int = 32) -> torch.Tensor:
    """Gradients plus slow sinusoids, in [0.1, 0.9] (no clipping of the noise)."""
    grid = torch.linspace(0, 1, side)
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    images = [0.5 + 0.2 * (x - y) * (-1) ** i + 0.15 * torch.sin(2 * math.pi * (x + i * y)) for i in range(n)]
    return torch.stack(images)[:, None].clamp(0.1, 0.9)


@pytest.fixture(scope="module")
def clean_and_noisy():
    clean = smooth_images()
    return clean, add_noise(clean, SIGMA, torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------------------- natural patches


@pytest.fixture(scope="module")
def patches():
    return natural_patches(size=32, per_image=4, seed=0)


def test_natural_patches_shape_dtype_and_one_class_per_image(patches):
    count = len(NATURAL_IMAGES)
    assert patches.images.shape == (4 * count, 1, 32, 32) and patches.images.dtype == np.uint8
    assert patches.classes == list(range(count))
    assert np.array_equal(np.bincount(patches.labels), np.full(count, 4))
    assert patches.class_names == {i: name for i, (name, _) in enumerate(NATURAL_IMAGES)}
    assert {"camera", "astronaut", "brick", "grass", "gravel"} <= set(patches.class_names.values())
    assert not {"horse", "checkerboard", "chessboard", "text", "page", "logo"} & set(patches.class_names.values())
    assert (patches.images.reshape(len(patches), -1).std(axis=1) > 0).all()  # no blank patches


def test_natural_patches_are_deterministic_from_the_seed(patches):
    again = natural_patches(size=32, per_image=4, seed=0)
    assert np.array_equal(again.images, patches.images) and np.array_equal(again.labels, patches.labels)
    other = natural_patches(size=32, per_image=4, seed=1)
    assert not np.array_equal(other.images, patches.images)


def test_natural_patches_never_download(monkeypatch):
    import skimage.data._fetchers as fetchers

    def refuse(*args, **kwargs):
        raise AssertionError("natural_patches asked scikit-image to fetch a file")

    monkeypatch.setattr(fetchers, "_fetch", refuse)
    monkeypatch.setattr(fetchers, "_image_fetcher", None)
    assert len(natural_patches(size=8, per_image=1)) == len(NATURAL_IMAGES)
    folder = natural.skimage_data_dir()
    assert all((folder / file).is_file() for _, file in NATURAL_IMAGES)


def test_natural_patches_do_not_overlap_while_the_image_has_room():
    rng = np.random.default_rng(0)
    corners = natural._positions((512, 512), 64, 50, rng, "camera")
    assert len(corners) == 50 and len({tuple(c) for c in corners}) == 50
    rows, cols = corners[:, 0], corners[:, 1]
    apart = (np.abs(rows[:, None] - rows[None]) >= 64) | (np.abs(cols[:, None] - cols[None]) >= 64)
    assert apart[~np.eye(50, dtype=bool)].all()
    assert (corners >= 0).all() and (corners + 64 <= 512).all()
    crowded = natural._positions((100, 100), 64, 5, rng, "small")  # one tile, four at random positions
    assert len(crowded) == 5 and (crowded + 64 <= 100).all()


def test_natural_patches_is_exported_and_rejects_bad_arguments():
    assert datasets.natural_patches is natural_patches and "natural_patches" in datasets.__all__
    with pytest.raises(ValueError, match="size 1000 exceeds natural image"):
        natural_patches(size=1000, per_image=1)
    with pytest.raises(ValueError, match="per_image must be an integer >= 1"):
        natural_patches(per_image=0)


# ----------------------------------------------------------------------------------------- BM3D, ZS-N2N


def test_bm3d_improves_psnr_and_keeps_shape(clean_and_noisy):
    clean, noisy = clean_and_noisy
    denoised = bm3d_denoise(noisy, SIGMA)
    assert denoised.shape == noisy.shape and denoised.dtype == noisy.dtype
    assert 0.0 <= float(denoised.min()) and float(denoised.max()) <= 1.0
    assert (psnr(denoised, clean) > psnr(noisy, clean) + 5.0).all()
    assert torch.equal(bm3d_denoise(noisy, 0), noisy)


def test_zs_n2n_improves_psnr_with_few_steps_and_is_deterministic(clean_and_noisy):
    clean, noisy = clean_and_noisy
    denoised = zs_n2n_denoise(noisy, steps=60, seed=0)
    assert denoised.shape == noisy.shape and 0.0 <= float(denoised.min()) and float(denoised.max()) <= 1.0
    assert (psnr(denoised, clean) > psnr(noisy, clean) + 2.0).all()
    assert torch.equal(zs_n2n_denoise(noisy, steps=3, seed=4), zs_n2n_denoise(noisy, steps=3, seed=4))
    assert not torch.equal(zs_n2n_denoise(noisy, steps=3, seed=4), zs_n2n_denoise(noisy, steps=3, seed=5))


def test_zs_n2n_trains_each_image_alone(clean_and_noisy):
    """One network per image: an image's result does not depend on the rest of the batch."""
    _, noisy = clean_and_noisy
    together = zs_n2n_denoise(noisy, steps=5, seed=2)
    first_twice = zs_n2n_denoise(torch.cat([noisy[:1], noisy[:1]]), steps=5, seed=2)
    assert torch.allclose(together[0], first_twice[0], atol=1e-5)


# ----------------------------------------------------------------------------------------- U-Net


@pytest.fixture(scope="module")
def tiny_collection():
    clean = smooth_images(6, 16)
    return add_noise(clean, SIGMA, torch.Generator().manual_seed(2))


def test_unet_from_scratch_shape_determinism_and_rng(tiny_collection):
    state = torch.get_rng_state()
    model, seconds = unet_from_scratch(tiny_collection, epochs=1, width=4, seed=3, batch_size=4)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    assert not model.training and seconds > 0
    with torch.no_grad():
        out = model(tiny_collection)
    assert out.shape == tiny_collection.shape and torch.isfinite(out).all()
    again, _ = unet_from_scratch(tiny_collection, epochs=1, width=4, seed=3, batch_size=4)
    first, second = model.state_dict(), again.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other, _ = unet_from_scratch(tiny_collection, epochs=1, width=4, seed=4, batch_size=4)
    assert not torch.equal(other.state_dict()["noise.weight"], first["noise.weight"])


def test_unet_batchnorm_statistics_come_from_the_collection(tiny_collection):
    model, _ = unet_from_scratch(tiny_collection, epochs=1, width=4, seed=0, batch_size=4)
    with torch.no_grad():
        features = model.enc1[0](tiny_collection)  # 16×16: no padding in the U-Net
    bn = model.enc1[1]
    assert torch.allclose(bn.running_mean, features.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, features.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6)
    assert int(bn.num_batches_tracked) == 1 and bn.momentum == 0.1
    shifted = recompute_batchnorm(model, (tiny_collection * 0.5).contiguous())
    assert not torch.allclose(shifted.enc1[1].running_mean, features.mean((0, 2, 3)))


# ----------------------------------------------------------------------------------------- bad inputs


BASELINES = {
    "bm3d": lambda x: bm3d_denoise(x, SIGMA),
    "zs_n2n": lambda x: zs_n2n_denoise(x, steps=1),
    "unet": lambda x: unet_from_scratch(x, epochs=1, width=2),
}


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("bad, problem", [
    (torch.rand(2, 16, 16), r"\[N, 1, H, W\], got shape \[2, 16, 16\]"),
    (torch.rand(2, 3, 16, 16), r"grayscale images \[N, 1, H, W\]"),
    (torch.rand(2, 1, 16, 16) * 2.0, r"values must lie in \[0, 1\]"),
    (torch.full((2, 1, 16, 16), float("nan")), "NaN or infinite"),
    (torch.randint(0, 255, (2, 1, 16, 16), dtype=torch.uint8), "must be floats"),
])
def test_bad_images_raise_a_named_value_error(name, bad, problem):
    with pytest.raises(ValueError, match=problem):
        BASELINES[name](bad)


def test_bad_arguments_raise_a_named_value_error(clean_and_noisy):
    _, noisy = clean_and_noisy
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        bm3d_denoise(noisy, -1.0)
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        zs_n2n_denoise(noisy, steps=-1)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        zs_n2n_denoise(noisy, lr=0.0)
    with pytest.raises(ValueError, match="at least 2×2 pixels"):
        zs_n2n_denoise(noisy[..., :1, :1])
    with pytest.raises(ValueError, match="epochs must be an integer >= 0"):
        unet_from_scratch(noisy, epochs=-1)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        unet_from_scratch(noisy, epochs=1, batch_size=0)
