"""Denoising with PudNet: pretraining the U-Net base, meta-training the hypernetwork on noisy collections of the
training classes, and the collections both draw (:mod:`pudnet.tasks.denoising` holds the noise, losses, metrics).

A *collection* is ``ways × per_class`` images of one task of the transformed task pool
(:mod:`pudnet.data.task_pool`: tens of thousands of virtual classes from Fashion-MNIST's classes 0–5, most
tasks' classes sharing one transformation — a "new camera"), noised once. The hypernetwork sees the noisy
collection and predicts the U-Net that denoises it; the U-Net's BatchNorm statistics are the collection's.

The pretrained U-Net is trained on the same collections, one collection per mini-batch, so that its
BatchNorm statistics in training are a collection's: exactly the rule the predicted denoisers follow, and the
strongest cheap alternative built from the same parts (it is also the frozen base the hypernetwork's residual
starts from).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import hardware
from .checkpoint import atomic_save, atomic_write_text, read_safetensors
from .data.sampler import EpisodeSpec
from .data.store import ImageStore, hold_out
from .data.task_pool import TransformedClassStream
from .model.config import PudNetConfig
from .model.pudnet import PudNet
from .ops import check_finite
from .targets import make_target
from .tasks.denoising import NOISE_MODEL, add_noise, blind_spot, blind_spot_loss, psnr, supervised_loss
from .train import optimizer_tensors, restore_optimizer

LOSSES = ("supervised", "blind_spot")
VALIDATION_FRACTION = 0.1  # of each training class's images, held out for model selection
VALIDATION_SEED = 7_777


@dataclass
class DenoiseConfig:
    """How a denoising PudNet (or its pretrained base) is trained."""

    steps: int = 1500
    meta_batch: int = 4  # collections per step (the pretrained U-Net: 1 collection per step, as many steps)
    ways: int = 5
    per_class: int = 10  # a collection: ways × per_class images
    sigma: float = 25.0
    loss: str = "supervised"  # "supervised": MSE to the clean images; "blind_spot": noisy images only
    lr: float = 1e-3
    seed: int = 0
    train_classes: list[int] = field(default_factory=lambda: list(range(6)))
    validate_every: int = 100
    validation_collections: int = 24
    precision: str = "auto"
    width: int = 32  # the U-Net's base width

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for name in ("steps", "meta_batch", "ways", "per_class", "validate_every", "validation_collections"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 <= self.sigma <= 255:
            raise ValueError(f"sigma must be in [0, 255] (0–255 units), got {self.sigma}")

    @property
    def spec(self) -> EpisodeSpec:
        return EpisodeSpec(ways=self.ways, support=1, sketch=self.per_class, query=0)


def model_config(config: DenoiseConfig, **overrides) -> PudNetConfig:
    """The shipped denoising PudNet: a U-Net target, weights a residual on the frozen pretrained U-Net."""
    fields_ = {"target": "unet", "target_kwargs": {"in_channels": 1, "width": config.width},
               "weight_mode": "frozen_base", "residual_init": 0.02, "generator_hidden": 16, "learn_tau": False}
    return PudNetConfig(**{**fields_, **overrides})


class Collections:
    """Clean collections ``[B, ways·per_class, 1, H, W]`` of one store, collection ``i`` a pure function of
    ``(seed, i)``; the noise of collection ``i`` is fixed by ``(seed, i)`` too."""

    def __init__(self, store: ImageStore, config: DenoiseConfig, seed: int):
        self.stream = TransformedClassStream(store, config.train_classes, config.spec, seed)
        self.sigma, self.seed = config.sigma, seed

    def clean(self, indices: list[int]) -> Tensor:
        return self.stream.batch(indices).sketch

    def noisy(self, indices: list[int], clean: Tensor) -> Tensor:
        return torch.stack([add_noise(c, self.sigma, torch.Generator().manual_seed(self.seed * 1_000_003 + i))
                            for i, c in zip(indices, clean)])


def split(store: ImageStore, config: DenoiseConfig) -> tuple[ImageStore, ImageStore]:
    """(training images, validation images) of the training classes."""
    return hold_out(store, config.train_classes, VALIDATION_FRACTION)


class Validation:
    """Fixed noisy collections of the held-out training-class images, scored by mean PSNR."""

    def __init__(self, store: ImageStore, config: DenoiseConfig):
        collections = Collections(store, config, VALIDATION_SEED)
        indices = list(range(config.validation_collections))
        self.clean = collections.clean(indices)
        self.noisy = collections.noisy(indices, self.clean)
        self.precision = config.precision

    @torch.no_grad()
    def score(self, denoise) -> float:
        """Mean PSNR (dB) of ``denoise(noisy collection) -> denoised`` over the validation collections."""
        return float(np.mean([psnr(denoise(n), c).mean() for n, c in zip(self.noisy, self.clean)]))

    def score_net(self, net: PudNet) -> float:
        was_training = net.training
        net.eval()
        try:
            return self.score(lambda noisy: net.predict(noisy, precision=self.precision)(noisy))
        finally:
            net.train(was_training)

    def score_module(self, module: nn.Module) -> float:
        """A U-Net module with BatchNorm statistics from each collection (:func:`collection_stats_module`)."""
        return self.score(lambda noisy: collection_stats_module(module, noisy)(noisy))


def collection_stats_module(module: nn.Module, noisy: Tensor) -> nn.Module:
    """A copy of ``module`` in eval mode whose BatchNorm statistics are those of the collection ``noisy``
    (exact, one pass: each layer's input given the earlier layers' collection statistics)."""
    target = make_target("unet", in_channels=noisy.shape[1], width=module.enc1[0].out_channels)
    params = {name: p.detach() for name, p in module.named_parameters()}
    return target.to_module(params, target.dataset_stats(params, noisy))


def task_loss(output: Tensor, clean: Tensor, noisy: Tensor, mask: Tensor | None) -> Tensor:
    return supervised_loss(output, clean) if mask is None else blind_spot_loss(output, noisy, mask)


def _network_input(noisy: Tensor, config: DenoiseConfig, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    if config.loss == "supervised":
        return noisy, None
    return blind_spot(noisy, generator)


class _Run:
    """A training run's folder: ``config.json``, ``metrics.jsonl``, the latest state ``last.safetensors``
    (resumable), the best-on-validation model ``best.safetensors``."""

    def __init__(self, out: str | Path, config: DenoiseConfig, resume: bool):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        settings = self.out / "config.json"
        if resume and settings.exists():
            saved = json.loads(settings.read_text())
            if _but_steps(saved) != _but_steps(asdict(config)):
                raise ValueError(f"{self.out}: --resume with settings that differ from the run's (only --steps may "
                                 f"change): {saved}")
        elif not resume and (self.out / "last.safetensors").exists():
            raise FileExistsError(f"{self.out} holds a run: pass --resume to continue it, or choose another --out")
        atomic_write_text(settings, json.dumps(asdict(config), indent=1))
        self.metrics = self.out / "metrics.jsonl"

    def log(self, record: dict) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def best_so_far(self) -> float:
        if not self.metrics.exists():
            return -np.inf
        scores = [json.loads(line).get("val_psnr") for line in self.metrics.read_text().splitlines()]
        return max([s for s in scores if s is not None], default=-np.inf)


def _but_steps(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k != "steps"}


def pretrain_unet(store: ImageStore, config: DenoiseConfig, out: str | Path, resume: bool = False,
                  progress: bool = True) -> Path:
    """Train the U-Net on noisy collections of the training classes (one per step); returns the path of the
    best-on-validation weights (``best.safetensors``: the module's state dict)."""
    run = _Run(out, config, resume)
    train_store, val_store = split(store, config)
    collections, validation = Collections(train_store, config, config.seed), Validation(val_store, config)
    torch.manual_seed(config.seed)
    from .targets.unet import UNet

    module = UNet(1, config.width)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
    start = _restore_module(run, module, optimizer) if resume else 0
    best = run.best_so_far()
    for step in tqdm(range(start, config.steps), desc="pretraining the U-Net", disable=not progress,
                     initial=start, total=config.steps):
        module.train()
        clean = collections.clean([step])
        noisy = collections.noisy([step], clean)[0]
        network_input, mask = _network_input(noisy, config, torch.Generator().manual_seed(step))
        with hardware.autocast("cpu", config.precision):
            loss = task_loss(module(network_input), clean[0], noisy, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % config.validate_every == 0 or step + 1 == config.steps:
            module.eval()
            score = validation.score_module(module)
            run.log({"step": step + 1, "loss": float(loss.detach()), "val_psnr": score})
            state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            if score > best:
                best = score
                atomic_save(state, run.out / "best.safetensors", {"step": str(step + 1), "val_psnr": str(score)})
            tensors, groups = optimizer_tensors(optimizer)
            atomic_save({**state, **{f"optimizer.{k}": v for k, v in tensors.items()}}, run.out / "last.safetensors",
                        {"step": str(step + 1), "groups": json.dumps(groups)})
    return run.out / "best.safetensors"


def _restore_module(run: _Run, module: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    path = run.out / "last.safetensors"
    if not path.exists():
        return 0
    tensors, metadata = read_safetensors(path)
    module.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("optimizer.")}, strict=True)
    restore_optimizer(optimizer, {k.removeprefix("optimizer."): v for k, v in tensors.items()
                                  if k.startswith("optimizer.")}, json.loads(metadata["groups"]))
    return int(metadata["step"])


def load_unet(path: str | Path, width: int = 32) -> nn.Module:
    """The U-Net saved by :func:`pretrain_unet` (eval mode; loaded without executing pickled code)."""
    from .targets.unet import UNet

    tensors, _ = read_safetensors(path)
    module = UNet(1, width)
    module.load_state_dict(tensors, strict=True)
    return module.eval()


def meta_train(store: ImageStore, config: DenoiseConfig, base: str | Path, out: str | Path,
               resume: bool = False, progress: bool = True, **model_overrides) -> Path:
    """Meta-train a denoising PudNet whose frozen base is the pretrained U-Net at ``base``; returns the path of
    the best-on-validation checkpoint (``best.safetensors``, a PudNet checkpoint)."""
    run = _Run(out, config, resume)
    train_store, val_store = split(store, config)
    collections, validation = Collections(train_store, config, config.seed), Validation(val_store, config)
    torch.manual_seed(config.seed)
    net = PudNet(model_config(config, **model_overrides))
    _copy_base(net, load_unet(base, config.width))
    trainable = [p for name, p in net.named_parameters() if not name.startswith("head.")]
    optimizer = torch.optim.Adam(trainable, lr=config.lr)
    start = _restore_net(run, net, optimizer) if resume else 0
    if start == 0:
        run.log({"step": 0, "val_psnr": validation.score_net(net), "note": "the base alone (residual ~2%)"})
    best = run.best_so_far()
    for step in tqdm(range(start, config.steps), desc="meta-training the denoiser", disable=not progress,
                     initial=start, total=config.steps):
        loss = _meta_step(net, collections, config, step, optimizer)
        if (step + 1) % config.validate_every == 0 or step + 1 == config.steps:
            score = validation.score_net(net)
            run.log({"step": step + 1, "loss": loss, "val_psnr": score, "time": time.time()})
            meta = {"step": step + 1, "val_psnr": score, "noise_model": NOISE_MODEL, "sigma": config.sigma,
                    "denoise_config": asdict(config)}
            if score > best:
                best = score
                net.save_pretrained(run.out / "best.safetensors", **meta)
            tensors, groups = optimizer_tensors(optimizer)
            net.save_pretrained(run.out / "last.safetensors", training=tensors, groups=groups, **meta)
    return run.out / "best.safetensors"


def _meta_step(net: PudNet, collections: Collections, config: DenoiseConfig, step: int,
               optimizer: torch.optim.Optimizer) -> float:
    net.train()
    indices = [step * config.meta_batch + b for b in range(config.meta_batch)]
    clean = collections.clean(indices)
    noisy = collections.noisy(indices, clean)
    generator = torch.Generator().manual_seed(step)
    with hardware.autocast("cpu", config.precision):
        weights = net(noisy)
        losses = []
        for b in range(len(indices)):
            network_input, mask = _network_input(noisy[b], config, generator)
            output, _ = net.target.forward(net.params_of(weights, b), network_input)
            losses.append(task_loss(output, clean[b], noisy[b], mask))
        loss = torch.stack(losses).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    check_finite({"loss": loss.detach()}, f"meta-training step {step}")
    optimizer.step()
    return float(loss.detach())


def _copy_base(net: PudNet, module: nn.Module) -> None:
    with torch.no_grad():
        for name, value in module.named_parameters():
            getattr(net.base, name.replace(".", "__")).copy_(value)


def _restore_net(run: _Run, net: PudNet, optimizer: torch.optim.Optimizer) -> int:
    path = run.out / "last.safetensors"
    if not path.exists():
        return 0
    state = PudNet.read_checkpoint(path)
    net.load_state_dict(state.model, strict=True)
    restore_optimizer(optimizer, state.training, state.extra["groups"])
    return int(state.extra["step"])
