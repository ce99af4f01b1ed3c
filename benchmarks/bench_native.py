"""The native core (issue 3) against the Python references (pytest-benchmark).

Run: ``nice -n 10 python -m pytest benchmarks/bench_native.py --benchmark-only -s [--record]``

Pairs (same work on both sides; "value" is the native throughput, "vs_value" the reference's, both from the
median round):
- sampler: episodes/s of the Rust sampler (one batched call) vs the Python reference (a loop of
  ``sample_episode`` with the class members precomputed, its fastest use), the same episodes;
- image folder: images/s decoding + resizing (28 -> 32, grayscale) a folder of real Fashion-MNIST and
  MNIST images written as PNG and JPEG, vs torchvision ``ImageFolder`` + PIL through a ``DataLoader`` with
  2 workers (the whole folder into one tensor, both sides);
- IDX: images/s loading Fashion-MNIST train (gzip) into ``[N, 1, 28, 28]`` + int64 labels, vs the Python
  reader (gzip + numpy);
- episode data path: episodes/s sampling a batch of episodes and gathering their sketch + query images into
  tensors, native vs reference (sample_episode loop + numpy fancy indexing).

When both sides of a pair ran, the ratios are printed and, with ``--record`` (benchmarks/conftest.py), merged
into ``benchmarks/results/summary.json`` (:func:`record_summary`; other keys of that file are kept).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pudnet.data import datasets, native
from pudnet.report import machine, merge_summary
from pudnet.data.sampler import EpisodeSpec, class_members, sample_episode

pytestmark = pytest.mark.skipif(not native.available, reason="pudnet._native not built")

SUMMARY = Path(__file__).parent / "results" / "summary.json"
SPEC = EpisodeSpec(ways=4, sketch=50, support=10, query=15)
POOL = [0, 2, 3, 5, 8, 9]  # 6 training classes of Fashion-MNIST
N_EPISODES = 300
FOLDER_SIZE = 32

_results: dict[str, dict] = {}  # name -> {"value": per-second rate, "unit": ..., "label": ...}


def _record(name: str, benchmark, count: int, unit: str, label: str):
    if benchmark.disabled or benchmark.stats is None:
        return
    median = benchmark.stats.stats.median  # robust to preemption on a shared machine
    _results[name] = {"value": count / median, "unit": unit, "label": label, "seconds": median}
    benchmark.extra_info.update(rate=count / median, unit=unit)


@pytest.fixture(scope="module")
def fashion():
    return datasets.fashion_mnist("train")


# ------------------------------------------------------------------------------------------ sampler


def test_sampler_reference(benchmark, fashion):
    benchmark.group = "sampler"
    members = class_members(fashion.labels)

    def run():
        return [sample_episode(fashion.labels, POOL, SPEC, 0, i, members=members) for i in range(N_EPISODES)]

    eps = benchmark.pedantic(run, rounds=3, iterations=1)
    assert len(eps) == N_EPISODES
    _record("sampler_reference", benchmark, N_EPISODES, "episodes/s", "Python reference sampler")


def test_sampler_native_batch(benchmark, fashion):
    benchmark.group = "sampler"
    sampler = native.Sampler(fashion.labels, POOL, SPEC, 0, native=True)
    batch = benchmark(sampler.batch, range(N_EPISODES))
    ref = sample_episode(fashion.labels, POOL, SPEC, 0, N_EPISODES - 1)
    np.testing.assert_array_equal(batch.sketch[-1], ref.sketch)  # the same episodes
    _record("sampler_native", benchmark, N_EPISODES, "episodes/s", "Rust sampler, one batched call")


def test_sampler_native_one_call_per_episode(benchmark, fashion):
    benchmark.group = "sampler"
    sampler = native.Sampler(fashion.labels, POOL, SPEC, 0, native=True)
    benchmark(lambda: [sampler.episode(i) for i in range(N_EPISODES)])
    _record("sampler_native_single", benchmark, N_EPISODES, "episodes/s", "Rust sampler, one call per episode")


# ------------------------------------------------------------------------------------- image folder


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """6,000 real images: 300 per class of Fashion-MNIST test and MNIST (20 classes), half PNG half JPEG."""
    from PIL import Image

    root = tmp_path_factory.mktemp("bench-folder")
    rng = np.random.default_rng(0)
    for prefix, store in (("fashion", datasets.fashion_mnist("test")), ("mnist", datasets.mnist())):
        for c in range(10):
            d = root / f"{prefix}-{c}"
            d.mkdir()
            for k, i in enumerate(rng.choice(np.flatnonzero(store.labels == c), 300, replace=False)):
                ext = "png" if k % 2 else "jpg"
                Image.fromarray(store.images[i, 0]).save(d / f"{k:04d}.{ext}", quality=90)
    return root


def _torchvision_load(root: Path) -> torch.Tensor:
    from torchvision import datasets as tvd
    from torchvision import transforms as T

    ds = tvd.ImageFolder(root, transform=T.Compose([T.Grayscale(1), T.Resize((FOLDER_SIZE, FOLDER_SIZE)),
                                                    T.PILToTensor()]))
    loader = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=2)
    return torch.cat([x for x, _ in loader])


def test_image_folder_torchvision(benchmark, image_folder):
    benchmark.group = "image-folder"
    images = benchmark.pedantic(_torchvision_load, args=(image_folder,), rounds=3, iterations=1)
    assert images.shape == (6000, 1, FOLDER_SIZE, FOLDER_SIZE)
    _record("folder_torchvision", benchmark, 6000, "images/s",
            "torchvision ImageFolder + PIL, DataLoader with 2 workers")


def test_image_folder_native(benchmark, image_folder):
    benchmark.group = "image-folder"
    images, labels, classes, _ = benchmark.pedantic(
        native.read_image_folder, args=(image_folder,),
        kwargs=dict(size=FOLDER_SIZE, channels=1, progress=False), rounds=5, iterations=1)
    assert images.shape == (6000, 1, FOLDER_SIZE, FOLDER_SIZE) and len(classes) == 20
    _record("folder_native", benchmark, 6000, "images/s",
            f"Rust read_image_folder ({native._native.num_threads()} threads)")


def test_image_folder_native_one_thread(benchmark, image_folder):
    benchmark.group = "image-folder"
    native.set_num_threads(1)
    try:
        benchmark.pedantic(native.read_image_folder, args=(image_folder,),
                           kwargs=dict(size=FOLDER_SIZE, channels=1, progress=False), rounds=3, iterations=1)
    finally:
        native.set_num_threads(0)
    _record("folder_native_1thread", benchmark, 6000, "images/s", "Rust read_image_folder (1 thread)")


# ----------------------------------------------------------------------------------------------- IDX

_IDX = (datasets.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz",
        datasets.FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz")


def test_idx_reference(benchmark, monkeypatch):
    benchmark.group = "idx"
    monkeypatch.setenv("PUDNET_NATIVE", "0")
    images, labels = benchmark.pedantic(native.load_idx, args=_IDX, rounds=5, iterations=1)
    assert images.shape == (60000, 1, 28, 28)
    _record("idx_reference", benchmark, 60000, "images/s", "Python gzip + numpy")


def test_idx_native(benchmark):
    benchmark.group = "idx"
    images, labels = benchmark.pedantic(native.load_idx, args=_IDX, rounds=5, iterations=1)
    assert images.shape == (60000, 1, 28, 28) and labels.dtype == np.int64
    _record("idx_native", benchmark, 60000, "images/s", "Rust load_idx (flate2/zlib-rs)")


# ------------------------------------------------------------------------------ episode data path

BATCH = 32


def test_episode_batch_reference(benchmark, fashion, monkeypatch):
    benchmark.group = "episode-batch"
    monkeypatch.setenv("PUDNET_NATIVE", "0")
    sampler = native.Sampler(fashion.labels, POOL, SPEC, 0)
    assert not sampler.native

    def run():
        b = sampler.batch(range(BATCH))
        return torch.from_numpy(native.gather(fashion.images, b.sketch)), torch.from_numpy(
            native.gather(fashion.images, b.query))

    sketch, query = benchmark.pedantic(run, rounds=5, iterations=1)
    assert sketch.shape == (BATCH, 200, 1, 28, 28)
    _record("episode_batch_reference", benchmark, BATCH, "episodes/s",
            "reference: sample_episode loop + numpy fancy indexing")


def test_episode_batch_native(benchmark, fashion):
    benchmark.group = "episode-batch"
    sampler = native.Sampler(fashion.labels, POOL, SPEC, 0, native=True)

    def run():
        b = sampler.batch(range(BATCH))
        return torch.from_numpy(native.gather(fashion.images, b.sketch)), torch.from_numpy(
            native.gather(fashion.images, b.query))

    sketch, query = benchmark(run)
    assert query.shape == (BATCH, 60, 1, 28, 28)
    _record("episode_batch_native", benchmark, BATCH, "episodes/s", "native: Sampler.batch + gather")


# -------------------------------------------------------------------------------------------- summary

PAIRS = {
    "native_sampler_episodes_per_s": ("sampler_native", "sampler_reference"),
    "native_sampler_single_call_episodes_per_s": ("sampler_native_single", "sampler_reference"),
    "native_image_folder_images_per_s": ("folder_native", "folder_torchvision"),
    "native_image_folder_1thread_images_per_s": ("folder_native_1thread", "folder_torchvision"),
    "native_idx_load_images_per_s": ("idx_native", "idx_reference"),
    "native_episode_batch_episodes_per_s": ("episode_batch_native", "episode_batch_reference"),
}


def record_summary(results: dict[str, dict], path: Path = SUMMARY, command: str | None = None,
                   record: bool = True) -> dict:
    """The ratios of every pair measured, merged into ``path`` when ``record`` (keeps other keys)."""
    command = command or "python -m pytest " + " ".join(sys.argv[1:])
    entries = {}
    for key, (mine, theirs) in PAIRS.items():
        if mine in results and theirs in results:
            x, y = results[mine], results[theirs]
            entries[key] = {"value": round(x["value"], 3), "unit": x["unit"], "vs": y["label"],
                            "vs_value": round(y["value"], 3), "ratio": round(x["value"] / y["value"], 3),
                            "command": command, "machine": machine(), "what": x["label"]}
    if entries and record:
        entries = merge_summary(entries, path)
    return entries


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    yield
    entries = record_summary(_results, record=request.config.getoption("--record"))
    for key, e in entries.items():
        print(f"\n{key}: {e['value']:.1f} {e['unit']} vs {e['vs_value']:.1f} ({e['vs']}) = {e['ratio']:.1f}x")
