"""Meta-training: many sub-datasets of the training classes, each a task; Adam on the task losses."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import atomic_save, load_checkpoint, read_safetensors, save_checkpoint
from .data import datasets
from .data.episodes import EpisodeStream
from .data.sampler import EpisodeSpec
from .data.store import ImageStore
from .model.losses import meta_batch_losses
from .model.pudnet import PudNet, PudNetConfig

CHECKPOINT = "checkpoint.safetensors"
TRAIN_STATE = "train_state.safetensors"
METRICS = "metrics.jsonl"


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
    bf16: bool = True  # autocast the convolutions to bfloat16 (AMX on recent x86 CPUs)

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


class Trainer:
    def __init__(self, net: PudNet, config: TrainConfig, out_dir: str | Path, store: ImageStore):
        self.net, self.config, self.out_dir = net, config, Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
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
        return {name: getattr(result, name).item() for name in ("loss", "metric", "full", "kl", "accuracy")}

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
        bar.close()


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
    net = PudNet(model_config)
    trainer = Trainer(net, config, out_dir, store)
    if resume:
        trainer.resume()
    trainer.run(progress)
    return net.eval()


