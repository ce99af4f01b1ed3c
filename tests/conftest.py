import os

# Triton kernels run on CPU tensors in Triton's interpreter; it must be set before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from pudnet.data import datasets  # noqa: E402
from pudnet.data.store import ImageStore  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def fashion_train() -> ImageStore:
    return datasets.fashion_mnist("train")


@pytest.fixture(scope="session")
def fashion_test() -> ImageStore:
    return datasets.fashion_mnist("test")


@pytest.fixture(scope="session")
def small_fashion(fashion_train) -> ImageStore:
    """200 real images per class, for fast tests."""
    keep = np.concatenate([np.flatnonzero(fashion_train.labels == c)[:200] for c in range(10)])
    return fashion_train.subset(np.sort(keep))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
