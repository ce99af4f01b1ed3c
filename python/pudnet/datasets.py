"""Public dataset loaders: ``pudnet.datasets.fashion_mnist()``, ``.idx()``, ``.mnist()``, ``.cifar()``,
``.image_folder()`` — each returns an :class:`pudnet.ImageStore`."""

from .data.datasets import *  # noqa: F401,F403
from .data.datasets import __all__  # noqa: F401
