"""Prediction latency (pytest-benchmark): `make bench` or
`python -m pytest benchmarks/bench_predict.py --benchmark-only`.

Targets (issue 2): a 400-image dataset in ≤ 10 ms for ConvNet-3 and ≤ 100 ms for ResNet-18.
"weights" is the hypernetwork's forward pass alone (`PudNet.predict_weights`), side by side in the default
configuration and the slower ones (VARIANTS); "module" adds the target's BatchNorm statistics on the dataset
and the export to a torch.nn.Module.
"""

import pytest
import torch

from pudnet.bench import dataset, latency_model


@pytest.fixture(scope="module")
def data():
    return dataset(400)


# "default": bf16 autocast, the sketch over 200 of the 400 images (PudNetConfig.sketch_images), as predict();
# "fp32": float32; "fp32-all-images": float32 with every image sketched (the path before the speed-ups)
VARIANTS = {"default": (True, 200), "fp32": (False, 200), "fp32-all-images": (False, 0)}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("target", ["convnet3", "resnet18"])
def test_predict_weights(benchmark, target, variant, data):
    bf16, sketch_images = VARIANTS[variant]
    net = latency_model(target, sketch_images=sketch_images)
    benchmark.group = f"predict-{target}"
    params = benchmark(lambda: net.predict_weights(data, bf16=bf16))
    assert len(params) == len(net.specs)


@pytest.mark.parametrize("target", ["convnet3", "resnet18"])
def test_predict_module(benchmark, target, data):
    net = latency_model(target)
    benchmark.group = f"predict-{target}"
    module = benchmark(lambda: net.predict(data))
    assert isinstance(module, torch.nn.Module)
