"""The PudNet hypernetwork: dataset sketch → embedding → AHRU over the target's layers → per-layer weights.

Its configuration is :mod:`pudnet.model.config`, its checkpoint format :mod:`pudnet.model.serialise`.
"""

from __future__ import annotations

import copy
import math
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import hardware
from ..data import inputs
from ..ops import check_finite
from .. import pretrained
from ..targets import BUILT_IN, Target, make_target, register
from ..targets.base import STATS_CHUNK, Params, Stats
from . import hotpath, serialise
from .config import PudNetConfig
from .generators import WeightGenerators
from .prototype import PrototypeUpdate
from .refine import REFINE_IMAGES, refine
from .serialise import Checkpoint
from .sketch import SketchEncoder

STATS_IMAGES = 4096
"""A prediction takes its dataset's BatchNorm statistics from at most this many images (``_at_most``): beyond
it their sampling error is far below what the predictions can tell apart, while each further image costs
time, about (BatchNorm layers + 1)/2 forward passes in the streamed rule (:meth:`Target.dataset_stats`)."""


class AHRU(nn.Module):
    """Adaptive hyper recurrent unit: GRU-like gates, one step per target layer, shared weights."""

    def __init__(self, dim: int, alpha: float):
        super().__init__()
        bound = 1.0 / math.sqrt(dim)
        self.w_x = nn.Parameter(torch.empty(dim, 3 * dim).uniform_(-bound, bound))
        self.w_h = nn.Parameter(torch.empty(dim, 3 * dim).uniform_(-bound, bound))
        self.b_x = nn.Parameter(torch.zeros(3 * dim))
        self.b_h = nn.Parameter(torch.zeros(3 * dim))
        self.x0 = nn.Parameter(torch.randn(dim) * 0.1)
        self.init_hidden = nn.Linear(dim, dim)
        self.alpha = alpha

    def forward(self, e: Tensor, steps: int) -> Tensor:
        """``e`` [B, E] → ``r'`` for each of ``steps`` layers, ``[B, steps, E]``."""
        h0 = torch.tanh(self.init_hidden(e))
        return hotpath.ahru(e, h0, self.x0, self.w_x, self.w_h, self.b_x, self.b_h, self.alpha, steps)


