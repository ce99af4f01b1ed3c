"""Meta-training: many sub-datasets of the training classes, each a task; Adam on the task losses."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import atomic_save, load_checkpoint, read_safetensors, save_checkpoint
from .data import datasets
from .data.episodes import EpisodeStream
from .evaluate import EvalConfig, Evaluator
from .data.sampler import EpisodeSpec
from .data.sampler import class_members
from .data.store import ImageStore, hold_out, with_rotated_classes
from .model.losses import meta_batch_losses
from .model.pudnet import PudNet, PudNetConfig

CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"  # the checkpoint with the best validation accuracy so far
TRAIN_STATE = "train_state.safetensors"
METRICS = "metrics.jsonl"
VALIDATIONS = ("rotated-classes", "images")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    steps: int = 2000  # meta-steps; each draws `meta_batch` tasks
    meta_batch: int = 4
    lr: float = 1e-3
    seed: int = 0
    ways: int = 4
    sketch: int = 50
    support: int = 10
    query: int = 15
    train_classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])
    checkpoint_every: int = 100
    log_every: int = 10
    threads: int | None = None
    validate_every: int = 250  # 0: never
    # "rotated-classes": 4-way groups of novel classes, the held-out images of the training classes turned by
    # 90° (ranks models like the unseen classes do, benchmarks/NOTES.md); "images": the held-out images as they are
    validation: str = "rotated-classes"
    validation_degrees: float = 90.0  # rotated-classes: the turn; not a multiple of 90 with rotated_classes
    validation_fraction: float = 0.1  # of each training class's images, never meta-trained on
    validation_groups: int = 30
    base_lr_scale: float = 1.0  # residual mode: the base weights learn at lr × this
    base_from: str | None = None  # residual modes: start the base weights from a baseline weight file
    rotated_classes: bool = False  # add 90°/180°/270° rotations of the training classes as new classes
    bf16: bool = True  # autocast the convolutions to bfloat16 (AMX on recent x86 CPUs)

    def __post_init__(self):
        if self.validation not in VALIDATIONS:
            raise ValueError(f"validation must be one of {VALIDATIONS}, got {self.validation!r}")
        quarter_turn = self.validation_degrees % 90 == 0
        if self.validate_every and self.validation == "rotated-classes" and self.rotated_classes and quarter_turn:
            raise ValueError(
                f"validation on classes turned by {self.validation_degrees:g}° would score classes that "
                "rotated_classes trains on; use validation_degrees=45 (--validation-degrees) or validation='images'"
            )

    @property
    def spec(self) -> EpisodeSpec:
        return EpisodeSpec(self.ways, self.sketch, self.support, self.query)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors = {
        f"{index}.{key}": value.reshape(-1) if key == "step" else value
        for index, slots in state["state"].items()
        for key, value in slots.items()
    }
    return tensors, state["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value.reshape(()) if key == "step" else value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def holdout_split(store: ImageStore, classes: list[int], fraction: float) -> tuple[ImageStore, ImageStore, ImageStore]:
    """(meta-training images, validation sketch images, validation query images): the held-out last
    ``fraction`` of each class (:func:`hold_out`) split alternately into sketch and query halves."""
    kept, held = hold_out(store, classes, fraction)
    halves = ([], [])
    for members in class_members(held.labels).values():
        halves[0].extend(members[0::2])
        halves[1].extend(members[1::2])
    sketch, query = (held.subset(np.sort(np.asarray(h, dtype=np.int64))) for h in halves)
    return kept, sketch, query


def _smallest_class(store: ImageStore) -> int:
    return min(len(members) for members in class_members(store.labels).values())


class Validator:
    """Model selection on held-out images of the training classes, never meta-trained on.

    ``"rotated-classes"``: 4-way groups of the held-out images turned by ``validation_degrees`` (90°) —
    classes no task was drawn from — scored like the evaluation protocol (100 images per class, 10 labelled,
    50 queries), the foreign sketch from the upright classes. ``"images"``: 3-way groups of the held-out
    images as they are (foreign sketch from the same classes).
    """

    def __init__(self, sketch: ImageStore, query: ImageStore, train: TrainConfig):
        classes = train.train_classes
        if train.validation == "rotated-classes":
            turned = (train.validation_degrees,)
            sketch, query = (with_rotated_classes(s, classes, turned)[0] for s in (sketch, query))
            config = EvalConfig(
                groups=train.validation_groups, ways=min(4, len(classes)), sketch=min(_smallest_class(sketch), 100),
                support=train.support, query=min(_smallest_class(query), 50), classes=[c + 1000 for c in classes],
                foreign_classes=classes, seed=train.seed + 7919, spread_datasets=4,
            )
        else:
            config = EvalConfig(
                groups=train.validation_groups, ways=min(3, len(classes)), sketch=train.sketch,
                support=train.support, query=train.query, classes=classes, foreign_classes=classes,
                seed=train.seed + 7919, spread_datasets=4,
            )
        self.evaluator = Evaluator(sketch, query, config)

    def __call__(self, net: PudNet) -> dict:
        result = self.evaluator.run(net, progress=False)
        acc = result["accuracy"]
        return {
            "val_accuracy": acc["pudnet"]["mean"], "val_ci95": acc["pudnet"]["ci95"],
            "val_foreign_sketch": acc["pudnet_foreign_sketch"]["mean"],
            "val_own_minus_foreign": result["own_minus_foreign"]["mean"],
            "val_own_minus_foreign_ci95": result["own_minus_foreign"]["ci95"],
            "val_random_init": acc["random_init"]["mean"],
            "val_weight_spread_between": result["weight_spread"]["between"],
            "val_function_spread_between": result["weight_spread"]["function_between"],
        }


class Trainer:
    def __init__(
        self, net: PudNet, config: TrainConfig, out_dir: str | Path, store: ImageStore,
        validator: Validator | None = None,
    ):
        self.net, self.config, self.out_dir = net, config, Path(out_dir)
        self.validator, self.best = validator, -1.0
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.optimizer = torch.optim.Adam(parameter_groups(net, config), lr=config.lr)
        self.stream = EpisodeStream(store, config.train_classes, config.spec, config.seed)
        self.global_ids = torch.full((int(store.labels.max()) + 1,), -1, dtype=torch.long)
        self.global_ids[torch.tensor(sorted(config.train_classes))] = torch.arange(len(config.train_classes))
        self.step = 0

    def save(self) -> None:
        save_checkpoint(self.net, self.out_dir / CHECKPOINT, step=self.step, train=asdict(self.config))
        tensors, groups = optimizer_tensors(self.optimizer)
        meta = {"step": json.dumps(self.step), "param_groups": json.dumps(groups)}
        atomic_save(tensors, self.out_dir / TRAIN_STATE, meta)

    def resume(self) -> None:
        net, extra = load_checkpoint(self.out_dir / CHECKPOINT, self.net.config.target)
        if net.config != self.net.config:
            raise ValueError(f"{self.out_dir}: the checkpoint's model config differs from the one asked for")
        self.net.load_state_dict(net.state_dict())
        tensors, meta = read_safetensors(self.out_dir / TRAIN_STATE)
        restore_optimizer(self.optimizer, tensors, json.loads(meta["param_groups"]))
        self.step = json.loads(meta["step"])
        if (self.out_dir / BEST).exists():
            _, best = load_checkpoint(self.out_dir / BEST)
            self.best = best["validation"]["val_accuracy"]

    def train_step(self) -> dict:
        first = self.step * self.config.meta_batch
        tasks = self.stream.batch(list(range(first, first + self.config.meta_batch)))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.config.bf16):
            result = meta_batch_losses(self.net, tasks, self.global_ids)
        if not torch.isfinite(result.loss):
            raise TrainingDiverged(
                f"the loss became {result.loss.item()} at step {self.step + 1}; the last checkpoint "
                f"({self.out_dir / CHECKPOINT}, if any) holds the previous good state"
            )
        self.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        self.optimizer.step()
        self.step += 1
        return {name: getattr(result, name).item() for name in ("loss", "metric", "full", "kl", "accuracy", "contrast")}

    def validate(self, log) -> None:
        record = {"step": self.step, **self.validator(self.net)}
        log.write(json.dumps(record) + "\n")
        log.flush()
        if record["val_accuracy"] > self.best:
            self.best = record["val_accuracy"]
            save_checkpoint(self.net, self.out_dir / BEST, step=self.step, validation=record)

    def run(self, progress: bool = True) -> None:
        config = self.config
        bar = tqdm(total=config.steps, initial=self.step, disable=not progress, desc="meta-training", unit="step")
        window, started = [], time.perf_counter()
        with open(self.out_dir / METRICS, "a") as log:
            while self.step < config.steps:
                window.append(self.train_step())
                bar.update(1)
                if self.step % config.log_every == 0 or self.step == config.steps:
                    record = {k: sum(m[k] for m in window) / len(window) for k in window[0]}
                    elapsed = time.perf_counter() - started
                    record.update(step=self.step, tau=self.net.tau.item(), elapsed_s=round(elapsed, 2))
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}")
                    window = []
                if self.step % config.checkpoint_every == 0 or self.step == config.steps:
                    self.save()
                if self.validator and (self.step % config.validate_every == 0 or self.step == config.steps):
                    self.validate(log)
        bar.close()


def parameter_groups(net: PudNet, config: TrainConfig) -> list[dict]:
    """The hypernetwork's parameters at ``lr``; a learned base (residual mode) at ``lr × base_lr_scale``."""
    base = list(net.base.parameters()) if net.config.weight_mode == "residual" else []
    if not base or config.base_lr_scale == 1.0:
        return [{"params": list(net.parameters())}]
    ids = {id(p) for p in base}
    rest = [p for p in net.parameters() if id(p) not in ids]
    return [{"params": rest}, {"params": base, "lr": config.lr * config.base_lr_scale}]


