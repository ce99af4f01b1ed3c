"""Training from scratch, per group: the target from random init (the random-init floor's distribution),
plus a linear head over the group's classes, trained with Adam — or Adam with gradient centralisation (GC:
every convolution/linear weight gradient has its mean over the input dimensions removed before the step) —
for a fixed number of epochs on the group's labelled images. The head is then dropped and the group is
scored like every other method (centroids of the 10 labelled per class, BatchNorm statistics from the
group's dataset).

Which labelled images:
- ``labelled="support"`` (default, the protocol): only the 10 labelled images per class the centroids use;
- ``labelled="all"``: every image of the group's dataset counted as labelled (100 per class by default), as
  in the table of DESIGN.md. This assumes labels the protocol does not give; it is named distinctly
  (``..._alldata``) wherever it is reported.

Each call records its wall time (training only, not scoring) in ``seconds``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import hardware
from ..data.episodes import TaskBatch
from ..targets.base import Params, Target
from .common import load_params_into, params_from_module


@dataclass
class ScratchConfig:
    epochs: int = 5
    optimiser: str = "adam"  # "adam" | "gc"
    labelled: str = "support"  # "support" (10/class, the protocol) | "all" (the whole group dataset)
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    precision: str = "auto"  # pudnet.hardware

    def __post_init__(self):
        if self.optimiser not in ("adam", "gc"):
            raise ValueError(f"optimiser must be 'adam' or 'gc', got {self.optimiser!r}")
        if self.labelled not in ("support", "all"):
            raise ValueError(f"labelled must be 'support' or 'all', got {self.labelled!r}")
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")

    @property
    def name(self) -> str:
        labelled = "10perclass" if self.labelled == "support" else "alldata"
        return f"scratch_{self.optimiser}_{self.epochs}ep_{labelled}"


def centralise_gradients(parameters) -> None:
    """Gradient centralisation (Yong et al., 2020): for weights of rank > 1, subtract the gradient's mean
    over all dimensions but the first (the output channel)."""
    for p in parameters:
        if p.grad is not None and p.grad.dim() > 1:
            p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.grad.dim())), keepdim=True))


class ScratchBaseline:
    """Callable ``TaskBatch -> params``: trains a fresh target on task 0's labelled images."""

    def __init__(self, target: Target, config: ScratchConfig | None = None):
        self.target, self.config = target, config or ScratchConfig()
        self.seconds: list[float] = []
        self.calls = 0

    @property
    def name(self) -> str:
        return self.config.name

    def labelled_images(self, tasks: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.labelled == "support":
            return tasks.sketch[0][tasks.support_positions], tasks.labels("support")
        return tasks.sketch[0], tasks.labels("sketch")

    def __call__(self, tasks: TaskBatch) -> Params:
        config, target = self.config, self.target
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + self.calls)
        self.calls += 1
        started = time.perf_counter()
        x, y = self.labelled_images(tasks)
        module = target.module()
        load_params_into(module, target.random_params(generator))
        head = nn.Linear(target.feature_dim, tasks.spec.ways)
        bound = 1.0 / math.sqrt(target.feature_dim)
        with torch.no_grad():
            head.weight.copy_(torch.rand(head.weight.shape, generator=generator) * 2 * bound - bound)
            head.bias.zero_()
        module.to(x.device), head.to(x.device)
        parameters = list(module.parameters()) + list(head.parameters())
        optimizer = torch.optim.Adam(parameters, lr=config.lr)
        module.train()
        with torch.enable_grad():  # the evaluator calls baselines under no_grad
            for _ in range(config.epochs):
                perm = torch.randperm(len(x), generator=generator).to(x.device)
                for start in range(0, len(x), config.batch_size):
                    chosen = perm[start : start + config.batch_size]
                    if len(chosen) < 2:
                        continue
                    with hardware.autocast(x.device, config.precision):
                        loss = F.cross_entropy(head(module(x[chosen])).float(), y[chosen])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.optimiser == "gc":
                        centralise_gradients(parameters)
                    optimizer.step()
        params = params_from_module(module, target)
        self.seconds.append(time.perf_counter() - started)
        return params
