"""The Rust loaders (IDX, CIFAR, image folders) against the Python/PIL references, and their errors.

Image-folder tolerances against the PIL reference (``convert`` then ``resize(BILINEAR)``): PNG at its own
size is exact; PNG resized differs by at most 1 grey level; grayscale JPEG by at most 2 (different IDCTs);
RGB JPEG by at most 0.5 on average with >= 98% of values within 2 (chroma upsampling differs at edges).
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pudnet.data import datasets, native
from pudnet.data.idx import read_idx as read_idx_ref
from pudnet.data.store import DataError

pytestmark = pytest.mark.skipif(not native.available, reason=f"pudnet._native not built: {native.import_error}")

FASHION = datasets.FASHION_MNIST_DIR


@pytest.fixture
def reference(monkeypatch):
    """Call this to run a block on the Python reference path."""
    def run(fn, *args, **kw):
        monkeypatch.setenv("PUDNET_NATIVE", "0")
        try:
            return fn(*args, **kw)
        finally:
            monkeypatch.delenv("PUDNET_NATIVE")
    return run


def raises_naming(path, problem, fn, *args, **kw):
    """fn raises pudnet's DataError whose message names ``path`` and contains ``problem``."""
    with pytest.raises(DataError) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert os.fspath(path) in msg and problem in msg, msg
    return msg


# ----------------------------------------------------------------------------------------------- IDX


@pytest.fixture(scope="module")
def fashion_raw(tmp_path_factory):
    """The real Fashion-MNIST test files, decompressed (raw IDX)."""
    d = tmp_path_factory.mktemp("fashion-raw")
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (d / name).write_bytes(gzip.decompress((FASHION / f"{name}.gz").read_bytes()))
    return d


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                  "t10k-images-idx3-ubyte.gz"])
def test_idx_gzip_matches_reference(name):
    got, want = native.read_idx(FASHION / name), read_idx_ref(FASHION / name)
    assert got.dtype == np.uint8 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_idx_raw_and_store_match_reference(fashion_raw, reference):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        np.testing.assert_array_equal(native.read_idx(fashion_raw / name), read_idx_ref(fashion_raw / name))
    store = datasets.idx(fashion_raw / "t10k-images-idx3-ubyte", fashion_raw / "t10k-labels-idx1-ubyte")
    ref = reference(datasets.idx, fashion_raw / "t10k-images-idx3-ubyte", fashion_raw / "t10k-labels-idx1-ubyte")
    assert store.images.shape == (10000, 1, 28, 28) and store.labels.dtype == np.int64
    np.testing.assert_array_equal(store.images, ref.images)
    np.testing.assert_array_equal(store.labels, ref.labels)
    # no extra copy: the array views the Rust buffer directly
    assert store.images.base is not None and not isinstance(store.images.base, np.ndarray)
    train = datasets.fashion_mnist("train")
    assert train.images.shape == (60000, 1, 28, 28) and np.bincount(train.labels).tolist() == [6000] * 10


