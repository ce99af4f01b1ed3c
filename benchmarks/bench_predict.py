"""Prediction latency (pytest-benchmark): `make bench` or
`python -m pytest benchmarks/bench_predict.py --benchmark-only`.

Targets (issue 2): a 400-image dataset in ≤ 10 ms for ConvNet-3 and ≤ 100 ms for ResNet-18.
"weights" is the hypernetwork's forward pass alone; "module" adds the target's BatchNorm statistics
on the dataset and the export to a torch.nn.Module.
"""

import pytest
import torch

from pudnet.bench import dataset, latency_model


@pytest.fixture(scope="module")
def data():
    return dataset(400)


@pytest.mark.parametrize("target", ["convnet3", "resnet18"])
def test_predict_weights(benchmark, target, data):
    net = latency_model(target)
    benchmark.group = f"predict-{target}"
    with torch.no_grad():
        weights = benchmark(lambda: net(data.unsqueeze(0)))
    assert len(weights) == len(net.specs)


@pytest.mark.parametrize("target", ["convnet3", "resnet18"])
def test_predict_module(benchmark, target, data):
    net = latency_model(target)
    benchmark.group = f"predict-{target}"
    module = benchmark(lambda: net.predict(data))
    assert isinstance(module, torch.nn.Module)
