"""The evaluation protocol: G groups of unseen classes, each a dataset to predict weights from, 10 labelled
samples per class for centroids and disjoint query images; mean top-1 ± 95% CI and prediction latency.

Every method is scored on the same groups. The target's BatchNorm statistics always come from the group's
dataset (never from its queries).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import hardware
from .data.episodes import EpisodeStream, TaskBatch
from .data.sampler import EpisodeSpec
from .data.store import ImageStore
from .model.pudnet import PudNet
from .model.refine import Refinement, refine
from .ops import centroids, cosine_logits
from .targets.base import STATS_CHUNK, Params, Stats, Target


@dataclass
class EvalConfig:
    groups: int = 100
    ways: int = 4
    sketch: int = 100  # images per class in each group's dataset
    support: int = 10  # of those, labelled per class (centroids)
    query: int = 50  # per class, from the query store (the test split)
    classes: list[int] = field(default_factory=lambda: [6, 7, 8, 9])
    foreign_classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])
    seed: int = 20241
    spread_datasets: int = 10  # datasets per class set for the weight-spread figure
    precision: str = "auto"  # of every method's passes (pudnet.hardware)

    @property
    def spec(self) -> EpisodeSpec:
        return EpisodeSpec(self.ways, self.sketch, self.support, self.query)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% confidence interval (1.96·std/√n)."""
    array = np.asarray(values, dtype=np.float64)
    if len(array) < 2:
        return float(array.mean()), math.nan
    return float(array.mean()), float(1.96 * array.std(ddof=1) / math.sqrt(len(array)))


def accuracy_with(target: Target, params: Params, tasks: TaskBatch, index: int, stats: Stats | None = None
                  ) -> float:
    """Top-1 of the centroid classifier on task ``index``'s queries; BatchNorm statistics from its dataset
    (in bounded memory: :meth:`Target.dataset_stats`) unless ``stats`` are given."""
    dataset = tasks.sketch[index]
    if stats is None and len(dataset) <= STATS_CHUNK:  # one pass gives the statistics and the support's features
        features, stats = target.forward(params, dataset)
        support = features[tasks.support_positions]
    else:
        stats = stats if stats is not None else target.dataset_stats(params, dataset)
        support, _ = target.forward(params, dataset[tasks.support_positions], stats)
    query = torch.cat([target.forward(params, part, stats)[0] for part in tasks.query[index].split(STATS_CHUNK)])
    logits = cosine_logits(query, centroids(support, tasks.labels("support"), tasks.spec.ways), 1.0)
    return (logits.argmax(1) == tasks.labels("query")).float().mean().item()


def refined_baseline(make_params: Callable[[TaskBatch], Params], target: Target, refinement: Refinement
                     ) -> Callable[[TaskBatch], Params]:
    """A baseline's parameters refined on each group's dataset exactly as a refining PudNet refines its own
    (model/refine.py): what the refinement alone is worth."""
    def make(tasks: TaskBatch) -> Params:
        return refine(target, make_params(tasks), tasks.sketch[0], tasks.sketch_labels[0], refinement)

    return make


def flat_weights(params: Params) -> Tensor:
    return torch.cat([p.flatten() for p in params.values()])


def relative_spread(a: list[Tensor], b: list[Tensor] | None = None) -> float:
    """Mean relative distance ‖w_i − w_j‖ / mean(‖w_i‖, ‖w_j‖) over pairs (within ``a``, or across a×b)."""
    pairs = [(x, y) for i, x in enumerate(a) for y in (a[i + 1:] if b is None else b)]
    return float(np.mean([(2 * (x - y).norm() / (x.norm() + y.norm())).item() for x, y in pairs]))


