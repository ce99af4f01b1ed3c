"""Public dataset loaders: ``pudnet.datasets.fashion_mnist()``, ``.idx()``, ``.mnist()``, ``.cifar()``,
``.image_folder()``, ``.natural_patches()`` — each returns an :class:`pudnet.ImageStore`."""

from .data.datasets import *  # noqa: F401,F403
from .data.datasets import __all__ as _loaders
from .data.natural import natural_patches  # noqa: F401

__all__ = [*_loaders, "natural_patches"]
