"""Prediction latency (pytest-benchmark) of what users run: the shipped ConvNet-3 checkpoint and the shipped
configuration for ResNet-18, on a 400-image dataset of real unseen Fashion-MNIST images (40 labelled).

    OMP_NUM_THREADS=2 python -m pytest benchmarks/bench_predict.py --benchmark-only

"weights" is the hypernetwork's forward pass alone (`PudNet.predict_weights`) in the default precision
(`pudnet.hardware`: float32 on CPUs without native bf16) and in float32; "module" adds the refinement the
checkpoint asks for, the dataset's BatchNorm statistics and the export to a torch.nn.Module. For interleaved
variants with ratios (what benchmarks/results/summary.json records) use `pudnet bench predict --record`.
"""

import pytest
import torch

from pudnet.bench import shipped_net, unseen_dataset


@pytest.fixture(scope="module")
def data():
    return unseen_dataset()


@pytest.mark.parametrize("precision", ["auto", "fp32"])
@pytest.mark.parametrize("target", ["convnet3", "resnet18"])
def test_predict_weights(benchmark, target, precision, data):
    net, _ = shipped_net(target, torch.device("cpu"))
    benchmark.group = f"predict-{target}"
    params = benchmark(lambda: net.predict_weights(*data, precision=precision))
    assert len(params) == len(net.specs)


@pytest.mark.parametrize("target", ["convnet3", "resnet18"])
def test_predict_module(benchmark, target, data):
    net, _ = shipped_net(target, torch.device("cpu"))
    benchmark.group = f"predict-{target}"
    params, stats = benchmark(lambda: net.predict_params(*data))
    assert isinstance(net.target.to_module(params, stats), torch.nn.Module)
