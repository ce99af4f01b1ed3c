"""Task losses: metric (cosine to class centroids), full-classification head, KL consistency."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.episodes import TaskBatch
from ..ops import centroids, cosine_logits
from .pudnet import PudNet

CONTRAST_MARGIN = 0.1


@dataclass
class TaskResult:
    loss: Tensor
    metric: Tensor
    full: Tensor
    kl: Tensor
    accuracy: Tensor
    contrast: Tensor


def metric_logits(net: PudNet, params: dict[str, Tensor], tasks: TaskBatch, index: int) -> tuple[Tensor, Tensor]:
    """Centroid logits of task ``index``'s queries under ``params`` and the query features.

    The target's BatchNorm statistics come from the task's sketch images (the dataset the weights are
    predicted for); the queries are normalised with them and never contribute to them.
    """
    target = net.target
    sketch_features, stats = target.forward(params, tasks.sketch[index])
    query_features, _ = target.forward(params, tasks.query[index], stats)
    support = sketch_features[tasks.support_positions]
    centres = centroids(support, tasks.labels("support"), tasks.spec.ways)
    return cosine_logits(query_features, centres, net.tau), query_features


def task_losses(net: PudNet, weights: list[Tensor], tasks: TaskBatch, index: int, global_ids: Tensor) -> TaskResult:
    """Losses of task ``index`` of the meta-batch, with its predicted ``weights``.

    ``global_ids`` maps an original class id to its index among all training classes.
    """
    logits, query_features = metric_logits(net, net.params_of(weights, index), tasks, index)
    query_labels = tasks.labels("query")
    metric = F.cross_entropy(logits, query_labels)
    accuracy = (logits.argmax(1) == query_labels).float().mean()
    zero = logits.new_zeros(())
    full = kl = zero
    if net.config.loss != "metric":
        task_global = global_ids[tasks.classes[index]]
        head_logits = net.head(query_features)
        full = F.cross_entropy(head_logits, task_global[query_labels])
        if net.config.loss == "full":
            kl = metric_head_kl(logits, head_logits, task_global)
    return TaskResult(metric + full + kl, metric, full, kl, accuracy, zero)


def contrast_loss(net: PudNet, weights: list[Tensor], tasks: TaskBatch, index: int, own_metric: Tensor) -> Tensor:
    """Hinge: task ``index``'s own weights should reach a metric loss at least ``CONTRAST_MARGIN`` below the
    weights predicted for the next task of the meta-batch, on this task (its data, statistics, centroids)."""
    other = (index + 1) % len(tasks.sketch)
    logits, _ = metric_logits(net, net.params_of(weights, other), tasks, index)
    foreign_metric = F.cross_entropy(logits, tasks.labels("query"))
    return F.relu(own_metric - foreign_metric + CONTRAST_MARGIN)


def metric_head_kl(metric_logits: Tensor, head_logits: Tensor, task_global: Tensor) -> Tensor:
    """KL(p_metric ‖ p_head), the metric probabilities zero-padded to all training classes."""
    p_metric = metric_logits.softmax(-1)
    log_p_metric = metric_logits.log_softmax(-1)
    log_p_head = head_logits.log_softmax(-1)[:, task_global]
    return (p_metric * (log_p_metric - log_p_head)).sum(-1).mean()


def meta_batch_losses(net: PudNet, tasks: TaskBatch, global_ids: Tensor) -> TaskResult:
    """Mean losses over the tasks of a meta-batch, their weights predicted in one forward pass; with
    ``config.contrast`` > 0 (and more than one task) plus that weight times :func:`contrast_loss`."""
    labels = tasks.sketch_labels if net.config.sketch_support else None
    weights = net(tasks.sketch, labels)
    results = []
    for b in range(len(tasks.sketch)):
        result = task_losses(net, weights, tasks, b, global_ids)
        if net.config.contrast > 0 and len(tasks.sketch) > 1:
            result.contrast = contrast_loss(net, weights, tasks, b, result.metric)
            result.loss = result.loss + net.config.contrast * result.contrast
        results.append(result)
    mean = lambda name: torch.stack([getattr(r, name) for r in results]).mean()  # noqa: E731
    return TaskResult(*(mean(name) for name in ("loss", "metric", "full", "kl", "accuracy", "contrast")))