class PudNet(nn.Module):
    """Predicts every parameter of ``config.target`` for a dataset in one forward pass."""

    def __init__(self, config: PudNetConfig | None = None):
        super().__init__()
        self.config = config = config or PudNetConfig()
        self.target: Target = make_target(config.target, **config.target_kwargs)
        self.specs = self.target.specs()
        in_channels = self.target.in_channels
        self.sketch = SketchEncoder(in_channels, config.sketch_width, config.sketch_dim)
        sketch_features = config.sketch_dim * (2 if config.sketch_support else 1)
        self.embed = nn.Linear(sketch_features, config.embedding_dim)
        self.ahru = AHRU(config.embedding_dim, config.alpha) if config.use_ahru else None
        self.generators = WeightGenerators(self.specs, config.embedding_dim, config.generator_hidden,
                                           config.generator_rank)
        if config.weight_mode != "paper":
            base = self.target.random_params(torch.Generator().manual_seed(0))
            if config.weight_mode == "residual":
                self.base = nn.ParameterDict({_key(s.name): nn.Parameter(base[s.name]) for s in self.specs})
            else:
                self.base = nn.Module()
                for spec in self.specs:
                    self.base.register_buffer(_key(spec.name), base[spec.name])
            self.residual_scale = nn.Parameter(torch.full((len(self.specs),), config.residual_init))
        self.prototype = PrototypeUpdate(self.target) if config.prototype_update else None
        # the classification task's auxiliary head (training only); a target without features has none, and a
        # released checkpoint (num_train_classes 0) ships none
        has_head = self.target.feature_dim and config.num_train_classes
        self.head = nn.Linear(self.target.feature_dim, config.num_train_classes) if has_head else None
        log_tau = torch.tensor(math.log(config.tau_init))
        self.log_tau = nn.Parameter(log_tau) if config.learn_tau else nn.Buffer(log_tau)
        if config.learn_refine_lr:
            self.log_refine_lr = nn.Parameter(torch.full((config.refine_last,), math.log(config.refine_lr)))

    def refine_step_sizes(self) -> Tensor | None:
        """The refinement's learned step size per refined tensor (``config.learn_refine_lr``), else None
        (every tensor at ``config.refine_lr``)."""
        return self.log_refine_lr.exp() if self.config.learn_refine_lr else None

    @classmethod
    def for_module(cls, module: nn.Module, name: str | None = None, **config) -> "PudNet":
        """An untrained PudNet for any ``nn.Module`` (:meth:`Target.from_module`), whose :meth:`predict` returns a
        copy of ``module`` with predicted weights. The module is registered as target ``name`` (default: its
        class name) in this process; a checkpoint of it loads where the same name is registered
        (:func:`pudnet.targets.register`)."""
        name = name or type(module).__name__
        if name in BUILT_IN:
            raise ValueError(f"{name!r} is a built-in target of pudnet: give your module another name=")
        template = copy.deepcopy(module)
        register(name)(lambda in_channels=None: Target.from_module(template, name, in_channels))
        in_channels = Target.from_module(template, name).in_channels
        return cls(PudNetConfig(**{"target_kwargs": {"in_channels": in_channels}, **config, "target": name}))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, target: str | None = None,
                        device: str | torch.device = "cpu") -> "PudNet":
        """A shipped checkpoint by name (``pudnet.pretrained_names()``) or a checkpoint file, in eval mode, on
        ``device`` (``"auto"``: a GPU if there is one); ``target`` checks the architecture."""
        device = hardware.resolve_device(device)  # a device that is not there fails before the file is read
        return cls.from_checkpoint(cls.read_checkpoint(name_or_path, target), device)

    @classmethod
    def read_checkpoint(cls, name_or_path: str | os.PathLike, target: str | None = None) -> Checkpoint:
        """The validated contents of a shipped checkpoint or a checkpoint file (config, model tensors, a training
        state's tensors, extra metadata) without building a network (:mod:`pudnet.model.serialise`)."""
        return serialise.read(cls, pretrained.path_of(name_or_path), target)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, device: str | torch.device = "cpu") -> "PudNet":
        """The PudNet of a :meth:`read_checkpoint` result, in eval mode, on ``device``."""
        net = cls(checkpoint.config)
        net.load_state_dict(checkpoint.model, strict=True)
        return net.to(hardware.resolve_device(device)).eval()

    def save_pretrained(self, path: str | os.PathLike, training: dict[str, Tensor] | None = None,
                        half: bool = False, **extra: object) -> None:
        """Write this PudNet (and, for a training state, the ``training`` tensors) with the JSON ``extra``
        metadata as one file, atomically; a NaN or infinite tensor is refused (:func:`pudnet.ops.check_finite`).
        ``half``: float32 tensors stored as float16 (loaded back as float32)."""
        serialise.save(self, path, training, half, **extra)

    @property
    def tau(self) -> Tensor:
        return self.log_tau.exp()

    def embedding(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        """The dataset embedding ``e_D`` [B, E] of B datasets ``images`` [B, N, C, H, W].

        ``labels`` [B, N] (class index, −1 for unlabelled) is needed when ``config.sketch_support``.
        """
        if images.dim() != 5:
            raise ValueError(f"images must be [datasets, images, C, H, W], got {list(images.shape)}")
        images, labels = self._sketch_subset(images, labels)
        if len(images) == 1 and images.shape[1] > STATS_CHUNK and not torch.is_grad_enabled():
            features = self.sketch.streamed_per_image(images[0], STATS_CHUNK).unsqueeze(0)  # a large prediction
        else:
            features = self.sketch.per_image(images)
        sketch = features.mean(dim=1)
        if self.config.sketch_support:
            if labels is None or bool((labels.max(dim=-1).values < 0).any()):
                raise ValueError("this PudNet's sketch needs labelled samples (labels ≥ 0) in every dataset")
            sketch = torch.cat([sketch, _prototype_spread(features, labels)], dim=-1)
        return self.embed(sketch)

    def _sketch_subset(self, images: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """At most ``config.sketch_images`` images of each dataset: all labelled ones, the others evenly spaced."""
        cap, n = self.config.sketch_images, images.shape[1]
        if not cap or n <= cap:
            return images, labels
        known = labels >= 0 if labels is not None else torch.zeros(images.shape[:2], dtype=torch.bool)
        picks = torch.stack([_evenly_filled(row, cap) for row in known.cpu()]).to(images.device)
        rows = torch.arange(len(images), device=images.device).unsqueeze(1)
        return images[rows, picks], None if labels is None else labels[rows, picks]

    def layer_codes(self, e: Tensor) -> Tensor:
        """One conditioning vector ``r'_l`` per target parameter tensor, ``[B, L, E]``."""
        if self.ahru is None:
            return e.unsqueeze(1).expand(-1, len(self.specs), -1)
        return self.ahru(e, len(self.specs))

    def forward(self, images: Tensor, labels: Tensor | None = None) -> list[Tensor]:
        """Predicted parameters, one ``[B, *shape]`` tensor per spec of the target (in spec order)."""
        raws = self.generators(self.layer_codes(self.embedding(images, labels)))
        weights = [self._finalise(i, raw) for i, raw in enumerate(raws)]
        if self.prototype is not None:
            if labels is None:
                raise ValueError("this PudNet's prototype update needs labelled samples (labels ≥ 0)")
            i = [s.name for s in self.specs].index(self.prototype.name)
            weights[i] = weights[i] + self.prototype(self.base_params(), *self._sketch_subset(images, labels))
        return weights

    def base_params(self) -> Params:
        """The base the residual modes add their predictions to."""
        if self.config.weight_mode == "paper":
            raise ValueError("a PudNet of weight_mode 'paper' has no base")
        return {spec.name: getattr(self.base, _key(spec.name)) for spec in self.specs}

    def _finalise(self, i: int, raw: Tensor) -> Tensor:
        """A generator's raw output → the parameter: matrices standardised to He scale (times the residual
        scale and added to the base in the residual modes); vectors are offsets (to 1 for BatchNorm weights).

        The standardisation is folded into one multiply-add (``offset + raw · gain``): ResNets' weight
        matrices hold millions of values, and every extra elementwise pass over them shows in the latency.
        """
        spec = self.specs[i]
        residual = self.config.weight_mode != "paper"
        start = getattr(self.base, _key(spec.name)).unsqueeze(0) if residual else None
        if not spec.is_matrix:
            raw = raw.float()  # BatchNorm takes float32 weights next to its float32 statistics
            if residual:
                return start + raw
            return raw + 1.0 if spec.is_scale else raw
        flat = raw.flatten(1).float()
        mean, std = flat.mean(1, keepdim=True), flat.std(1, keepdim=True)
        gain = math.sqrt(2.0 / spec.fan_in) / (std + 1e-5)
        if not residual:
            return (flat * gain - mean * gain).view_as(raw)  # addcmul with a [B, 1] offset is unvectorised, slow
        gain = gain * self.residual_scale[i]
        return torch.addcmul(start.flatten(1) - mean * gain, flat, gain).view_as(raw)

    @property
    def device(self) -> torch.device:
        return self.log_tau.device

    @torch.no_grad()
    def predict_weights(self, images: Tensor, labels: Tensor | None = None, precision: str = "auto") -> Params:
        """The parameters for one dataset ``images`` [N, C, H, W] (floats in [0, 1]): the hypernetwork's one
        forward pass. ``labels`` [N]: class index, −1 if unlabelled.

        ``precision``: the compute dtype of the matrix products and convolutions (:mod:`pudnet.hardware`;
        ``"auto"``: bf16 autocast where the device runs it natively, as meta-training does, else float32);
        the parameters come out in float32 either way.
        """
        images = self._checked_images(images)
        self._check_labels(images, labels)
        images, labels = self._on_device(images, labels)
        with hardware.autocast(images.device, precision):
            weights = self(images.unsqueeze(0), None if labels is None else labels.unsqueeze(0))
        params = {name: value.float() for name, value in self.params_of(weights, 0).items()}
        check_finite(params, "the predicted parameters (is the checkpoint diverged?)")
        return params

    @torch.no_grad()
    def predict_params(
        self, images: Tensor, labels: Tensor | None = None, precision: str = "auto", progress: bool = False,
    ) -> tuple[Params, Stats]:
        """:meth:`predict_weights`, refined on the dataset when ``config.refine_steps`` (model/refine.py), and
        the target's BatchNorm statistics on the same dataset, all in ``precision`` (with bf16, the
        statistics are within ~0.6% of a standard deviation of the float32 ones).

        Memory and time stay bounded whatever the dataset's size: the sketch sees ``config.sketch_images``
        images (with 0, every image, streamed in chunks like the statistics), the refinement at most
        :data:`~pudnet.model.refine.REFINE_IMAGES` and the BatchNorm statistics at most :data:`STATS_IMAGES`
        (each: every image of a smaller dataset, else every labelled one and the others evenly spaced); the
        statistics are streamed in chunks, exactly
        (:meth:`Target.dataset_stats`; ``progress``: a progress bar while they are).
        """
        if self.config.refine_steps and labels is None:
            raise ValueError("this PudNet refines its weights on labelled samples: pass labels (−1 = unlabelled)")
        params = self.predict_weights(images, labels, precision)
        images, labels = self._on_device(self._checked_images(images), labels)
        with hardware.autocast(images.device, precision):
            if self.config.refine_steps:
                params = refine(self.target, params, *_at_most(REFINE_IMAGES, images, labels),
                                self.config.refinement, step_sizes=self.refine_step_sizes())
            stats = self._dataset_stats(params, _at_most(STATS_IMAGES, images, labels)[0], progress)
        check_finite(params, "the refined parameters")
        check_finite({f"{name}.{part}": t for name, pair in stats.items() for part, t in zip(("mean", "var"), pair)},
                     "the BatchNorm statistics of the dataset")
        return params, stats

    def _dataset_stats(self, params: Params, images: Tensor, progress: bool) -> Stats:
        passes = math.ceil(len(images) / STATS_CHUNK) * len(self.target.batchnorm_names())
        with tqdm(total=passes, desc="BatchNorm statistics (chunk passes)", unit="pass",
                  disable=not progress or len(images) <= STATS_CHUNK) as bar:
            return self.target.dataset_stats(params, images, STATS_CHUNK, bar.update)

    def predict(self, data: inputs.Images, support: inputs.Support | None = None, precision: str = "auto",
                progress: bool = False) -> nn.Module:
        """A ready ``torch.nn.Module`` (eval mode, on this PudNet's device) with weights predicted for ``data``
        (``precision``: see :meth:`predict_weights`).

        ``data``: an :class:`ImageStore`, images [N, C, H, W] as a tensor or numpy array (uint8, or floats in
        [0, 1]), or an image folder (read at the target's size). A PudNet whose sketch sees labelled samples, or
        that refines its weights, needs ``support``: an ImageStore (e.g. ``data.labelled(per_class=10)``) or
        ``(images, labels)`` (any integer class ids); support images that are images of ``data`` are counted
        once (:meth:`labelled_dataset`). Memory is bounded (:meth:`predict_params`); ``progress`` shows a bar
        for the long phase of a large dataset.
        """
        params, stats = self.predict_params(*self.labelled_dataset(data, support), precision, progress)
        return self.target.to_module(params, stats)

    def labelled_dataset(self, data: inputs.Images, support: inputs.Support | None = None
                         ) -> tuple[Tensor, Tensor | None]:
        """``data`` as images and, where this PudNet reads labelled samples, one label per image (−1 =
        unlabelled) from ``support`` (:mod:`pudnet.data.inputs`); what :meth:`predict` and the evaluation
        protocol predict from."""
        size = self.config.target_kwargs.get("image_size")
        images = inputs.images_of(data, self.target.in_channels, size)
        if not self.config.uses_labels:
            return images, None
        if support is None:
            reason = ("its sketch reads class prototypes" if self.config.sketch_support
                      else "it updates its last convolution from them" if self.config.prototype_update
                      else "it refines on them")
            raise ValueError(f"this PudNet needs labelled samples ({reason}): predict(data, "
                             "support=data.labelled(10)) or support=(images, labels); "
                             "pudnet.pretrained_names(needs_labels=False) lists the shipped checkpoints that do not")
        labelled, labels = inputs.labelled_of(support, self.target.in_channels, size)
        return inputs.with_support(images, labelled, labels)

    def _on_device(self, images: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        device = self.device
        return images.to(device), None if labels is None else labels.to(device)

    def _checked_images(self, images: object) -> Tensor:
        """``images`` [N, C, H, W] of this PudNet's channel count as floats in [0, 1] (uint8 is divided by 255),
        or a clear error before any computation."""
        if not isinstance(images, Tensor):
            raise TypeError(f"expected a tensor of images [N, {self.target.in_channels}, H, W], got "
                            f"{type(images).__name__}")
        what = f"images for this PudNet ({self.config.target})"
        return inputs.images_of(images, self.target.in_channels, None, what)

    def _check_labels(self, images: Tensor, labels: Tensor | None) -> None:
        if len(images) < 2:
            raise ValueError(f"a dataset needs at least 2 images to sketch, got {len(images)}")
        if labels is None:
            return
        if not isinstance(labels, Tensor) or labels.shape != images.shape[:1] or labels.is_floating_point():
            raise ValueError(f"labels must be integers [N] = [{len(images)}] (−1 = unlabelled), got "
                             f"{list(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__}")
        if self.config.uses_labels and len(torch.unique(labels[labels >= 0])) < 2:
            raise ValueError("this PudNet needs labelled samples of at least 2 classes")

    def params_of(self, weights: list[Tensor], index: int) -> Params:
        """The parameter dict of dataset ``index`` of a meta-batch."""
        return {spec.name: w[index] for spec, w in zip(self.specs, weights)}


def pretrained_names(needs_labels: bool | None = None) -> list[str]:
    """The shipped checkpoints (for :meth:`PudNet.from_pretrained`); ``needs_labels`` True / False: only those
    whose ``predict`` needs / does not need labelled samples (``support``)."""
    names = pretrained.available()
    if needs_labels is None:
        return names
    return [n for n in names if serialise.read_config(pretrained.path_of(n)).uses_labels == needs_labels]


def _at_most(cap: int, images: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """At most ``cap`` images of one dataset (and their labels): all of a dataset that small, else every
    labelled one (label ≥ 0) and evenly spaced others."""
    if len(images) <= cap:
        return images, labels
    known = labels.cpu() >= 0 if labels is not None else torch.zeros(len(images), dtype=torch.bool)
    picks = _evenly_filled(known, cap).to(images.device)
    return images[picks], None if labels is None else labels[picks]


def _evenly_filled(known: Tensor, cap: int) -> Tensor:
    """Sorted positions: every ``True`` of ``known`` [N] (up to ``cap``), then evenly spaced others up to ``cap``."""
    labelled, others = known.nonzero().flatten()[:cap], (~known).nonzero().flatten()
    spaced = torch.linspace(0, len(others) - 1, cap - len(labelled)).round().long()
    return torch.cat([labelled, others[spaced]]).sort().values


def _key(name: str) -> str:
    return name.replace(".", "__")


def _prototype_spread(features: Tensor, labels: Tensor) -> Tensor:
    """Per-dimension standard deviation of the class prototypes of the labelled samples, ``[B, D]``."""
    classes = int(labels.max().item()) + 1
    onehot = F.one_hot(labels.clamp(min=0), classes).float() * (labels >= 0).unsqueeze(-1).float()
    counts = onehot.sum(1).clamp(min=1).unsqueeze(-1)  # [B, K, 1]
    prototypes = onehot.transpose(1, 2) @ features / counts  # [B, K, D]
    return prototypes.std(dim=1, unbiased=False)
