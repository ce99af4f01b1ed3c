"""Target architectures PudNet predicts weights for."""

from . import convnet, resnet, unet  # noqa: F401  (registers the targets)
from .base import ModuleTarget, ParamSpec, Params, Stats, Target, make_target, register, target_names

BUILT_IN = tuple(target_names())  # the architectures that ship with pudnet (not replaceable by for_module)

__all__ = ["BUILT_IN", "ModuleTarget", "ParamSpec", "Params", "Stats", "Target", "make_target", "register",
           "target_names"]
