"""A data-reading update of the target's last convolution, built from the dataset's labelled class prototypes.

One gradient step of a centroid loss on the last convolution ``W`` is ``Σ_x g(x) ⊗ patch(x)``: the signal at
each output position times the input patch there. Grouped by class, that is (to first order) a sum over classes
and positions of an output direction times the class's mean input patch. This module predicts such an update in
closed form, with no gradient step:

    ΔW = γ · rms(W) · 1/(K·P) · Σ_k Σ_p g(u_kp) ⊗ v_kp,

``v_kp`` the mean input patch at position ``p`` of the labelled images of class ``k``, centred over the classes
and scaled to unit RMS (the class prototypes of the last block's input under the frozen base), ``u_kp = W v_kp``
the base's output for it, scaled to unit RMS per position, and ``g`` a learned per-position MLP (its last layer
starts at zero, so a fresh PudNet predicts the base). benchmarks/NOTES.md (sessions 8 and 10) has the experiments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..targets.base import Params, Target

EPS = 1e-6


def last_conv(target: Target) -> str:
    """The name of the target's last 3×3 convolution weight (the tensor the update changes)."""
    names = [s.name for s in target.specs() if s.kind == "conv" and s.shape[2:] == (3, 3)]
    if not names:
        raise ValueError(f"target {target.name!r} has no 3×3 convolution for a prototype update")
    return names[-1]


class PrototypeUpdate(nn.Module):
    """``ΔW`` of the target's last 3×3 convolution from a dataset's labelled class prototypes (module doc)."""

    def __init__(self, target: Target, hidden: int = 64):
        super().__init__()
        self.target, self.name = target, last_conv(target)
        out_channels = dict((s.name, s.shape) for s in target.specs())[self.name][0]
        self.hidden = nn.Linear(out_channels, hidden)
        self.out = nn.Linear(hidden, out_channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, base: Params, images: Tensor, labels: Tensor) -> Tensor:
        """``ΔW`` [B, *W.shape] for B datasets ``images`` [B, N, C, H, W] with ``labels`` [B, N] (−1: unlabelled)."""
        return torch.stack([self._update(base, x, y) for x, y in zip(images, labels)])

    def _update(self, base: Params, images: Tensor, labels: Tensor) -> Tensor:
        weight = base[self.name]
        known = labels >= 0
        with torch.no_grad():  # the base is frozen: nothing to learn before the update
            block_input, _ = self.target.frozen_prefix(base, images, {self.name})  # the dataset's statistics
            patches = F.unfold(block_input[known].float(), 3, padding=1)
            prototypes = self._centred_prototypes(patches, labels[known])  # [K, D, P]
            outputs = torch.einsum("od,kdp->kpo", weight.flatten(1).float(), prototypes)
            outputs = outputs / (outputs.pow(2).mean(-1, keepdim=True).sqrt() + EPS)  # [K, P, O]
        directions = self.out(F.leaky_relu(self.hidden(outputs), 0.2))  # [K, P, O]
        k, p = directions.shape[:2]
        update = torch.einsum("kpo,kdp->od", directions, prototypes) / (k * p)
        scale = self.gain * weight.pow(2).mean().sqrt()
        return (scale * update).view_as(weight)

    @staticmethod
    def _centred_prototypes(patches: Tensor, labels: Tensor) -> Tensor:
        """Per class the mean patch [D, P] of the labelled ``patches`` [n, D, P], centred over the classes,
        unit RMS."""
        onehot = F.one_hot(labels, int(labels.max()) + 1).float()  # [n, K]
        means = torch.einsum("nk,ndp->kdp", onehot, patches) / onehot.sum(0).clamp(min=1)[:, None, None]
        centred = means - means.mean(0, keepdim=True)
        return centred / (centred.pow(2).mean().sqrt() + EPS)