def _idx(dims, data, dtype=8):
    return bytes([0, 0, dtype, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + bytes(data)


IDX_CASES = {
    "bad_magic": (b"\x01\x02\x03\x04rest", "not an IDX file (bad magic 01020304)"),
    "empty": (b"", "bad magic"),
    "element_type": (_idx([2], [1, 2], dtype=0x0D), "unsupported IDX element type 0x0d"),
    "truncated_header": (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated IDX header"),
    "truncated_data": (_idx([2, 3], [1] * 5), "need 6 bytes, the file holds 5"),
    "oversized_data": (_idx([2, 3], [1] * 7), "need 6 bytes, the file holds 7"),
    "overflowing_dims": (_idx([2**32 - 1] * 4, []), "overflow"),
    "zero_dims": (b"\x00\x00\x08\x00", "truncated IDX header"),
}


@pytest.mark.parametrize("case", sorted(IDX_CASES))
@pytest.mark.parametrize("compress", [False, True])
def test_idx_malformed(tmp_path, case, compress):
    data, problem = IDX_CASES[case]
    path = tmp_path / f"{case}.idx"
    path.write_bytes(gzip.compress(data) if compress else data)
    raises_naming(path, problem, native.read_idx, path)
    with pytest.raises(DataError):  # the reference rejects it too
        read_idx_ref(path)


def test_idx_corrupt_gzip_missing_and_mismatched(tmp_path, fashion_raw):
    good = gzip.compress(_idx([100], range(100)))
    (tmp_path / "cut.gz").write_bytes(good[:-6])
    msg = raises_naming(tmp_path / "cut.gz", "", native.read_idx, tmp_path / "cut.gz")
    assert "gzip" in msg or "truncated" in msg
    bad_crc = bytearray(good)
    bad_crc[-8] ^= 0xFF
    (tmp_path / "crc.gz").write_bytes(bytes(bad_crc))
    raises_naming(tmp_path / "crc.gz", "corrupt gzip stream", native.read_idx, tmp_path / "crc.gz")
    raises_naming(tmp_path / "nope.idx", "no such file", native.read_idx, tmp_path / "nope.idx")
    raises_naming(tmp_path, "is a directory", native.read_idx, tmp_path)
    (tmp_path / "labels").write_bytes(_idx([3], [1, 2, 3]))
    raises_naming(tmp_path / "labels", "labels do not match 10000 images", datasets.idx,
                  fashion_raw / "t10k-images-idx3-ubyte", tmp_path / "labels")
    (tmp_path / "flat").write_bytes(_idx([6], range(6)))
    raises_naming(tmp_path / "flat", "expected IDX images of 3 or 4 dimensions, got 1", datasets.idx,
                  tmp_path / "flat", tmp_path / "labels")


# --------------------------------------------------------------------------------------------- CIFAR


def _cifar_records(rng, n, kind):
    images = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    if kind == "cifar10":
        labels = rng.integers(0, 10, (n, 1), dtype=np.uint8)
    else:
        fine = rng.integers(0, 100, (n, 1), dtype=np.uint8)
        labels = np.concatenate([fine // 5, fine], 1).astype(np.uint8)
    return np.concatenate([labels, images], 1), images.reshape(n, 3, 32, 32), labels.astype(np.int64)


@pytest.fixture(scope="module")
def cifar_dirs(tmp_path_factory):
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("cifar")
    ten, hundred = root / "cifar-10-batches-bin", root / "cifar-100-binary"
    ten.mkdir()
    hundred.mkdir()
    want = {}
    parts = []
    for i in range(1, 6):
        recs, imgs, labs = _cifar_records(rng, 7 + i, "cifar10")
        (ten / f"data_batch_{i}.bin").write_bytes(recs.tobytes())
        parts.append((imgs, labs[:, 0]))
    want["cifar10", "train"] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    recs, imgs, labs = _cifar_records(rng, 5, "cifar10")
    (ten / "test_batch.bin").write_bytes(recs.tobytes())
    want["cifar10", "test"] = (imgs, labs[:, 0])
    (ten / "batches.meta.txt").write_text("\n".join(f"name{k}" for k in range(10)) + "\n\n")
    for split, n in (("train", 30), ("test", 9)):
        recs, imgs, labs = _cifar_records(rng, n, "cifar100")
        (hundred / f"{split}.bin").write_bytes(recs.tobytes())
        want["cifar100", split] = (imgs, labs)
    (hundred / "fine_label_names.txt").write_text("\n".join(f"fine{k}" for k in range(100)))
    archive = root / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(ten, arcname="cifar-10-batches-bin")
    return root, want


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10(cifar_dirs, split, reference):
    root, want = cifar_dirs
    imgs, labs = want["cifar10", split]
    for path in (root, root / "cifar-10-batches-bin", root / "cifar-10-binary.tar.gz"):
        store = datasets.cifar(path, split)
        assert store.images.shape == (len(labs), 3, 32, 32)
        np.testing.assert_array_equal(store.images, imgs)
        np.testing.assert_array_equal(store.labels, labs)
        assert store.class_names[3] == "name3" and len(store.class_names) == 10
    ref = reference(datasets.cifar, root / "cifar-10-batches-bin", split)
    np.testing.assert_array_equal(ref.images, imgs)
    np.testing.assert_array_equal(ref.labels, labs)


@pytest.mark.parametrize("label", ["fine", "coarse"])
def test_cifar100(cifar_dirs, label, reference):
    root, want = cifar_dirs
    imgs, labs = want["cifar100", "train"]
    store = datasets.cifar(root / "cifar-100-binary", "train", label=label)
    np.testing.assert_array_equal(store.images, imgs)
    np.testing.assert_array_equal(store.labels, labs[:, 1 if label == "fine" else 0])
    assert len(store.class_names) == (100 if label == "fine" else 0)
    single = datasets.cifar(root / "cifar-100-binary" / "test.bin", label=label)
    np.testing.assert_array_equal(single.images, want["cifar100", "test"][0])
    ref_imgs, ref_labs = reference(native.read_cifar, [root / "cifar-100-binary" / "train.bin"], label=label)
    np.testing.assert_array_equal(ref_imgs, store.images)
    np.testing.assert_array_equal(ref_labs, store.labels)


def test_cifar_malformed(tmp_path, cifar_dirs, reference):
    root, _ = cifar_dirs
    rec10 = (root / "cifar-10-batches-bin" / "test_batch.bin").read_bytes()
    rec100 = (root / "cifar-100-binary" / "test.bin").read_bytes()
    cases = [
        ("test_batch.bin", rec10[:-100], "not a whole number of 3073-byte records", "cifar10"),
        ("test_batch.bin", b"", "empty file", "cifar10"),
        ("test_batch.bin", bytes([10]) + rec10[1:], "record 0: label 10 out of range 0..9", "cifar10"),
        ("test.bin", rec100[:3074] + bytes([3, 100]) + rec100[3076:], "record 1: fine label 100 out of range",
         "cifar100"),
        ("test.bin", bytes([20]) + rec100[1:], "record 0: coarse label 20 out of range", "cifar100"),
    ]
    for i, (name, data, problem, kind) in enumerate(cases):
        d = tmp_path / str(i)
        d.mkdir()
        (d / name).write_bytes(data)
        raises_naming(d / name, problem, native.read_cifar, [d / name])
        raises_naming(d / name, problem, reference, native.read_cifar, [d / name], kind=kind)
        raises_naming(d / name, problem, datasets.cifar, d, "test")
    raises_naming(tmp_path / "missing.bin", "no such file", native.read_cifar, [tmp_path / "missing.bin"],
                  kind="cifar10")
    (tmp_path / "odd.bin").write_bytes(b"x" * 7)
    raises_naming(tmp_path / "odd.bin", "cannot tell CIFAR-10 from CIFAR-100", native.read_cifar,
                  tmp_path / "odd.bin")
    raises_naming(tmp_path / "0", "no CIFAR train batches found", datasets.cifar, tmp_path / "0")
    raises_naming(tmp_path / "nothing", "no such file or folder", datasets.cifar, tmp_path / "nothing")


# --------------------------------------------------------------------------------------- image folders


def _write_folder(root, per_class=24, rgb_every=0):
    """Real Fashion-MNIST (classes a, c) and MNIST (class b) images as PNG and JPEG files."""
    from PIL import Image

    fashion = datasets.fashion_mnist("test")
    digits = datasets.mnist()
    rng = np.random.default_rng(1)
    for c, source in (("a", fashion), ("b", digits), ("c", fashion)):
        (root / c).mkdir(parents=True)
        for k in range(per_class):
            img = source.images[rng.integers(0, len(source))][0]
            if rgb_every and k % rgb_every == rgb_every - 1:
                img = np.stack([img, 255 - img, img // 2 + 60], -1).astype(np.uint8)
            ext = "png" if k % 2 else "jpg"
            Image.fromarray(img).save(root / c / f"{k:03d}.{ext}", quality=90)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("folder") / "images", rgb_every=3)


@pytest.mark.parametrize("size", [None, 28, 20, (17, 40)])
@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_matches_pil(folder, size, channels, reference):
    got, labels, classes, files = native.read_image_folder(folder, size=size, channels=channels)
    want, ref_labels, ref_classes, ref_files = reference(native.read_image_folder, folder, size=size,
                                                         channels=channels)
    assert (classes, files) == (ref_classes, ref_files) == (["a", "b", "c"], ref_files)
    np.testing.assert_array_equal(labels, ref_labels)
    h, w = (28, 28) if size in (None, 28) else ((size, size) if isinstance(size, int) else size)
    assert got.shape == want.shape == (72, channels, h, w) and got.dtype == np.uint8
    d = np.abs(got.astype(int) - want.astype(int))
    png = np.array([f.endswith(".png") for f in files])
    rgb = np.array([int(os.path.basename(f)[:3]) % 3 == 2 for f in files])
    assert d[png].max() <= (0 if (h, w) == (28, 28) else 1)
    assert d[~png & ~rgb].max() <= 2
    assert d[~png & rgb].mean() <= 0.5 and (d[~png & rgb] <= 2).mean() >= 0.98


def test_image_folder_store_and_progress(folder):
    store = datasets.image_folder(folder, size=32, channels=3, progress=True)
    assert store.images.shape == (72, 3, 32, 32)
    assert store.class_names == {0: "a", 1: "b", 2: "c"}
    assert np.bincount(store.labels).tolist() == [24, 24, 24]
    gray = datasets.image_folder(folder)  # defaults: 28x28, 1 channel
    assert gray.images.shape == (72, 1, 28, 28)


def test_image_folder_errors(tmp_path, folder, reference):
    from PIL import Image

    def fresh(name):
        root = tmp_path / name
        shutil.copytree(folder, root)
        return root

    raises_naming(tmp_path / "nope", "no such folder", native.read_image_folder, tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.png").write_bytes(b"")
    raises_naming(tmp_path / "flat", "no class subfolders", native.read_image_folder, tmp_path / "flat")

    root = fresh("empty")
    (root / "d").mkdir()
    (root / "d" / "readme.txt").write_text("no images here")
    raises_naming(root / "d", "empty class folder", native.read_image_folder, root)

    root = fresh("garbage")
    (root / "b" / "005.png").write_bytes(b"definitely not a png")
    raises_naming(root / "b" / "005.png", "undecodable image", native.read_image_folder, root)
    raises_naming(root / "b" / "005.png", "undecodable image", reference, native.read_image_folder, root)

    root = fresh("truncated")
    data = (root / "a" / "001.png").read_bytes()
    (root / "a" / "001.png").write_bytes(data[: len(data) // 2])
    raises_naming(root / "a" / "001.png", "undecodable image", native.read_image_folder, root)
    data = (root / "c" / "000.jpg").read_bytes()
    (root / "a" / "001.png").write_bytes(data)  # a JPEG named .png is fine (sniffed); a cut JPEG is not
    (root / "c" / "000.jpg").write_bytes(data[:40])
    raises_naming(root / "c" / "000.jpg", "undecodable image", native.read_image_folder, root)

    root = fresh("gif")
    Image.new("L", (28, 28)).save(root / "b" / "003.png", format="GIF")
    raises_naming(root / "b" / "003.png", "unsupported image format", native.read_image_folder, root)

    root = fresh("sizes")
    Image.new("L", (30, 28)).save(root / "c" / "007.png")
    raises_naming(root / "c" / "007.png", "mixed image sizes", native.read_image_folder, root, size=None)
    raises_naming(root / "c" / "007.png", "mixed image sizes", reference, native.read_image_folder, root,
                  size=None)
    assert native.read_image_folder(root, size=28)[0].shape == (72, 1, 28, 28)  # resizing makes it fine

    raises_naming(folder / "a" / "002.jpg", "mixed channel counts", native.read_image_folder, folder,
                  size=28, channels=None)
    raises_naming(folder / "a" / "002.jpg", "mixed channel counts", reference, native.read_image_folder,
                  folder, size=28, channels=None)
    with pytest.raises(ValueError, match="channels must be 1, 3 or None"):
        native.read_image_folder(folder, channels=2)


def test_loader_in_forked_child_after_parallel_use(folder):
    want = native.read_image_folder(folder, size=20, channels=1)[0]  # pool threads now exist in the parent
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            got = native.read_image_folder(folder, size=20, channels=1)[0]
            code = 0 if np.array_equal(got, want) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child deadlocked")


# ------------------------------------------------------------------------- fuzzing through the bindings


def _png(mode, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (5, 7) if mode == "L" else (5, 7, len(mode))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(mode, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (9, 11) if mode == "L" else (9, 11, 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, format="JPEG")
    return buf.getvalue()


SEEDS = {
    "idx": _idx([2, 3, 4], range(24)),
    "idx.gz": gzip.compress(_idx([2, 3, 4], range(24))),
    "cifar10": bytes([3]) + bytes(range(256)) * 12,
    "cifar100": bytes([3, 17]) + bytes(range(256)) * 12,
    "png-L": _png("L", 0),
    "png-RGB": _png("RGB", 1),
    "png-RGBA": _png("RGBA", 2),
    "jpeg-L": _jpeg("L", 3),
    "jpeg-RGB": _jpeg("RGB", 4),
}


@st.composite
def mutated(draw):
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    if draw(st.booleans()):
        data = bytearray(draw(st.binary(max_size=64)))
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.integers(0, 2))
        if op == 0:
            data[pos] = draw(st.integers(0, 255))
        elif op == 1:
            del data[pos]
        else:
            data.insert(pos, draw(st.integers(0, 255)))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return name, bytes(data)


FUZZ_CASES = int(os.environ.get("PUDNET_FUZZ_CASES", "300"))


@settings(max_examples=FUZZ_CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.sampled_from([None, 1, 3]), st.sampled_from([None, 8, (5, 9)]))
def test_fuzz_parsers_raise_only_data_error(case, channels, size):
    name, data = case
    if name.startswith("idx"):
        calls = [lambda: native.read_idx_bytes(data)]
    elif name.startswith("cifar"):
        calls = [lambda: native.parse_cifar(data, "cifar10"), lambda: native.parse_cifar(data, "cifar100", "coarse")]
    else:
        calls = [lambda: native.decode_image(data, "fuzz", size=size, channels=channels)]
    for call in calls:
        try:
            out = call()
        except DataError as e:
            assert str(e)  # a message, never a panic or another exception type
        else:
            arrays = out if isinstance(out, tuple) else (out,)
            assert all(isinstance(a, np.ndarray) for a in arrays)
