"""One rank of the 2-process meta-training in test_distributed.py (run by torchrun, not collected by pytest)."""

import sys

import numpy as np
import torch

from pudnet.data import datasets
from pudnet.model.config import PudNetConfig
from pudnet.train import TrainConfig, train

MODEL = PudNetConfig(embedding_dim=16, generator_hidden=4, sketch_width=4, sketch_dim=8,
                     target_kwargs={"in_channels": 1, "image_size": 28, "width": 8})
CONFIG = TrainConfig(steps=3, meta_batch=4, ways=3, sketch=6, support=2, query=3, checkpoint_every=3,
                     log_every=1, validate_every=2, validation_groups=2, device="cpu", precision="fp32")


def small_store():
    store = datasets.fashion_mnist("train")
    keep = np.concatenate([np.flatnonzero(store.labels == c)[:200] for c in range(10)])
    return store.subset(np.sort(keep))


if __name__ == "__main__":
    torch.set_num_threads(1)
    train(MODEL, CONFIG, sys.argv[1], store=small_store(), progress=False)
