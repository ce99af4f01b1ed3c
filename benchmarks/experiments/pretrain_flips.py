"""A candidate base for PudNet: the pretrained baseline's CE training on Fashion classes 0–5 plus their vertical
flips, intensity inversions and both as 18 more classes (24; none a quarter turn, so 90° rotated-class
validation stays novel). Writes a baseline weight file to score with validation_scores.py --extra.

    python benchmarks/experiments/pretrain_flips.py runs/pretrained-flips24.safetensors --epochs 1
"""
import argparse
import json

import numpy as np
import torch

from pudnet.baselines.common import save_baseline
from pudnet.baselines.pretrained import PretrainConfig, train_pretrained
from pudnet.data import datasets
from pudnet.data.store import ImageStore
from pudnet.targets import make_target

TRANSFORMS = (
    lambda x: x[:, :, ::-1, :],  # vertical flip
    lambda x: 255 - x,  # inversion
    lambda x: 255 - x[:, :, ::-1, :],
)


def with_transformed_classes(store: ImageStore) -> ImageStore:
    images, labels = [store.images], [store.labels]
    for i, transform in enumerate(TRANSFORMS, start=1):
        images.append(np.ascontiguousarray(transform(store.images)))
        labels.append(store.labels + 1000 * i)
    return ImageStore(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), "fashion+flips+inversions")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = with_transformed_classes(datasets.fashion_mnist("train").of_classes([0, 1, 2, 3, 4, 5]))
    target = make_target("convnet3", in_channels=1, image_size=28)
    params, info = train_pretrained(target, PretrainConfig(epochs=args.epochs, train_classes=store.classes), store)
    save_baseline(params, args.out, "pretrained-flips24", target, info)
    print(json.dumps({key: info[key] for key in ("val_acc", "selected_epoch", "wall_s")}))


if __name__ == "__main__":
    main()
