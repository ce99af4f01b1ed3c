"""Target architectures PudNet predicts weights for."""

from . import convnet, resnet  # noqa: F401  (registers the targets)
from .base import ParamSpec, Params, Stats, Target, make_target, target_names

__all__ = ["ParamSpec", "Params", "Stats", "Target", "make_target", "target_names"]
