import numpy as np
import pytest

from pudnet.data.sampler import EpisodeSpec, SplitMix64, TooFewImagesError, class_members, sample_episode


def test_splitmix64_known_values():
    # SplitMix64 reference outputs for state 0 (Vigna's splitmix64.c): state starts at mix(seed) ^ index,
    # so reproduce state 0 directly.
    rng = SplitMix64(0, 0)
    rng.state = 0
    assert [rng.next() for _ in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_below_is_in_range_and_roughly_uniform():
    rng = SplitMix64(7, 3)
    draws = np.array([rng.below(6) for _ in range(6000)])
    assert draws.min() == 0 and draws.max() == 5
    assert np.all(np.abs(np.bincount(draws) - 1000) < 150)


def test_episode_is_pure_function_of_seed_and_index():
    labels = np.repeat(np.arange(6), 40)
    spec = EpisodeSpec(ways=3, sketch=5, support=2, query=4)
    a = sample_episode(labels, range(6), spec, seed=1, index=9)
    b = sample_episode(labels, range(6), spec, seed=1, index=9)
    c = sample_episode(labels, range(6), spec, seed=1, index=10)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("classes", "sketch", "support", "query"))
    assert not np.array_equal(a.sketch, c.sketch)


def test_episode_roles_are_consistent():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, size=800)
    spec = EpisodeSpec(ways=4, sketch=10, support=3, query=5)
    ep = sample_episode(labels, [0, 2, 4, 6, 7], spec, seed=3, index=0)
    assert len(set(ep.classes)) == 4 and set(ep.classes) <= {0, 2, 4, 6, 7}
    sketch = ep.sketch.reshape(4, 10)
    query = ep.query.reshape(4, 5)
    for k, c in enumerate(ep.classes):
        assert np.all(labels[sketch[k]] == c) and np.all(labels[query[k]] == c)
    assert set(ep.support) <= set(ep.sketch)
    assert np.array_equal(ep.support.reshape(4, 3), sketch[:, :3])
    assert not set(ep.query) & set(ep.sketch)
    assert len(set(ep.sketch)) == 40


def test_separate_query_store():
    labels = np.repeat(np.arange(4), 20)
    query_labels = np.repeat(np.arange(4), 7)
    spec = EpisodeSpec(ways=2, sketch=20, support=5, query=7)
    ep = sample_episode(labels, range(4), spec, seed=0, index=1, query_labels=query_labels)
    assert np.all(query_labels[ep.query.reshape(2, 7)] == ep.classes[:, None])


def test_too_few_images_names_the_class():
    labels = np.array([0] * 30 + [1] * 4)
    with pytest.raises(TooFewImagesError, match="class 1 has 4 images"):
        sample_episode(labels, [0, 1], EpisodeSpec(ways=2, sketch=5, support=2, query=0), seed=0, index=0)


def test_spec_validation():
    with pytest.raises(ValueError, match="support"):
        EpisodeSpec(ways=2, sketch=5, support=6)
    with pytest.raises(ValueError, match="pool"):
        sample_episode(np.zeros(10, dtype=int), [0], EpisodeSpec(ways=2, sketch=1, support=1), 0, 0)


def test_class_members_ascending():
    members = class_members(np.array([2, 0, 2, 1, 0]))
    assert members == {0: [1, 4], 1: [3], 2: [0, 2]}
