"""Meta-training: many sub-datasets of the training classes, each a task; Adam on the task losses."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import distributed, hardware
from .checkpoint import CheckpointError, remove_stale_temporaries
from .data import datasets
from .data.episodes import EpisodeStream
from .evaluate import EvalConfig, Evaluator
from .data.sampler import EpisodeSpec
from .data.sampler import class_members
from .data.store import ImageStore, hold_out, with_rotated_classes
from .data.strokes import MEMBERS, stroke_store
from .data.task_pool import ANGLE_MARGIN, TransformedClassStream, excluded_angle
from .model.losses import DISTILL_MODES, Distillation, TaskResult, meta_batch_losses
from .model.config import PudNetConfig, check_number
from .model.pudnet import PudNet
from .model.refine import Refinement
from .model.serialise import Checkpoint
from .ops import NonFiniteError

CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"  # the checkpoint with the best validation accuracy so far
TRAIN_STATE = "train_state.safetensors"
METRICS = "metrics.jsonl"
RUN_FILES = (CHECKPOINT, BEST, TRAIN_STATE, METRICS)
VALIDATIONS = ("rotated-classes", "images", "strokes")
TASK_POOLS = ("classes", "transformed")
BIG = 10**9
STROKE_VALIDATION_CLASSES = 8
# Inclusive bounds of the numeric TrainConfig fields (generous; they turn nonsense into a clear message)
INT_BOUNDS = {
    "steps": (0, BIG), "meta_batch": (1, BIG), "seed": (0, 2**63 - 1), "ways": (2, BIG), "sketch": (1, BIG),
    "support": (1, BIG), "query": (1, BIG), "checkpoint_every": (1, BIG), "log_every": (1, BIG),
    "validate_every": (0, BIG), "validation_groups": (1, BIG), "distill_steps": (1, 1000), "unroll_steps": (0, 100),
}
FLOAT_BOUNDS = {"lr": (1e-12, 1e6), "validation_fraction": (1e-6, 0.5), "base_lr_scale": (0.0, 1e6),
                "distill_weight": (1e-6, 1e6), "stroke_tasks": (0.0, 1.0),
                "forward_weight": (0.0, 1e6)}


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
    # 90° (ranks models like the unseen classes do, benchmarks/NOTES.md); "images": the held-out images as they
    # are; "strokes": synthetic stroke classes no task holds (data/strokes.py), another kind of image
    validation: str = "rotated-classes"
    validation_degrees: float = 90.0  # rotated-classes: the turn; not a multiple of 90 with rotated_classes
    validation_fraction: float = 0.1  # of each training class's images, never meta-trained on
    validation_groups: int = 30
    base_lr_scale: float = 1.0  # residual mode: the base weights learn at lr × this
    base_from: str | None = None  # residual modes: start the base weights from a baseline weight file
    rotated_classes: bool = False  # add 90°/180°/270° rotations of the training classes as new classes
    # "classes": tasks of the training classes (and their rotations); "transformed": of 98,304 virtual classes,
    # each a training class (or a mixture of two) under one of 16,384 transformations, 3 of 4 tasks sharing one
    # among their classes (data/task_pool.py); needs PudNetConfig(loss="metric")
    task_pool: str = "classes"
    precision: str = "auto"  # pudnet.hardware: bf16 autocast where the device runs it natively, else fp32
    device: str = "auto"  # cpu, cuda, cuda:N; auto = a GPU if there is one (under torchrun: the local rank's)
    # amortised refinement (model/losses.Distillation): pull each task's predicted weights toward the frozen
    # base refined by `distill_steps` steps on the task's dataset; "params" or "logits", None = off
    distill: str | None = None
    distill_weight: float = 1.0
    distill_steps: int = 10
    # meta-train through this many refinement steps (the model's refinement settings), differentiated: the task
    # loss is that of the refined weights (MAML-style; model/refine.py); 0 = off
    unroll_steps: int = 0
    forward_weight: float = 0.0  # with unroll_steps: add this × the forward pass's own metric loss
    stroke_tasks: float = 0.0  # transformed pool: this fraction of the tasks of synthetic stroke classes

    def __post_init__(self):
        for name, bounds in INT_BOUNDS.items():
            check_number(name, getattr(self, name), bounds, integer=True)
        for name, bounds in FLOAT_BOUNDS.items():
            check_number(name, getattr(self, name), bounds, integer=False)
        if self.threads is not None:
            check_number("threads", self.threads, (1, 4096), integer=True)
        if self.validation not in VALIDATIONS:
            raise ValueError(f"validation must be one of {VALIDATIONS}, got {self.validation!r}")
        if self.task_pool not in TASK_POOLS:
            raise ValueError(f"task_pool must be one of {TASK_POOLS}, got {self.task_pool!r}")
        if self.task_pool == "transformed":
            self._check_transformed_pool()
        if self.forward_weight and not self.unroll_steps:
            raise ValueError("forward_weight weighs the forward pass's loss beside the refined weights' one: it "
                             "needs unroll_steps > 0 (--unroll-steps)")
        if self.stroke_tasks and self.task_pool != "transformed":
            raise ValueError("stroke_tasks mixes stroke tasks into the transformed pool: use task_pool='transformed' "
                             "(--task-pool transformed)")
        if self.distill not in (None, *DISTILL_MODES):
            raise ValueError(f"distill must be one of {DISTILL_MODES} or None, got {self.distill!r}")
        quarter_turn = self.validation_degrees % 90 == 0
        if self.validate_every and self.validation == "rotated-classes" and self.rotated_classes and quarter_turn:
            raise ValueError(
                f"validation on classes turned by {self.validation_degrees:g}° would score classes that "
                "rotated_classes trains on; use validation_degrees=45 (--validation-degrees) or validation='images'"
            )

    def _check_transformed_pool(self) -> None:
        """The transformed pool turns its classes by arbitrary angles except within ``ANGLE_MARGIN`` of
        :attr:`avoid_degrees` (and its mirror images): the rotated-class validation's classes are then none of
        its classes, unless they are the upright or upside-down training classes themselves."""
        if self.rotated_classes:
            raise ValueError("task_pool='transformed' already turns its classes by arbitrary angles; drop "
                             "rotated_classes (--rotated-classes), whose quarter turns would include the "
                             "validation's classes")
        if self.avoid_degrees is not None and excluded_angle(0.0, self.avoid_degrees):
            raise ValueError(
                f"validation on classes turned by {self.validation_degrees:g}° is within {ANGLE_MARGIN:g}° of "
                "the upright or upside-down training classes, which task_pool='transformed' trains on; use "
                "e.g. validation_degrees=90 or 45 (--validation-degrees)")

    @property
    def avoid_degrees(self) -> float | None:
        """The turn no class of a transformed task pool may come near: the rotated-class validation's."""
        return self.validation_degrees if self.validation == "rotated-classes" else None

    @property
    def spec(self) -> EpisodeSpec:
        return EpisodeSpec(self.ways, self.sketch, self.support, self.query)

    def distillation(self, model_config: PudNetConfig) -> Distillation | None:
        """The amortised-refinement term: the model's own refinement settings, ``distill_steps`` steps."""
        if self.distill is None:
            return None
        refinement = replace(model_config.refinement, steps=self.distill_steps)
        return Distillation(self.distill, self.distill_weight, refinement)

    def unroll(self, model_config: PudNetConfig) -> Refinement | None:
        """The refinement meta-training differentiates through (``unroll_steps``), or None."""
        return replace(model_config.refinement, steps=self.unroll_steps) if self.unroll_steps else None