def load_base(net: PudNet, path: str) -> None:
    """Copy a baseline's weights (e.g. the pretrained CE network) into the base of a residual PudNet."""
    from .baselines.common import load_baseline

    if net.config.weight_mode == "paper":
        raise ValueError("base_from needs weight_mode 'residual' or 'frozen_base' (the paper mode has no base)")
    params, _ = load_baseline(path, net.target)
    with torch.no_grad():
        for name, value in params.items():
            getattr(net.base, name.replace(".", "__")).copy_(value)


def train(
    model_config: PudNetConfig, config: TrainConfig, out_dir: str | Path, *, resume: bool = False,
    store: ImageStore | None = None, progress: bool = True,
) -> PudNet:
    """Meta-train a PudNet; checkpoints and ``metrics.jsonl`` go to ``out_dir``."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    store = store if store is not None else datasets.fashion_mnist("train")
    missing = sorted(set(config.train_classes) - set(store.classes))
    if missing:
        raise ValueError(f"{store.source}: training classes {missing} have no images")
    validator = None
    if config.validate_every:
        store, val_sketch, val_query = holdout_split(store, config.train_classes, config.validation_fraction)
        validator = Validator(val_sketch, val_query, config)
    if config.rotated_classes:
        store, classes = with_rotated_classes(store, config.train_classes)
        config = replace(config, train_classes=classes, rotated_classes=False)
        model_config = replace(model_config, num_train_classes=len(classes))
    elif model_config.num_train_classes != len(config.train_classes):
        model_config = replace(model_config, num_train_classes=len(config.train_classes))
    net = PudNet(model_config)
    if config.base_from and not resume:
        load_base(net, config.base_from)
    trainer = Trainer(net, config, out_dir, store, validator)
    if resume:
        trainer.resume()
    trainer.run(progress)
    return net.eval()


