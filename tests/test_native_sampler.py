"""The Rust episodic sampler (pudnet._native via pudnet.data.native) against the Python reference."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pudnet.data import native
from pudnet.data.sampler import MASK64, EpisodeSpec, TooFewImagesError, class_members, sample_episode

pytestmark = pytest.mark.skipif(not native.available, reason=f"pudnet._native not built: {native.import_error}")

from pudnet import _native  # noqa: E402  (after the skip marker: only imported when built)


@pytest.fixture(scope="module")
def fashion():
    from pudnet.data.datasets import fashion_mnist

    return fashion_mnist("test")  # 10,000 real images, 1,000 per class


def outcome(fn):
    """(kind, value): the episode's arrays, or the exception's type and message."""
    try:
        e = fn()
    except ValueError as err:  # TooFewImagesError is a ValueError too
        return ("error", type(err).__name__, str(err))
    return ("ok", e.classes.tolist(), e.sketch.tolist(), e.support.tolist(), e.query.tolist())


def assert_same_episode(a, b):
    for role in ("classes", "sketch", "support", "query"):
        got, want = getattr(a, role), getattr(b, role)
        assert got.dtype == np.int64 and want.dtype == np.int64
        np.testing.assert_array_equal(got, want, err_msg=role)


@st.composite
def configs(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_classes = draw(st.integers(1, 7))
    counts = rng.integers(0, 40, n_classes)
    labels = rng.permutation(np.repeat(np.arange(n_classes) * 3 - 2, counts))  # ids like -2, 1, 4, ...
    ways = draw(st.integers(1, 4))
    sketch = draw(st.integers(1, 12))
    spec = EpisodeSpec(ways=ways, sketch=sketch, support=draw(st.integers(1, sketch)),
                       query=draw(st.integers(0, 10)))
    ids = sorted(set(labels.tolist())) + [99]  # 99: a pool class with no images
    pool = draw(st.lists(st.sampled_from(ids), min_size=0, max_size=8))  # duplicates allowed, as the reference
    query_labels = None
    if draw(st.booleans()):
        query_labels = rng.permutation(np.repeat(np.arange(n_classes) * 3 - 2, rng.integers(0, 25, n_classes)))
    seed = draw(st.one_of(st.integers(0, 2**16), st.integers(-2**70, 2**70)))
    index = draw(st.one_of(st.integers(0, 2**16), st.integers(-2**66, 2**66)))
    return labels, pool, spec, seed, index, query_labels


@settings(max_examples=int(os.environ.get("PUDNET_FUZZ_CASES", "400")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_native_equals_reference_over_random_configs(config):
    labels, pool, spec, seed, index, query_labels = config
    want = outcome(lambda: sample_episode(labels, pool, spec, seed, index, query_labels))
    got = outcome(lambda: native.Sampler(labels, pool, spec, seed, query_labels, native=True).episode(index))
    assert got == want
    # the batched call agrees with single episodes (errors name the episode)
    batch = outcome(lambda: native.Sampler(labels, pool, spec, seed, query_labels, native=True)
                    .batch([index]).episode(0))
    if want[0] == "ok":
        assert batch == want
    else:
        assert batch[:2] == want[:2] and want[2] in batch[2]


@pytest.mark.parametrize("spec", [EpisodeSpec(), EpisodeSpec(ways=6, sketch=100, support=1, query=0),
                                  EpisodeSpec(ways=1, sketch=1, support=1, query=1),
                                  EpisodeSpec(ways=3, sketch=400, support=400, query=500)])
def test_real_fashion_mnist_many_seeds(fashion, spec):
    pool = [0, 2, 3, 5, 8, 9]
    members = class_members(fashion.labels)
    for seed in (0, 1, 12345, 2**63 + 17):
        sampler = native.Sampler(fashion.labels, pool, spec, seed, native=True)
        indices = list(range(0, 40, 3)) + [2**40 + 5]
        batch = sampler.batch(indices)
        assert batch.sketch.shape == (len(indices), spec.ways * spec.sketch)
        for row, i in enumerate(indices):
            want = sample_episode(fashion.labels, pool, spec, seed, i, members=members)
            assert_same_episode(batch.episode(row), want)
            assert_same_episode(sampler.episode(i), want)


def test_separate_query_store(fashion):
    from pudnet.data.datasets import fashion_mnist

    train = fashion_mnist("train")
    spec = EpisodeSpec(ways=4, sketch=30, support=5, query=20)
    pool = [1, 4, 6, 7]
    eps = native.sample_episodes(train.labels, pool, spec, 7, range(25), query_labels=fashion.labels)
    for i, e in enumerate(eps):
        assert_same_episode(e, sample_episode(train.labels, pool, spec, 7, i, fashion.labels))
        assert (fashion.labels[e.query] == np.repeat(e.classes, spec.query)).all()


def test_thread_count_does_not_change_episodes(fashion):
    spec = EpisodeSpec(ways=5, sketch=20, support=4, query=7)
    results = []
    try:
        for threads in (1, 2, 3, 8):
            native.set_num_threads(threads)
            assert _native.num_threads() == threads
            b = native.Sampler(fashion.labels, range(10), spec, 3).batch(range(500))
            results.append((b.classes, b.sketch, b.support, b.query))
    finally:
        native.set_num_threads(0)
    for r in results[1:]:
        for a, b in zip(results[0], r):
            np.testing.assert_array_equal(a, b)


def test_errors_are_the_reference_errors():
    labels = np.repeat(np.arange(4), [10, 3, 10, 10])
    spec = EpisodeSpec(ways=4, sketch=5, support=2, query=3)
    with pytest.raises(ValueError, match="the class pool holds 3 classes, an episode needs 4"):
        native.Sampler(labels, [0, 1, 2], spec, 0, native=True)
    with pytest.raises(TooFewImagesError, match="class 1 has 3 images for the sketch, the episode needs 8"):
        native.sample_episode(labels, [0, 1, 2, 3], spec, 0, 0)
    with pytest.raises(TooFewImagesError, match="episode 5: class 1 has 3 images for the sketch"):
        native.Sampler(labels, [0, 1, 2, 3], spec, 0).batch([5, 6])
    with pytest.raises(TooFewImagesError, match="class 7 has 0 images"):
        native.sample_episode(labels, [0, 2, 3, 7], spec, 0, 0)
    q = np.repeat(np.arange(4), [3, 3, 3, 2])
    with pytest.raises(TooFewImagesError, match="class 3 has 2 images for the query, the episode needs 3"):
        native.sample_episode(labels, [0, 2, 3, 3], EpisodeSpec(4, 3, 1, 3), 0, 0, query_labels=q)


def test_reference_switch(fashion, monkeypatch):
    spec = EpisodeSpec(ways=3, sketch=10, support=2, query=5)
    monkeypatch.setenv("PUDNET_NATIVE", "0")
    assert not native.enabled()
    ref = native.Sampler(fashion.labels, range(10), spec, 11)
    assert not ref.native
    monkeypatch.delenv("PUDNET_NATIVE")
    assert native.enabled()
    nat = native.Sampler(fashion.labels, range(10), spec, 11)
    assert nat.native
    a, b = ref.batch(range(30)), nat.batch(range(30))
    for role in ("classes", "sketch", "support", "query"):
        np.testing.assert_array_equal(getattr(a, role), getattr(b, role))
    native.use_native(False)
    try:
        assert not native.enabled()
    finally:
        native.use_native(None)


def test_gather_matches_numpy(fashion):
    b = native.Sampler(fashion.labels, range(10), EpisodeSpec(4, 25, 5, 10), 5).batch(range(16))
    got = native.gather(fashion.images, b.sketch)
    assert got.shape == (16, 100, 1, 28, 28) and got.dtype == np.uint8 and got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got, fashion.images[b.sketch])
    np.testing.assert_array_equal(native.gather(fashion.images, b.query[3]), fashion.images[b.query[3]])
    for bad in ([[0, len(fashion.images)]], [[-1]]):
        with pytest.raises(IndexError, match="out of range"):
            native.gather(fashion.images, np.asarray(bad))


@pytest.mark.skipif(not hasattr(_native, "_panic_for_test"), reason="built without the test-hooks feature "
                    "(make test builds with it)")
def test_a_panic_reaches_python_as_a_panic_exception_not_a_data_error():
    for in_pool in (False, True):
        with pytest.raises(BaseException, match="internal error in pudnet._native") as info:
            _native._panic_for_test(in_pool)
        assert type(info.value).__name__ == "PanicException" and not isinstance(info.value, _native.DataError)
    assert issubclass(_native.DataError, ValueError)
    # the pool still works after a panic on a worker thread
    assert native.Sampler(np.repeat(np.arange(3), 5), [0, 1, 2], EpisodeSpec(2, 3, 1, 1), 0).batch(range(50))


def test_switching_thread_counts_reuses_the_pools():
    native.set_num_threads(1)
    native.set_num_threads(2)
    _native.num_threads()
    before = _worker_threads()
    for n in (1, 2, 1, 2, 1, 2):
        native.set_num_threads(n)
        assert _native.num_threads() == n
    after = _worker_threads()
    native.set_num_threads(0)
    assert after == before  # the pools of 1 and 2 threads exist already: none was started again


def _worker_threads() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/task"))


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"forked child {pid} deadlocked (killed after {timeout} s)")


def test_fork_after_parallel_use_does_not_deadlock(fashion):
    spec = EpisodeSpec(4, 20, 5, 5)
    sampler = native.Sampler(fashion.labels, range(10), spec, 1)
    want = sampler.batch(range(200))  # the parent's pool threads are running now
    native.gather(fashion.images, want.sketch)
    pid = os.fork()
    if pid == 0:  # child: parallel calls in a fresh pool
        code = 1
        try:
            got = sampler.batch(range(200))
            imgs = native.gather(fashion.images, got.sketch)
            ok = np.array_equal(got.sketch, want.sketch) and imgs.shape == (200, 80, 1, 28, 28)
            code = 0 if ok else 2
        finally:
            os._exit(code)
    assert _wait(pid, 60) == 0


class _EpisodeImages:
    """A map-style dataset whose items are episode batches gathered by the native core."""

    def __init__(self, store, spec):
        self.store = store
        self.sampler = native.Sampler(store.labels, range(10), spec, 9)

    def __len__(self):
        return 8

    def __getitem__(self, i):
        import torch

        b = self.sampler.batch(range(i * 4, i * 4 + 4))
        return torch.from_numpy(native.gather(self.store.images, b.sketch)), torch.from_numpy(b.sketch)


def test_dataloader_workers_fork_safely(fashion):
    import torch

    ds = _EpisodeImages(fashion, EpisodeSpec(4, 10, 2, 5))
    ds.sampler.batch(range(100))  # use the pool in the parent first
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, timeout=60,
                                         multiprocessing_context="fork")
    for i, (images, index) in enumerate(loader):
        np.testing.assert_array_equal(index.numpy(), ds.sampler.batch(range(i * 4, i * 4 + 4)).sketch)
        np.testing.assert_array_equal(images.numpy(), fashion.images[index.numpy()])
    assert i == 7


def test_seed_and_index_are_taken_modulo_2_64(fashion):
    spec = EpisodeSpec(3, 5, 1, 2)
    a = native.Sampler(fashion.labels, range(10), spec, -1).episode(-3)
    b = native.Sampler(fashion.labels, range(10), spec, MASK64).episode(MASK64 - 2)
    assert_same_episode(a, b)
    assert_same_episode(a, sample_episode(fashion.labels, range(10), spec, -1, -3))


def test_sampler_pickles(fashion):
    import pickle

    spec = EpisodeSpec(4, 10, 2, 3)
    for use_native in (True, False):
        s = native.Sampler(fashion.labels, range(10), spec, 5, query_labels=fashion.labels, native=use_native)
        t = pickle.loads(pickle.dumps(s))
        assert t.native == use_native
        assert_same_episode(t.episode(12), s.episode(12))