def check_task_pool(model_config: PudNetConfig, config: TrainConfig) -> None:
    """A transformed pool has tens of thousands of classes, each drawn a few times in a run: a head over all
    of them cannot learn them, and a head over per-task permuted labels has targets its input cannot predict;
    such a run trains the metric loss alone. Distillation refines the frozen base, so it needs one."""
    if config.task_pool != "classes" and model_config.loss != "metric":
        raise ValueError(f"task_pool={config.task_pool!r} trains without the full-classification head: use "
                         f"PudNetConfig(loss='metric') (--model '{{\"loss\": \"metric\"}}'), not "
                         f"loss={model_config.loss!r}")
    if config.distill and model_config.weight_mode != "frozen_base":
        raise ValueError(f"distill={config.distill!r} pulls the predictions toward the refined frozen base: it "
                         f"needs weight_mode 'frozen_base' (--preset frozen-base-prototypes), not "
                         f"{model_config.weight_mode!r}")


def task_stream(store: ImageStore, config: TrainConfig) -> EpisodeStream | TransformedClassStream:
    """The meta-training tasks over ``store`` (the images left after the validation hold-out)."""
    if config.task_pool == "transformed":
        return TransformedClassStream(store, config.train_classes, config.spec, config.seed, config.avoid_degrees,
                                      config.stroke_tasks)
    return EpisodeStream(store, config.train_classes, config.spec, config.seed)


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
    images as they are (foreign sketch from the same classes). ``"strokes"``: 4-way groups, scored alike, of
    8 synthetic stroke classes of one family of the validation universe (``data/strokes.py``; the foreign
    sketch from 8 of another family), a kind of image unlike the garments.
    """

    def __init__(self, sketch: ImageStore, query: ImageStore, train: TrainConfig, device: str | torch.device = "cpu"):
        classes = train.train_classes
        if train.validation == "rotated-classes":
            turned = (train.validation_degrees,)
            sketch, query = (with_rotated_classes(s, classes, turned)[0] for s in (sketch, query))
            config = EvalConfig(
                groups=train.validation_groups, ways=min(4, len(classes)), sketch=min(_smallest_class(sketch), 100),
                support=train.support, query=min(_smallest_class(query), 50), classes=[c + 1000 for c in classes],
                foreign_classes=classes, seed=train.seed + 7919, spread_datasets=4, precision=train.precision,
            )
        elif train.validation == "strokes":
            size, n = sketch.images.shape[-1], STROKE_VALIDATION_CLASSES
            classes = list(range(n)) + list(range(MEMBERS, MEMBERS + n))  # two families' first members
            sketch, query = (stroke_store(classes, count, train.seed + 7919 + count, size=size) for count in (100, 50))
            config = EvalConfig(
                groups=train.validation_groups, ways=4, sketch=100, support=train.support, query=50,
                classes=list(range(n)), foreign_classes=list(range(n, 2 * n)),
                seed=train.seed + 7919, spread_datasets=4, precision=train.precision,
            )
        else:
            config = EvalConfig(
                groups=train.validation_groups, ways=min(3, len(classes)), sketch=train.sketch,
                support=train.support, query=train.query, classes=classes, foreign_classes=classes,
                seed=train.seed + 7919, spread_datasets=4, precision=train.precision,
            )
        self.evaluator = Evaluator(sketch, query, config, device)

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


LOGGED = tuple(TaskResult.__dataclass_fields__)  # loss, metric, full, kl, accuracy, distill


class MetaBatchLoss(nn.Module):
    """The losses of a meta-batch as one module call, so that DistributedDataParallel sees the whole
    forward (the hypernetwork, the target runs, the head and the temperature)."""

    def __init__(self, net: PudNet, global_ids: Tensor, distillation: Distillation | None = None,
                 unroll: Refinement | None = None, forward_weight: float = 0.0):
        super().__init__()
        self.net, self.distillation, self.unroll, self.forward_weight = net, distillation, unroll, forward_weight
        self.register_buffer("global_ids", global_ids, persistent=False)

    def forward(self, tasks) -> dict[str, Tensor]:
        result = meta_batch_losses(self.net, tasks, self.global_ids, self.distillation, self.unroll,
                                   self.forward_weight)
        return {name: getattr(result, name) for name in LOGGED}


class Trainer:
    """Adam on the meta-batch losses. Under ``torchrun`` each of the ``world.size`` ranks draws its own
    disjoint share of every step's episode indices and DDP averages the gradients, so a run equals a
    single-process run with the same global ``meta_batch``; rank 0 alone writes checkpoints, metrics and
    validates."""

    def __init__(
        self, net: PudNet, config: TrainConfig, out_dir: str | Path, store: ImageStore,
        validator: Validator | None = None, world: distributed.World = distributed.World(),
    ):
        self.config, self.out_dir, self.world = config, Path(out_dir), world
        self.validator, self.best = validator, -1.0
        self.device = world.device(hardware.resolve_device(config.device))
        self.net = net.to(self.device)
        self.local_batch = world.share(config.meta_batch)
        if world.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.out_dir, RUN_FILES)
        self.optimizer = torch.optim.Adam(parameter_groups(net, config), lr=config.lr)
        fp16 = hardware.compute_dtype(self.device, config.precision) == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)  # fp16 gradients underflow unscaled
        self.stream = task_stream(store, config)
        global_ids = torch.full((int(store.labels.max()) + 1,), -1, dtype=torch.long)
        global_ids[torch.tensor(sorted(config.train_classes))] = torch.arange(len(config.train_classes))
        losses = MetaBatchLoss(net, global_ids.to(self.device), config.distillation(net.config),
                               config.unroll(net.config), config.forward_weight)
        self.loss = distributed.wrap(losses, world, self.device, find_unused=net.config.loss == "metric")
        self.step = 0
        self.saved_step: int | None = None  # the step of the last training state written (always finite)

    def episode_indices(self) -> list[int]:
        """This rank's episodes of the current step: step s covers episodes [s·M, (s+1)·M) of the stream
        (M = the global meta-batch), rank r the r-th of its ``world.size`` equal slices."""
        first = self.step * self.config.meta_batch + self.world.rank * self.local_batch
        return list(range(first, first + self.local_batch))

    def save(self) -> None:
        """The training state — model, optimizer, RNG, gradient scaler and step, which is also the sampler's
        position (episodes are a function of (seed, index)) — as one atomically replaced file, then the model
        file derived from it. A kill between the two writes leaves the model file behind; :meth:`resume`
        reads only the training state and writes the model file anew."""
        tensors, groups = optimizer_tensors(self.optimizer)
        training = {**{f"optimizer/{k}": v for k, v in tensors.items()}, "rng/torch": torch.get_rng_state()}
        try:
            self.net.save_pretrained(self.out_dir / TRAIN_STATE, training, param_groups=groups,
                                     grad_scaler=self.scaler.state_dict(), **self._step_metadata())
        except NonFiniteError as e:
            raise TrainingDiverged(f"{e} after step {self.step}; {self._last_finite()}") from None
        self.saved_step = self.step
        self._save_model_file()

    def _step_metadata(self) -> dict:
        return {"step": self.step, "train": asdict(self.config), "world_size": self.world.size}

    def _save_model_file(self) -> None:
        self.net.save_pretrained(self.out_dir / CHECKPOINT, **self._step_metadata())

    def _last_finite(self) -> str:
        if self.saved_step is None:
            return "this run has saved no state yet"
        return f"the last finite state, step {self.saved_step}, is in {self.out_dir / TRAIN_STATE} (resumable) " \
               f"and {self.out_dir / CHECKPOINT}"

    def start_afresh(self) -> None:
        """Begin a new run at step 0. A folder that holds a saved run is refused (nothing is overwritten); the
        metrics and best model a run killed before its first save left are not this run's, and a later
        :meth:`resume` would mix them in (the metrics file is appended to; the best accuracy is read back), so
        rank 0 drops them."""
        if (self.out_dir / TRAIN_STATE).exists():
            raise ValueError(f"{self.out_dir} already holds a run ({TRAIN_STATE}): continue it with --resume, or "
                             "choose another --out")
        if self.world.is_main:
            forget_metrics_after(self.out_dir / METRICS, 0)
            (self.out_dir / BEST).unlink(missing_ok=True)

    def resume(self) -> None:
        """Continue from the training state in the run folder (a clear :class:`CheckpointError` if it is
        missing, incomplete or of another model); every rank reads it, rank 0 rewrites the derived files."""
        path = self.out_dir / TRAIN_STATE
        state = PudNet.read_checkpoint(path, self.net.config.target)
        if state.config != self.net.config:
            raise CheckpointError(f"{path}: the checkpoint's model config differs from the one asked for")
        self._restore(path, state)
        self.step = self.saved_step = state.extra["step"]
        if self.world.is_main:
            self._save_model_file()
            forget_metrics_after(self.out_dir / METRICS, self.step)
        if (self.out_dir / BEST).exists():
            best = PudNet.read_checkpoint(self.out_dir / BEST).extra
            self.best = best["validation"]["val_accuracy"]

    def _restore(self, path: Path, state: Checkpoint) -> None:
        step = state.extra.get("step")
        if not isinstance(step, int) or step < 0 or "rng/torch" not in state.training:
            raise CheckpointError(f"{path}: not a complete training state (from an older pudnet?); start a new run")
        optimizer = {k.removeprefix("optimizer/"): v for k, v in state.training.items() if k.startswith("optimizer/")}
        try:
            self.net.load_state_dict(state.model)
            restore_optimizer(self.optimizer, optimizer, state.extra["param_groups"])
            torch.set_rng_state(state.training["rng/torch"])
            if state.extra.get("grad_scaler"):  # empty where the scaler is off (no fp16)
                self.scaler.load_state_dict(state.extra["grad_scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: the optimizer state does not fit this run ({type(e).__name__}: {e})") \
                from None

    def train_step(self) -> dict:
        tasks = self.stream.batch(self.episode_indices()).to(self.device)
        with hardware.autocast(self.device, self.config.precision):
            losses = self.loss(tasks)
        logged = torch.stack([losses[name].detach().float() for name in LOGGED])
        logged = distributed.mean_over_ranks(logged, self.world).tolist()  # every rank sees the same loss
        if not np.isfinite(logged[0]):
            raise TrainingDiverged(f"the loss became {logged[0]} at step {self.step + 1}; {self._last_finite()}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return dict(zip(LOGGED, logged))

    def validate(self, log) -> None:
        record = {"step": self.step, **self.validator(self.net)}
        log.write(json.dumps(record) + "\n")
        log.flush()
        if record["val_accuracy"] > self.best:
            self.best = record["val_accuracy"]
            self.net.save_pretrained(self.out_dir / BEST, step=self.step, validation=record)

    def run(self, progress: bool = True) -> None:
        config, main = self.config, self.world.is_main
        bar = tqdm(total=config.steps, initial=self.step, disable=not (progress and main), desc="meta-training",
                   unit="step")
        if main and progress:
            processes = f", {self.world.size} processes" if self.world.size > 1 else ""
            bar.write(f"meta-training on {hardware.describe(self.device, config.precision)}{processes}")
        window, started = [], time.perf_counter()
        with open(self.out_dir / METRICS, "a") if main else contextlib.nullcontext() as log:
            while self.step < config.steps:
                window.append(self.train_step())
                bar.update(1)
                last = self.step == config.steps
                if self.step % config.log_every == 0 or last:
                    record = {k: sum(m[k] for m in window) / len(window) for k in window[0]}
                    window = []
                    if main:
                        elapsed = time.perf_counter() - started
                        record.update(step=self.step, tau=self.net.tau.item(), elapsed_s=round(elapsed, 2))
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}")
                if main and (self.step % config.checkpoint_every == 0 or last):
                    self.save()
                if main and self.validator and (self.step % config.validate_every == 0 or last):
                    self.validate(log)
        bar.close()


def forget_metrics_after(path: Path, step: int) -> None:
    """Drop the records of steps after ``step`` from the metrics file (a resumed run logs them again) and any
    line a kill cut short; replaced atomically."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if _logged_step(line) <= step]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write("".join(line + "\n" for line in kept))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _logged_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return float("inf")


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
    """Meta-train a PudNet; checkpoints and ``metrics.jsonl`` go to ``out_dir``. Under ``torchrun`` every
    process calls this and the processes train one model together (:class:`Trainer`)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    check_task_pool(model_config, config)
    store = store if store is not None else datasets.fashion_mnist("train")
    missing = sorted(set(config.train_classes) - set(store.classes))
    if missing:
        raise ValueError(f"{store.source}: training classes {missing} have no images")
    device = hardware.resolve_device(config.device)
    world = distributed.join(device)
    try:
        world.share(config.meta_batch)
        store, validator = _validation_split(store, config, world, world.device(device))
        if config.rotated_classes:
            store, classes = with_rotated_classes(store, config.train_classes)
            config = replace(config, train_classes=classes, rotated_classes=False)
        model_config = replace(model_config, num_train_classes=len(config.train_classes))
        net = PudNet(model_config)
        if config.base_from and not resume:
            load_base(net, config.base_from)
        trainer = Trainer(net, config, out_dir, store, validator, world)
        if resume:
            trainer.resume()
        else:
            trainer.start_afresh()
        trainer.run(progress)
    finally:
        distributed.leave(world)
    return net.eval()


def _validation_split(store: ImageStore, config: TrainConfig, world: distributed.World, device: torch.device
                      ) -> tuple[ImageStore, Validator | None]:
    """The images to meta-train on, and the validator on the held-out rest (rank 0 only validates)."""
    if not config.validate_every:
        return store, None
    store, sketch, query = holdout_split(store, config.train_classes, config.validation_fraction)
    return store, Validator(sketch, query, config, device) if world.is_main else None
