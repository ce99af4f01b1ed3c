"""ProtoNet baseline: episodic training of the target itself on tasks of the training classes, with the
episode shape of PudNet's meta-training (4-way, 50 sketch images per class of which 10 labelled support,
15 queries per class). As in :func:`pudnet.model.losses.task_losses`, the target's BatchNorm statistics come
from the task's sketch set, the support features are those of its first 10 images per class, and the
queries are normalised with the sketch statistics (never their own).

Distance: ``cosine`` (τ·cos to the centroids, τ learnable, initialised like PudNet's) or ``euclidean``
(−‖q − c‖², the original ProtoNet). Whatever the training distance, the evaluation protocol scores every
method with cosine centroids; model selection uses that score on the validation split.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import hardware
from ..data.episodes import EpisodeStream
from ..data.sampler import EpisodeSpec
from ..data.store import ImageStore
from ..ops import centroids, cosine_logits
from ..targets.base import Params, Target
from .common import TRAIN_CLASSES, Validation, params_from_module, split_train_val


@dataclass
class ProtoNetConfig:
    steps: int = 600  # episodes (one task per step)
    lr: float = 1e-3
    distance: str = "cosine"  # "cosine" | "euclidean"
    tau_init: float = 10.0
    ways: int = 4
    sketch: int = 50
    support: int = 10
    query: int = 15
    seed: int = 0
    train_classes: list[int] = field(default_factory=lambda: list(TRAIN_CLASSES))
    val_fraction: float = 0.1
    val_groups: int = 40
    val_sketch: int = 100  # validation groups: images per class of the dataset (10 of them labelled)
    val_query: int = 50  # and queries per class, all from the held-out images
    val_every: int = 100
    precision: str = "auto"  # pudnet.hardware

    def __post_init__(self):
        if self.distance not in ("cosine", "euclidean"):
            raise ValueError(f"distance must be 'cosine' or 'euclidean', got {self.distance!r}")

    @property
    def spec(self) -> EpisodeSpec:
        return EpisodeSpec(self.ways, self.sketch, self.support, self.query)


def episode_loss(target: Target, params: Params, tasks, distance: str, tau: torch.Tensor):
    spec = tasks.spec
    sketch_features, stats = target.forward(params, tasks.sketch[0])
    query_features, _ = target.forward(params, tasks.query[0], stats)
    centres = centroids(sketch_features[tasks.support_positions], tasks.labels("support"), spec.ways)
    if distance == "cosine":
        logits = cosine_logits(query_features, centres, tau)
    else:
        logits = -(query_features.float()[:, None, :] - centres.float()[None, :, :]).pow(2).sum(-1)
    labels = tasks.labels("query")
    return F.cross_entropy(logits.float(), labels), (logits.argmax(1) == labels).float().mean()


def train_protonet(
    target: Target, config: ProtoNetConfig, store: ImageStore, progress: bool = True
) -> tuple[Params, dict]:
    """Train; return the best parameters on validation and a record of the run."""
    torch.manual_seed(config.seed)
    train_store, val_store = split_train_val(store, config.train_classes, config.val_fraction)
    validation = Validation(val_store, config.train_classes, config.val_groups,
                            spec=EpisodeSpec(4, config.val_sketch, 10, config.val_query))
    stream = EpisodeStream(train_store, config.train_classes, config.spec, config.seed)

    module = target.module()
    params = dict(module.named_parameters())  # the functional forward runs on the module's own tensors
    log_tau = nn.Parameter(torch.tensor(math.log(config.tau_init)))
    trainable = list(module.parameters()) + ([log_tau] if config.distance == "cosine" else [])
    optimizer = torch.optim.Adam(trainable, lr=config.lr)
    history, best = [], (-1.0, None, None)
    window: list[tuple[float, float]] = []
    started = time.perf_counter()
    bar = tqdm(total=config.steps, desc=f"protonet ({config.distance})", unit="task", disable=not progress)
    for step in range(1, config.steps + 1):
        tasks = stream.batch([step - 1])
        with hardware.autocast("cpu", config.precision):
            loss, acc = episode_loss(target, params, tasks, config.distance, log_tau.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append((loss.item(), acc.item()))
        bar.update(1)
        if step % config.val_every == 0 or step == config.steps:
            val = validation.score(target, params_from_module(module, target), config.precision)
            point = {
                "step": step, "loss": sum(w[0] for w in window) / len(window),
                "train_acc": sum(w[1] for w in window) / len(window), "val_acc": val,
                "tau": log_tau.exp().item(), "elapsed_s": round(time.perf_counter() - started, 1),
            }
            window = []
            history.append(point)
            bar.set_postfix(loss=f"{point['loss']:.3f}", val=f"{100 * val:.2f}")
            bar.write(f"  step {step}: train-task top-1 {100 * point['train_acc']:.1f}%, "
                      f"validation top-1 {100 * val:.2f}%")
            if val > best[0]:
                best = (val, params_from_module(module, target), step)
    bar.close()
    info = {
        "train": asdict(config), "wall_s": round(time.perf_counter() - started, 1),
        "val_acc": best[0], "selected_step": best[2], "tau": log_tau.exp().item(), "history": history,
    }
    return best[1], info
