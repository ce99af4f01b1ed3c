"""The one place that picks device and precision: bf16 only where the hardware runs it natively."""

import pytest
import torch

from pudnet import hardware


@pytest.fixture
def cpu_with(monkeypatch):
    def make(**features):
        hardware.cpu_has_native_bf16.cache_clear()
        monkeypatch.setattr(hardware, "cpu_features", lambda: {"avx2": True, **features})
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)

    yield make
    hardware.cpu_has_native_bf16.cache_clear()


def test_amd_epyc_without_native_bf16_computes_in_float32(cpu_with):
    cpu_with(avx512_bf16=False, amx_bf16=False)
    assert hardware.compute_dtype("cpu") == torch.float32
    assert not hardware.autocast("cpu")._enabled
    assert "no native bf16" in hardware.describe("cpu")


@pytest.mark.parametrize("flag", ["amx_bf16", "avx512_bf16"])
def test_cpus_with_native_bf16_autocast_to_bf16(cpu_with, flag):
    cpu_with(**{flag: True})
    assert hardware.compute_dtype("cpu") == torch.bfloat16
    context = hardware.autocast("cpu")
    assert context._enabled and context.fast_dtype == torch.bfloat16


def test_explicit_precision_overrides_the_hardware(cpu_with):
    cpu_with(amx_bf16=True)
    assert hardware.compute_dtype("cpu", "fp32") == torch.float32
    cpu_with()
    assert hardware.compute_dtype("cpu", "bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of"):
        hardware.compute_dtype("cpu", "fp8")


def test_devices_are_checked():
    assert hardware.resolve_device("cpu") == torch.device("cpu")
    assert hardware.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        hardware.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            hardware.resolve_device("cuda:1")


def test_training_and_prediction_follow_the_decision(cpu_with, small_fashion, tmp_path):
    """On a CPU without native bf16 nothing runs under autocast: training and prediction are float32."""
    from pudnet.model.config import PudNetConfig
    from pudnet.model.pudnet import PudNet
    from pudnet.train import TrainConfig, Trainer

    cpu_with()
    seen = []
    original = torch.nn.functional.conv2d

    def spy(x, *args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), x.dtype))
        return original(x, *args, **kwargs)

    net = PudNet(PudNetConfig(embedding_dim=16, generator_hidden=4, sketch_width=4, sketch_dim=8,
                              target_kwargs={"in_channels": 1, "image_size": 28, "width": 8}))
    trainer = Trainer(net, TrainConfig(meta_batch=1, ways=2, sketch=4, support=2, query=2, validate_every=0,
                                       train_classes=[0, 1, 2]), tmp_path, small_fashion)
    torch.nn.functional.conv2d = spy
    try:
        trainer.train_step()
        net.eval().predict_weights(small_fashion.tensor()[:8])
    finally:
        torch.nn.functional.conv2d = original
    assert seen and all(state == (False, torch.float32) for state in seen)


def test_benchmark_figures_of_each_machine_kind_keep_their_own_names(cpu_with, monkeypatch):
    from pudnet import bench, report

    written = {}
    monkeypatch.setattr(report, "merge_summary", lambda entries: written.update(entries))
    entry = {"value": 1.0}
    cpu_with(avx512_bf16=False, amx_bf16=False)
    bench._record({"predict_latency.convnet3.weights_ms": entry}, torch.device("cpu"))
    cpu_with(amx_bf16=True)
    bench._record({"predict_latency.convnet3.weights_ms": entry}, torch.device("cpu"))
    bench._record({"predict_latency.convnet3.weights_ms": entry}, torch.device("cuda", 0))
    assert sorted(written) == ["predict_latency.convnet3.weights_ms",
                               "predict_latency.cpu_native_bf16.convnet3.weights_ms",
                               "predict_latency.cuda.convnet3.weights_ms"]
    assert written["predict_latency.cuda.convnet3.weights_ms"]["device"] == "cuda:0"
