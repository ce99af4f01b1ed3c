"""PudNet: predict the weights of a ConvNet for an unseen image dataset in one forward pass.

    import pudnet
    net = pudnet.PudNet.from_pretrained("fashion-convnet3")
    data = pudnet.datasets.fashion_mnist("test").of_classes([6, 7, 8, 9])
    model = net.predict(data)                       # a torch.nn.Module with predicted weights
    clf = pudnet.CentroidClassifier(model, support=data.labelled(per_class=10))
"""

from . import datasets
from .checkpoint import CheckpointError
from .classifier import CentroidClassifier
from .data.sampler import TooFewImagesError
from .data.store import DataError, ImageStore
from .model.config import PudNetConfig
from .model.pudnet import PudNet, pretrained_names
from .targets import Target

__version__ = "0.1.0"
__all__ = [
    "CentroidClassifier", "CheckpointError", "DataError", "ImageStore", "PudNet", "PudNetConfig", "Target",
    "TooFewImagesError", "datasets", "pretrained_names",
]