class Evaluator:
    """The protocol's groups, drawn on the CPU and scored on ``device`` in ``config.precision``."""

    def __init__(self, train_store: ImageStore, test_store: ImageStore, config: EvalConfig,
                 device: str | torch.device = "cpu"):
        self.config, self.device = config, hardware.resolve_device(device)
        self.groups = EpisodeStream(train_store, config.classes, config.spec, config.seed, query_store=test_store)
        foreign_spec = EpisodeSpec(config.ways, config.sketch, config.support, 0)
        self.foreign = EpisodeStream(train_store, config.foreign_classes, foreign_spec, config.seed + 1)

    def task(self, index: int) -> TaskBatch:
        return self.groups.batch([index]).to(self.device)

    def foreign_task(self, index: int) -> TaskBatch:
        return self.foreign.batch([index]).to(self.device)

    def predict(self, net: PudNet, tasks: TaskBatch) -> Params:
        """PudNet's parameters for the group's dataset, through the public path (:meth:`PudNet.predict`'s):
        the dataset and its labelled support as a user holds them."""
        dataset = tasks.sketch[0]
        support = (dataset[tasks.support_positions], tasks.labels("support"))
        params, _ = net.predict_params(*net.labelled_dataset(dataset, support), self.config.precision)
        return params

    def scoring(self):
        """The autocast context every method is scored in."""
        return hardware.autocast(self.device, self.config.precision)

    def on_device(self, params: Params) -> Params:
        return {name: value.to(self.device) for name, value in params.items()}

    @torch.no_grad()
    def run(self, net: PudNet, progress: bool = True, baselines: dict | None = None) -> dict:
        """Scores of PudNet (own and foreign sketch), the random-init floor and any ``baselines``
        (name → params-producing callable of the task batch) on the same groups."""
        config, target = self.config, net.target
        scores: dict[str, list[float]] = {"pudnet": [], "pudnet_foreign_sketch": [], "random_init": []}
        scores.update({name: [] for name in baselines or {}})
        seconds = []
        generator = torch.Generator().manual_seed(config.seed)
        for g in tqdm(range(config.groups), desc="evaluating groups", disable=not progress):
            tasks = self.task(g)
            started = time.perf_counter()
            params = self.predict(net, tasks)
            seconds.append(time.perf_counter() - started)
            foreign = self.predict(net, self.foreign_task(g))
            candidates = {"pudnet": params, "pudnet_foreign_sketch": foreign,
                          "random_init": target.random_params(generator)}
            with self.scoring():
                candidates.update({name: make_params(tasks) for name, make_params in (baselines or {}).items()})
                for name, candidate in candidates.items():
                    scores[name].append(accuracy_with(target, self.on_device(candidate), tasks, 0))
        return self.summarise(net, scores, seconds, progress)

    def summarise(self, net: PudNet, scores: dict[str, list[float]], seconds: list[float], progress: bool = False
                  ) -> dict:
        result = {"groups": self.config.groups, "accuracy": {}, "scores": scores}
        for name, values in scores.items():
            mean, ci = mean_ci([100 * v for v in values])
            result["accuracy"][name] = {"mean": mean, "ci95": ci}
        diff = [100 * (a - b) for a, b in zip(scores["pudnet"], scores["pudnet_foreign_sketch"])]
        mean, ci = mean_ci(diff)
        result["own_minus_foreign"] = {"mean": mean, "ci95": ci}
        result["median_prediction_s"] = statistics.median(seconds)
        result["weight_spread"] = self.weight_spread(net, progress)
        return result

    def weight_spread(self, net: PudNet, progress: bool = False) -> dict:
        """Relative spread of predicted weights within and between datasets of different class sets: of the
        raw parameters, and of their canonical form (``Target.canonical``: without the rescalings the
        network's function ignores, which a hypernetwork can vary freely without changing any prediction)."""
        n = self.config.spread_datasets
        datasets = [self.task(g) for g in range(n)] + [self.foreign_task(g) for g in range(n)]
        predicted = [self.predict(net, tasks)
                     for tasks in tqdm(datasets, desc="weight spread (predictions)", disable=not progress)]
        unseen, train = predicted[:n], predicted[n:]
        spread = {}
        for prefix, view in (("", lambda p: p), ("function_", net.target.canonical)):
            a, b = ([flat_weights(view(p)) for p in sets] for sets in (unseen, train))
            spread.update({
                f"{prefix}within_unseen": relative_spread(a),
                f"{prefix}within_train_classes": relative_spread(b),
                f"{prefix}between": relative_spread(a, b),
            })
        return spread


def split_per_class(store: ImageStore, first: int) -> tuple[ImageStore, ImageStore]:
    """(the first ``first`` images of every class, the rest), in file order."""
    head = np.concatenate([np.flatnonzero(store.labels == c)[:first] for c in store.classes])
    rest = np.setdiff1d(np.arange(len(store)), head)
    return store.subset(np.sort(head)), store.subset(rest)


def format_report(result: dict, labels: dict[str, str] | None = None) -> str:
    labels = labels or {}
    lines = [f"{result['groups']} groups; top-1 % (± 95% CI)"]
    for name, acc in result["accuracy"].items():
        lines.append(f"  {labels.get(name, name):<52} {acc['mean']:6.2f} ± {acc['ci95']:.2f}")
    d = result["own_minus_foreign"]
    lines.append(f"  own sketch − foreign sketch (paired)                    {d['mean']:+6.2f} ± {d['ci95']:.2f}")
    s = result["weight_spread"]
    for prefix, what in (("", "predicted weights"), ("function_", "the same without ignored rescalings")):
        if f"{prefix}between" in s:
            lines.append(
                f"  relative spread of {what}: within the evaluated datasets {s[prefix + 'within_unseen']:.4f}, "
                f"within foreign-class datasets {s[prefix + 'within_train_classes']:.4f}, "
                f"between {s[prefix + 'between']:.4f}"
            )
    lines.append(f"  median prediction time: {1000 * result['median_prediction_s']:.1f} ms")
    return "\n".join(lines)
