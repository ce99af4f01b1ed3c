"""Prediction latency (pytest-benchmark): `make bench` or
`python -m pytest benchmarks/bench_predict.py --benchmark-only`.

Targets (issue 2): a 400-image dataset in ≤ 10 ms for ConvNet-3 and ≤ 100 ms for ResNet-18.
"weights" is the hypernetwork's forward pass alone (`PudNet.predict_weights`), in bf16 autocast (the
default, as in meta-training) and in float32 side by side; "module" adds the target's BatchNorm statistics
on the dataset and the export to a torch.nn.Module.
"""

import pytest
import torch

from pudnet.bench import dataset, latency_model


@pytest.fixture(scope="module")
def data():
    return dataset(400)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("target", ["convnet3", "resnet18"])
def test_predict_weights(benchmark, target, precision, data):
    net = latency_model(target)
    benchmark.group = f"predict-{target}"
    params = benchmark(lambda: net.predict_weights(data, bf16=precision == "bf16"))
    assert len(params) == len(net.specs)


@pytest.mark.parametrize("target", ["convnet3", "resnet18"])
def test_predict_module(benchmark, target, data):
    net = latency_model(target)
    benchmark.group = f"predict-{target}"
    module = benchmark(lambda: net.predict(data))
    assert isinstance(module, torch.nn.Module)
