import json

import pytest
import torch
from safetensors.torch import save_file

from pudnet.checkpoint import CheckpointError
from pudnet.model.config import PudNetConfig
from pudnet.model.pudnet import PudNet

TINY = dict(embedding_dim=16, generator_hidden=4, sketch_width=4, sketch_dim=8,
            target_kwargs={"in_channels": 1, "image_size": 28, "width": 4})


def test_round_trip_is_exact(tmp_path):
    net = PudNet(PudNetConfig(**TINY))
    net.save_pretrained(tmp_path / "c.safetensors", step=7)
    state = PudNet.read_checkpoint(tmp_path / "c.safetensors")
    loaded = PudNet.from_checkpoint(state)
    assert loaded.config == net.config and state.extra == {"step": 7} and not state.training
    for (name, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_other_architecture_is_refused(tmp_path):
    PudNet(PudNetConfig(**TINY)).save_pretrained(tmp_path / "c.safetensors")
    with pytest.raises(CheckpointError, match="'convnet3'.*'resnet18'"):
        PudNet.from_pretrained(tmp_path / "c.safetensors", target="resnet18")


def test_tensors_of_another_shape_are_refused(tmp_path):
    net = PudNet(PudNetConfig(**TINY))
    state = dict(net.state_dict())
    state["embed.weight"] = torch.zeros(3, 3)
    meta = {"format": "pudnet-checkpoint-v1", "config": json.dumps(net.config.to_dict())}
    save_file(state, tmp_path / "c.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match=r"shape mismatch embed.weight"):
        PudNet.from_pretrained(tmp_path / "c.safetensors")


def test_pickle_file_is_refused_without_executing_it(tmp_path):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        PudNet.from_pretrained(tmp_path / "evil.pt")
    assert not marker.exists()


def test_non_pudnet_safetensors_and_missing_file(tmp_path):
    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not a PudNet checkpoint"):
        PudNet.from_pretrained(tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        PudNet.from_pretrained(tmp_path / "nope.safetensors")


def test_failed_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    net = PudNet(PudNetConfig(**TINY))
    net.save_pretrained(path, step=1)
    before = path.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("pudnet.checkpoint.save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        net.save_pretrained(path, step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]
