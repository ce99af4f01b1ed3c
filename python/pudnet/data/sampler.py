"""The reference episodic sampler: the specification the Rust sampler reproduces bit for bit.

An episode (one task, one sub-dataset) is a pure function of ``(seed, index)``:

Random numbers
    ``SplitMix64`` with the state initialised to ``mix(seed) ^ index`` where ``mix`` is one SplitMix64
    output step applied to ``seed`` (all arithmetic modulo 2**64). ``next()`` adds the golden gamma
    ``0x9E3779B97F4A7C15`` to the state and returns the standard SplitMix64 finaliser of it.
    ``below(n)`` draws uniformly from ``[0, n)`` by rejection: ``t = (2**64 - n) % n``; draw ``x`` until
    ``x >= t``; return ``x % n``.

Choosing from a list
    ``choose(items, k)`` is a partial Fisher–Yates shuffle of a copy of ``items``: for ``i`` in
    ``0..k``: ``j = i + below(len - i)``; swap ``items[i]``, ``items[j]``. It returns ``items[:k]`` in that
    order.

An episode
    1. ``classes = choose(sorted(class_pool), ways)``; episode label ``k`` means ``classes[k]``.
    2. For each class ``c`` in that order, with ``members`` = indices ``i`` (ascending) where
       ``labels[i] == c``: ``picked = choose(members, sketch + query)`` when the queries come from the
       same store, else ``choose(members, sketch)``. The first ``sketch`` are the class's sketch images,
       the first ``support`` of those its labelled support, and the next ``query`` its queries.
    3. When queries come from another store (``query_labels``), after step 2 for every class, for each
       class in the same order: ``choose(query members, query)``.

Index arrays are grouped by class in episode-label order, so labels are ``repeat(arange(ways), n)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def _finalise(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


class SplitMix64:
    """The sampler's random number generator (see the module docstring)."""

    def __init__(self, seed: int, index: int):
        mixed = _finalise((int(seed) + GOLDEN_GAMMA) & MASK64)
        self.state = (mixed ^ int(index)) & MASK64

    def next(self) -> int:
        self.state = (self.state + GOLDEN_GAMMA) & MASK64
        return _finalise(self.state)

    def below(self, n: int) -> int:
        if n <= 0:
            raise ValueError(f"below(n) needs n > 0, got {n}")
        threshold = ((1 << 64) - n) % n
        while True:
            x = self.next()
            if x >= threshold:
                return x % n

    def choose(self, items: list[int], k: int) -> list[int]:
        items = list(items)
        for i in range(k):
            j = i + self.below(len(items) - i)
            items[i], items[j] = items[j], items[i]
        return items[:k]


@dataclass(frozen=True)
class EpisodeSpec:
    """How many classes an episode holds and how many images of each role per class."""

    ways: int = 4
    sketch: int = 50  # images per class the weights are predicted from
    support: int = 10  # of those, labelled per class (class centroids)
    query: int = 15  # per class, disjoint from the sketch images

    def __post_init__(self):
        if self.ways < 1 or self.sketch < 1 or self.query < 0:
            raise ValueError(f"invalid episode spec {self}")
        if not 1 <= self.support <= self.sketch:
            raise ValueError(f"support ({self.support}) must be between 1 and sketch ({self.sketch})")


@dataclass(frozen=True)
class Episode:
    """Index arrays of one episode, grouped by class in episode-label order."""

    classes: np.ndarray  # [ways] original class ids
    sketch: np.ndarray  # [ways * sketch] indices into the sketch store
    support: np.ndarray  # [ways * support] indices into the sketch store (a subset of ``sketch``)
    query: np.ndarray  # [ways * query] indices into the query store

    def labels(self, role: str) -> np.ndarray:
        n = len(getattr(self, role)) // len(self.classes)
        return np.repeat(np.arange(len(self.classes)), n)


class TooFewImagesError(ValueError):
    """A class holds fewer images than an episode needs."""


def class_members(labels: np.ndarray) -> dict[int, list[int]]:
    """Ascending indices of each class."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    classes, starts = np.unique(sorted_labels, return_index=True)
    ends = list(starts[1:]) + [len(order)]
    return {int(c): order[s:e].tolist() for c, s, e in zip(classes, starts, ends)}


def _members_of(members: dict[int, list[int]], c: int, needed: int, role: str) -> list[int]:
    found = members.get(c, [])
    if len(found) < needed:
        raise TooFewImagesError(
            f"class {c} has {len(found)} images for the {role}, the episode needs {needed}"
        )
    return found


def sample_episode(
    labels: np.ndarray,
    class_pool: list[int],
    spec: EpisodeSpec,
    seed: int,
    index: int,
    query_labels: np.ndarray | None = None,
    *,
    members: dict[int, list[int]] | None = None,
    query_members: dict[int, list[int]] | None = None,
) -> Episode:
    """Episode ``index`` of the stream seeded by ``seed`` (pure function; see the module docstring).

    ``members``/``query_members`` may be passed to reuse :func:`class_members` across calls.
    """
    pool = sorted(int(c) for c in class_pool)
    if len(pool) < spec.ways:
        raise ValueError(f"the class pool holds {len(pool)} classes, an episode needs {spec.ways}")
    members = members if members is not None else class_members(np.asarray(labels))
    separate_queries = query_labels is not None
    if separate_queries and query_members is None:
        query_members = class_members(np.asarray(query_labels))

    rng = SplitMix64(seed, index)
    classes = rng.choose(pool, spec.ways)
    sketch, support, query = [], [], []
    per_class = spec.sketch + (0 if separate_queries else spec.query)
    for c in classes:
        picked = rng.choose(_members_of(members, c, per_class, "sketch"), per_class)
        sketch += picked[: spec.sketch]
        support += picked[: spec.support]
        query += picked[spec.sketch :]
    if separate_queries:
        for c in classes:
            query += rng.choose(_members_of(query_members, c, spec.query, "query"), spec.query)
    as_array = lambda xs: np.asarray(xs, dtype=np.int64)  # noqa: E731
    return Episode(as_array(classes), as_array(sketch), as_array(support), as_array(query))
