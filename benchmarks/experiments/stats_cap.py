"""Does taking the BatchNorm statistics from 4,096 of a dataset's images (STATS_IMAGES) instead of all of them
change anything? The README's prediction (all 24,000 training images of classes 6-9 + 40 labelled), the shipped
checkpoint: statistics from the capped subset vs from every image (streamed, exact), compared layer by layer
(difference in units of the channel's standard deviation) and by the centroid classifier's top-1 on the
4,000 test images of classes 6-9.

    ~/.cache/pudnet/venv/bin/python benchmarks/experiments/stats_cap.py
"""

import json

import numpy as np
import torch

import pudnet
from pudnet.model.pudnet import STATS_IMAGES
from pudnet.ops import centroids, cosine_logits

torch.set_num_threads(2)
net = pudnet.PudNet.from_pretrained("fashion-convnet3")
data = pudnet.datasets.fashion_mnist("train").of_classes([6, 7, 8, 9])
support = data.labelled(per_class=10)
test = pudnet.datasets.fashion_mnist("test").of_classes([6, 7, 8, 9])
images = torch.cat([data.tensor(), support.tensor()])
known = torch.tensor(np.searchsorted(support.classes, support.labels))
labels = torch.cat([torch.full((len(data),), -1), known])
params, capped = net.predict_params(images, labels)
every = net.target.dataset_stats(params, images)
shift = {layer: float(((capped[layer][0] - every[layer][0]).abs() / every[layer][1].sqrt()).max()) for layer in every}
ratio = {layer: float((capped[layer][1] / every[layer][1]).sub(1).abs().max()) for layer in every}


def top1(stats):
    with torch.no_grad():
        feats = lambda x: net.target.forward(params, x, stats)[0]  # noqa: E731
        centres = centroids(feats(support.tensor()), known, 4)
        predicted = cosine_logits(feats(test.tensor()), centres, 1.0).argmax(1)
    truth = torch.tensor(np.searchsorted(support.classes, test.labels))
    return 100 * float((predicted == truth).float().mean())


print(json.dumps({"images": len(images), "stats_images": STATS_IMAGES, "max_mean_shift_in_std": shift,
                  "max_relative_variance_change": ratio, "top1_capped": top1(capped), "top1_every_image": top1(every)}))
