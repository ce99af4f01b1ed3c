"""Pretrained baseline: standard cross-entropy training of the target (its module plus a linear head over
the training classes) on all training-split images of the training classes, less the held-out validation
tail. At test time the head is dropped; the features are used with centroids, BatchNorm statistics from
the group's own dataset, exactly like every other method of the evaluation protocol.

Model selection: the validation score (see :class:`~pudnet.baselines.common.Validation`) is taken
``evals_per_epoch`` times per epoch and the best parameters are kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import hardware
from ..data.sampler import EpisodeSpec
from ..data.store import ImageStore
from ..targets.base import Params, Target
from .common import TRAIN_CLASSES, Validation, params_from_module, split_train_val


@dataclass
class PretrainConfig:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    train_classes: list[int] = field(default_factory=lambda: list(TRAIN_CLASSES))
    val_fraction: float = 0.1  # the last 10% of each training class's images: validation only
    val_groups: int = 40
    val_sketch: int = 100  # validation groups: images per class of the dataset (10 of them labelled)
    val_query: int = 50  # and queries per class, all from the held-out images
    evals_per_epoch: int = 2
    precision: str = "auto"  # pudnet.hardware: bf16 autocast where the CPU runs it natively, else float32
    max_images: int | None = None  # cap on training images (tests); None = all


def train_pretrained(
    target: Target, config: PretrainConfig, store: ImageStore, progress: bool = True
) -> tuple[Params, dict]:
    """Train; return the best parameters on validation and a record of the run."""
    torch.manual_seed(config.seed)
    train_store, val_store = split_train_val(store, config.train_classes, config.val_fraction)
    validation = Validation(val_store, config.train_classes, config.val_groups,
                            spec=EpisodeSpec(4, config.val_sketch, 10, config.val_query))
    order = np.random.default_rng(config.seed)
    n = len(train_store) if config.max_images is None else min(config.max_images, len(train_store))
    pool = np.sort(order.permutation(len(train_store))[:n])
    global_ids = {c: i for i, c in enumerate(sorted(config.train_classes))}
    labels_all = torch.tensor([global_ids[int(c)] for c in train_store.labels[pool]])

    module = target.module()
    head = nn.Linear(target.feature_dim, len(global_ids))
    optimizer = torch.optim.Adam(list(module.parameters()) + list(head.parameters()), lr=config.lr)
    steps_per_epoch = math.ceil(n / config.batch_size)
    eval_at = {round(steps_per_epoch * (k + 1) / config.evals_per_epoch) for k in range(config.evals_per_epoch)}
    history, best = [], (-1.0, None, None)
    started = time.perf_counter()
    bar = tqdm(total=config.epochs * steps_per_epoch, desc="pretrained (CE)", unit="step", disable=not progress)
    for epoch in range(config.epochs):
        perm = torch.from_numpy(order.permutation(n))
        module.train()
        for step in range(steps_per_epoch):
            chosen = perm[step * config.batch_size : (step + 1) * config.batch_size]
            if len(chosen) < 2:
                continue
            x = train_store.tensor(pool[chosen.numpy()])
            with hardware.autocast("cpu", config.precision):
                loss = F.cross_entropy(head(module(x)), labels_all[chosen])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
            if step + 1 in eval_at:
                params = params_from_module(module, target)
                val = validation.score(target, params, config.precision)
                point = {"epoch": epoch + (step + 1) / steps_per_epoch, "loss": loss.item(), "val_acc": val,
                         "elapsed_s": round(time.perf_counter() - started, 1)}
                history.append(point)
                bar.write(f"  epoch {point['epoch']:.2f}: validation top-1 {100 * val:.2f}%")
                if val > best[0]:
                    best = (val, params, point["epoch"])
    bar.close()
    info = {
        "train": asdict(config), "train_images": int(n), "wall_s": round(time.perf_counter() - started, 1),
        "val_acc": best[0], "selected_epoch": best[2], "history": history,
    }
    return best[1], info
