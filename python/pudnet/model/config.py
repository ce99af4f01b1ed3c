"""What fixes a PudNet's architecture: :class:`PudNetConfig` (saved with every checkpoint), its named
:data:`PRESETS`, and the bounds every field is checked against."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..targets import make_target
from .refine import Refinement

WEIGHT_MODES = ("paper", "residual", "frozen_base")
LOSSES = ("full", "metric", "no_kl")

# Inclusive bounds of every numeric config field: far beyond any useful model, yet small enough that a hostile
# checkpoint cannot ask for terabytes or hours before a tensor exists (the total size is checked at load too).
INT_BOUNDS = {
    "embedding_dim": (1, 8192), "generator_hidden": (1, 1024), "generator_rank": (0, 1024),
    "sketch_width": (1, 1024), "sketch_dim": (1, 8192), "sketch_images": (0, 1_000_000), "refine_steps": (0, 1000),
    "refine_last": (1, 1000), "num_train_classes": (0, 100_000),
}
FLOAT_BOUNDS = {
    "alpha": (0.0, 1.0), "residual_init": (0.0, 100.0), "refine_lr": (1e-9, 100.0), "refine_pseudo": (0.0, 100.0),
    "tau_init": (1e-3, 1e4),
}
BOOL_FIELDS = ("use_ahru", "sketch_support", "learn_tau", "learn_refine_lr", "prototype_update")
TARGET_KWARG_BOUNDS = {"in_channels": (1, 64), "image_size": (1, 1024), "width": (1, 1024), "depth": (1, 16)}
OTHER_TARGET_KWARG_BOUNDS = (1, 1024)  # any other (integer) argument of a target


def check_number(name: str, value: object, bounds: tuple[float, float], integer: bool) -> None:
    """``value`` is an int (``integer``) or a real number within ``bounds``, else a ValueError naming ``name``."""
    low, high = bounds
    right_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not right_type or not low <= value <= high:  # NaN fails the comparison
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} in [{low:g}, {high:g}], got {value!r}")


@dataclass
class PudNetConfig:
    """Everything that fixes a PudNet's architecture (saved with every checkpoint)."""

    target: str = "convnet3"
    target_kwargs: dict = field(default_factory=lambda: {"in_channels": 1, "image_size": 28})
    embedding_dim: int = 128
    generator_hidden: int = 32
    # > 0: every weight matrix is generated as a product of two factors of this rank (model/generators.py;
    # what keeps a ResNet's generators small); 0: full-rank generators, as in the paper
    generator_rank: int = 0
    sketch_width: int = 32
    sketch_dim: int = 256
    alpha: float = 0.3  # initial residual connection r' = (1 - α) r + α e
    use_ahru: bool = True  # ablation: False sends the embedding straight into every generator
    # "paper": W = G(r'); "residual": W = base + β·G(r') with a learned base and β starting small;
    # "frozen_base": the same with the base fixed at a random (Kaiming) initialisation
    weight_mode: str = "paper"
    residual_init: float = 0.1
    sketch_support: bool = False  # the sketch also sees class prototypes of the labelled samples
    # the sketch of a larger dataset is the mean over this many of its images (every labelled one, the rest
    # evenly spaced): meta-training's datasets have 200 (4 classes × 50), and the sketch encoder's pass is
    # most of a prediction's time; 0 sketches every image
    sketch_images: int = 200
    # add a learned update of the last 3×3 convolution built from the labelled class prototypes of the dataset
    # under the base (model/prototype.py; residual modes)
    prototype_update: bool = False
    # at prediction, refine the last `refine_last` parameter tensors by `refine_steps` SGD steps on the dataset:
    # labelled centroid loss + `refine_pseudo` × pseudo-labels of every image (model/refine.py; 0 = off)
    refine_steps: int = 0
    refine_lr: float = 0.2
    refine_last: int = 3
    refine_pseudo: float = 1.0
    # a learned step size per refined tensor (Meta-SGD's, per tensor), starting at refine_lr; meta-trained
    # through the refinement (`pudnet train --unroll-steps`)
    learn_refine_lr: bool = False
    # the auxiliary full-classification head over the training classes (training only; 0 = none, as released)
    num_train_classes: int = 6
    loss: str = "full"  # "full" = metric + full head + KL; "metric"; "no_kl"
    tau_init: float = 10.0
    learn_tau: bool = True

    def __post_init__(self):
        if self.weight_mode not in WEIGHT_MODES:
            raise ValueError(f"weight_mode must be one of {WEIGHT_MODES}, got {self.weight_mode!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for name, bounds in INT_BOUNDS.items():
            check_number(name, getattr(self, name), bounds, integer=True)
        for name, bounds in FLOAT_BOUNDS.items():
            check_number(name, getattr(self, name), bounds, integer=False)
            setattr(self, name, float(getattr(self, name)))  # JSON may spell 0.0 as 0; tensors need the float
        for name in BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.prototype_update and self.weight_mode == "paper":
            raise ValueError("prototype_update changes a base's last convolution: it needs weight_mode "
                             "'residual' or 'frozen_base'")
        self._check_target()

    def _check_target(self) -> None:
        if not isinstance(self.target, str):
            raise ValueError(f"target must be a target name, got {self.target!r}")
        if not isinstance(self.target_kwargs, dict):
            raise ValueError(f"target_kwargs must be a mapping, got {self.target_kwargs!r}")
        for name, value in self.target_kwargs.items():
            bounds = TARGET_KWARG_BOUNDS.get(name, OTHER_TARGET_KWARG_BOUNDS)
            check_number(f"target_kwargs.{name}", value, bounds, integer=True)
        try:
            make_target(self.target, **self.target_kwargs)  # shapes only, no tensors
        except TypeError as e:
            raise ValueError(f"target_kwargs {self.target_kwargs} do not fit target {self.target!r} ({e})") from None

    @property
    def refinement(self) -> Refinement:
        return Refinement(self.refine_steps, self.refine_lr, self.refine_last, self.refine_pseudo)

    @property
    def uses_labels(self) -> bool:
        """Whether a prediction needs labelled samples (the sketch or the prototype update sees class prototypes,
        or the refinement trains on them)."""
        return self.sketch_support or self.refine_steps > 0 or self.prototype_update

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def preset(cls, name: str, **overrides) -> "PudNetConfig":
        """A named configuration (:data:`PRESETS`) with ``overrides``."""
        if name not in PRESETS:
            raise ValueError(f"unknown PudNet preset {name!r}; known: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, data: dict) -> "PudNetConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            removed = sorted(unknown & set(REMOVED))
            note = f" ({', '.join(removed)}: experiments removed with their null results, benchmarks/NOTES.md)" \
                if removed else ""
            raise ValueError(f"unknown PudNet config keys: {sorted(unknown)}{note}")
        return cls(**data)


REMOVED = {"whiten": False, "whiten_shrinkage": 0.1, "contrast": 0.0}
"""Fields of format-1 checkpoints that are gone, with the value that meant "off" (session 8: the test-time
whitening of E4 and the contrast hinge of E10/E11, both null results; benchmarks/NOTES.md)."""

PRESETS: dict[str, dict] = {
    # the paper as written: weights generated outright, the sketch of the images alone
    "paper": {},
    # a learned base (start it from the CE-pretrained baseline with `pudnet train --base-from`) plus a
    # dataset-conditioned residual; the sketch also sees the class prototypes of the labelled samples
    "residual-prototypes": {"weight_mode": "residual", "sketch_support": True},
    # the same with the base frozen (at the pretrained baseline, `--base-from`) and the residual starting at 2%
    # of He scale
    "frozen-base-prototypes": {"weight_mode": "frozen_base", "sketch_support": True, "residual_init": 0.02},
    # the shipped default: frozen-base-prototypes with its predictions refined on the dataset (model/refine.py)
    "frozen-base-prototypes-refined": {
        "weight_mode": "frozen_base", "sketch_support": True, "residual_init": 0.02, "refine_steps": 10,
    },
}
