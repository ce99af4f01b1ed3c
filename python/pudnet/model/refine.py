"""Transductive refinement of predicted weights on the dataset they were predicted for.

A few SGD steps on the target's last parameter tensors: the centroid cross-entropy of the labelled images
plus, weighted by ``pseudo``, the cross-entropy of every dataset image against its nearest centroid (hard
pseudo-labels). Centroids come from the labelled images and BatchNorm statistics from the dataset, as in the
evaluation protocol; nothing outside the dataset is used. benchmarks/NOTES.md (session 4) has the
experiments behind the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops import centroids, cosine_logits
from ..targets.base import Params, Target


REFINE_IMAGES = 1024
"""A prediction refines on at most this many images of its dataset: every labelled one, the others evenly
spaced (``PudNet.predict_params``). Its gradient passes hold every image's activations; the protocol's
datasets (440 images) are far below it."""


@dataclass(frozen=True)
class Refinement:
    steps: int
    lr: float = 0.2
    last: int = 3  # trailing parameter tensors refined (ConvNet-3: conv3.weight, bn3.weight, bn3.bias)
    pseudo: float = 1.0
    tau: float = 10.0

    def __post_init__(self):
        if self.steps < 0 or self.lr <= 0 or self.last < 1 or self.pseudo < 0:
            raise ValueError(f"refinement needs steps ≥ 0, lr > 0, last ≥ 1 and pseudo ≥ 0, got {self}")


def refinement_loss(features: Tensor, labels: Tensor, tau: float, pseudo: float) -> Tensor:
    """Labelled centroid cross-entropy + ``pseudo`` × nearest-centroid pseudo-label cross-entropy of the
    dataset's ``features`` [N, D] (``labels`` −1 where unlabelled)."""
    known = labels >= 0
    centres = centroids(features[known], labels[known], int(labels.max()) + 1)
    logits = cosine_logits(features, centres, tau)
    loss = F.cross_entropy(logits[known], labels[known])
    if pseudo:
        loss = loss + pseudo * F.cross_entropy(logits, logits.argmax(1).detach())
    return loss


def refined_names(target: Target, refinement: Refinement) -> list[str]:
    """The parameter tensors ``refinement`` changes: the target's last ``refinement.last``."""
    return [spec.name for spec in target.specs()][-refinement.last:]


def refine(target: Target, params: Params, images: Tensor, labels: Tensor, refinement: Refinement,
           differentiable: bool = False, step_sizes: Tensor | None = None) -> Params:
    """``params`` after ``refinement.steps`` SGD steps on the last ``refinement.last`` tensors (float32).

    ``images`` [N, C, H, W] is the dataset, ``labels`` [N] a class index per labelled image and −1 elsewhere.
    ``differentiable``: the steps stay in the autograd graph (second order), so that a loss of the refined
    parameters trains what produced ``params`` (meta-training through the refinement, MAML-style).
    ``step_sizes``: one learning rate per refined tensor instead of ``refinement.lr`` (a PudNet's learned ones,
    ``PudNet.refine_step_sizes``; differentiable ones are trained through the steps).
    """
    if labels.shape != images.shape[:1]:
        raise ValueError(f"refinement needs one label per image: {list(images.shape)} vs {list(labels.shape)}")
    counts = torch.bincount(labels[labels >= 0])
    if len(counts) < 2 or bool((counts == 0).any()):
        raise ValueError("refinement needs labelled images of at least 2 classes (labels 0..K−1, each class present)")
    names = refined_names(target, refinement)
    if step_sizes is None:
        step_sizes = torch.full((len(names),), refinement.lr)
    if step_sizes.shape != (len(names),):
        raise ValueError(f"refinement needs one step size per refined tensor ({len(names)}), got "
                         f"{list(step_sizes.shape)}")
    if differentiable:
        return _refine_in_graph(target, params, images, labels, refinement, step_sizes)
    rates = step_sizes.detach().tolist()
    params = {name: value.float() for name, value in params.items()}
    trained = {name: params[name].clone().requires_grad_() for name in names}
    with torch.enable_grad():
        prefix, rest = target.frozen_prefix(params, images.float(), set(names))
        for _ in range(refinement.steps):
            features, _ = rest(params | trained, prefix)
            loss = refinement_loss(features, labels, refinement.tau, refinement.pseudo)
            grads = torch.autograd.grad(loss, list(trained.values()))
            with torch.no_grad():
                for value, grad, rate in zip(trained.values(), grads, rates):
                    value -= rate * grad
    return params | {name: value.detach() for name, value in trained.items()}


def _refine_in_graph(target: Target, params: Params, images: Tensor, labels: Tensor, refinement: Refinement,
                     step_sizes: Tensor) -> Params:
    """:func:`refine` with every step differentiable; the prefix that does not change is computed once and kept
    in the graph (the earlier tensors get their gradients through it)."""
    trained = {name: params[name] for name in refined_names(target, refinement)}
    step_sizes = step_sizes.to(images.device)
    prefix, rest = target.frozen_prefix(params, images, set(trained), differentiable=True)
    for _ in range(refinement.steps):
        features, _ = rest(params | trained, prefix)
        loss = refinement_loss(features, labels, refinement.tau, refinement.pseudo)
        grads = torch.autograd.grad(loss, list(trained.values()), create_graph=True)
        trained = {name: value - rate * grad
                   for (name, value), grad, rate in zip(trained.items(), grads, step_sizes)}
    return params | trained
