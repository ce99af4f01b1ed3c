"""Task losses: metric (cosine to class centroids), full-classification head, KL consistency, and the
amortised-refinement term (the forward pass pulled toward what prediction-time refinement reaches)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.episodes import TaskBatch
from ..ops import centroids, cosine_logits
from ..targets.base import Params
from .pudnet import PudNet
from .refine import Refinement, refine, refined_names

DISTILL_MODES = ("params", "logits")


@dataclass
class TaskResult:
    loss: Tensor
    metric: Tensor
    full: Tensor
    kl: Tensor
    accuracy: Tensor
    distill: Tensor
    forward: Tensor  # meta-training through the refinement: the forward pass's own metric loss (else 0)


@dataclass(frozen=True)
class Distillation:
    """Amortised refinement: each task's predicted weights are pulled toward the weights ``refinement`` reaches
    from the frozen base on the task's own dataset (its sketch images, the support labelled), so that one
    forward pass does what the refinement's gradient steps do. ``mode`` "params": the fraction of the
    refinement's change to the refined tensors left unexplained, ‖student − teacher‖² / ‖teacher − base‖²
    (1 at the base, 0 at the teacher); "logits": KL(teacher ‖ student) of the query's centroid probabilities at
    the refinement's fixed temperature (the learned one would let the term grow with it)."""

    mode: str
    weight: float
    refinement: Refinement

    def __post_init__(self):
        if self.mode not in DISTILL_MODES or self.weight <= 0:
            raise ValueError(f"distillation needs a mode in {DISTILL_MODES} and a weight > 0, got {self}")


def metric_logits(net: PudNet, params: dict[str, Tensor], tasks: TaskBatch, index: int,
                  tau: float | Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Centroid logits of task ``index``'s queries under ``params`` (temperature ``tau``, default the
    learned one) and the query features.

    The target's BatchNorm statistics come from the task's sketch images (the dataset the weights are
    predicted for); the queries are normalised with them and never contribute to them.
    """
    target = net.target
    sketch_features, stats = target.forward(params, tasks.sketch[index])
    query_features, _ = target.forward(params, tasks.query[index], stats)
    support = sketch_features[tasks.support_positions]
    centres = centroids(support, tasks.labels("support"), tasks.spec.ways)
    return cosine_logits(query_features, centres, net.tau if tau is None else tau), query_features


def task_losses(net: PudNet, params: Params, tasks: TaskBatch, index: int, global_ids: Tensor) -> TaskResult:
    """Losses of task ``index`` of the meta-batch, with its (predicted) ``params``.

    ``global_ids`` maps an original class id to its index among all training classes.
    """
    logits, query_features = metric_logits(net, params, tasks, index)
    query_labels = tasks.labels("query")
    metric = F.cross_entropy(logits, query_labels)
    accuracy = (logits.argmax(1) == query_labels).float().mean()
    zero = logits.new_zeros(())
    full = kl = zero
    if net.config.loss != "metric":
        if net.head is None:
            raise ValueError(f"loss {net.config.loss!r} trains the auxiliary head, which this PudNet has not "
                             "(num_train_classes 0: a released checkpoint); train it with loss 'metric'")
        task_global = global_ids[tasks.classes[index]]
        head_logits = net.head(query_features)
        full = F.cross_entropy(head_logits, task_global[query_labels])
        if net.config.loss == "full":
            kl = metric_head_kl(logits, head_logits, task_global)
    return TaskResult(metric + full + kl, metric, full, kl, accuracy, zero, zero)


def distillation_loss(net: PudNet, weights: list[Tensor], tasks: TaskBatch, index: int,
                      distillation: Distillation) -> Tensor:
    """:class:`Distillation`'s term for task ``index`` (the teacher is computed here, without gradient)."""
    if net.config.weight_mode != "frozen_base":
        raise ValueError("distillation refines the frozen base: it needs weight_mode 'frozen_base', got "
                         f"{net.config.weight_mode!r}")
    base = net.base_params()
    teacher = refine(net.target, base, tasks.sketch[index], tasks.sketch_labels[index], distillation.refinement)
    student = net.params_of(weights, index)
    if distillation.mode == "params":
        return unexplained_change(student, teacher, base, refined_names(net.target, distillation.refinement))
    with torch.no_grad():
        teacher_logits, _ = metric_logits(net, teacher, tasks, index, distillation.refinement.tau)
    student_logits, _ = metric_logits(net, student, tasks, index, distillation.refinement.tau)
    return F.kl_div(student_logits.log_softmax(-1), teacher_logits.log_softmax(-1), log_target=True,
                    reduction="batchmean")


def unexplained_change(student: Params, teacher: Params, base: Params, names: list[str]) -> Tensor:
    """Mean over ``names`` of ‖student − teacher‖² / ‖teacher − base‖²: 1 at the base, 0 at the teacher."""
    fractions = [(student[n] - teacher[n]).pow(2).sum() / (teacher[n] - base[n]).pow(2).sum().clamp(min=1e-12)
                 for n in names]
    return torch.stack(fractions).mean()


def metric_head_kl(metric_logits: Tensor, head_logits: Tensor, task_global: Tensor) -> Tensor:
    """KL(p_metric ‖ p_head), the metric probabilities zero-padded to all training classes."""
    p_metric = metric_logits.softmax(-1)
    log_p_metric = metric_logits.log_softmax(-1)
    log_p_head = head_logits.log_softmax(-1)[:, task_global]
    return (p_metric * (log_p_metric - log_p_head)).sum(-1).mean()


def meta_batch_losses(net: PudNet, tasks: TaskBatch, global_ids: Tensor,
                      distillation: Distillation | None = None, unroll: Refinement | None = None,
                      forward_weight: float = 0.0) -> TaskResult:
    """Mean losses over the tasks of a meta-batch, their weights predicted in one forward pass; with a
    ``distillation`` plus its weight times :func:`distillation_loss`; with ``unroll``, the task losses are
    those of the weights after that refinement on the task's sketch set, differentiated through it, plus
    ``forward_weight`` × the forward pass's own metric loss."""
    labels = tasks.sketch_labels if net.config.uses_labels else None  # as prediction passes them
    weights = net(tasks.sketch, labels)
    results = []
    for b in range(len(tasks.sketch)):
        params = net.params_of(weights, b)
        forward = None
        if unroll is not None:
            if forward_weight:
                forward = task_losses(net, params, tasks, b, global_ids).metric
            params = refine(net.target, params, tasks.sketch[b], tasks.sketch_labels[b], unroll, differentiable=True,
                            step_sizes=net.refine_step_sizes())
        result = task_losses(net, params, tasks, b, global_ids)
        if forward is not None:
            result.forward = forward
            result.loss = result.loss + forward_weight * forward
        if distillation is not None:
            result.distill = distillation_loss(net, weights, tasks, b, distillation)
            result.loss = result.loss + distillation.weight * result.distill
        results.append(result)
    mean = lambda name: torch.stack([getattr(r, name) for r in results]).mean()  # noqa: E731
    return TaskResult(*(mean(f.name) for f in fields(TaskResult)))
