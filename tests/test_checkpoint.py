import json

import pytest
import torch
from safetensors.torch import save_file

from pudnet.checkpoint import CheckpointError, read_metadata
from pudnet.model.config import PudNetConfig
from pudnet.model.pudnet import PudNet
from pudnet.pretrained import path_of

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
    meta = {"format": "pudnet-checkpoint-v2", "config": json.dumps(net.config.to_dict())}
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


def _format_1(net: PudNet, path, **removed) -> None:
    """``net`` written as format 1 did: its config with the experiment switches since removed."""
    config = {**net.config.to_dict(), "whiten": False, "whiten_shrinkage": 0.1, "contrast": 0.0, **removed}
    save_file(dict(net.state_dict()), path, metadata={"format": "pudnet-checkpoint-v1", "config": json.dumps(config)})


def test_format_1_checkpoints_load_migrated_and_are_written_as_format_2(tmp_path):
    torch.manual_seed(0)
    net = PudNet(PudNetConfig(**TINY))
    _format_1(net, tmp_path / "v1.safetensors")
    loaded = PudNet.from_pretrained(tmp_path / "v1.safetensors")
    assert loaded.config == net.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))
    loaded.save_pretrained(tmp_path / "v2.safetensors")
    assert read_metadata(tmp_path / "v2.safetensors")["format"] == "pudnet-checkpoint-v2"
    assert "whiten" not in json.loads(read_metadata(tmp_path / "v2.safetensors")["config"])


@pytest.mark.parametrize("removed", [{"whiten": True}, {"contrast": 0.5}])
def test_a_format_1_checkpoint_that_used_a_removed_experiment_is_refused_by_name(tmp_path, removed):
    _format_1(PudNet(PudNetConfig(**TINY)), tmp_path / "v1.safetensors", **removed)
    with pytest.raises(CheckpointError, match=f"uses .*{next(iter(removed))}.*experiments removed"):
        PudNet.from_pretrained(tmp_path / "v1.safetensors")


def test_a_removed_switch_in_a_config_names_why():
    with pytest.raises(ValueError, match=r"whiten.*experiments removed"):
        PudNetConfig.from_dict({"whiten": True})


def test_the_shipped_checkpoints_are_format_1_and_load():
    for name in ("fashion-convnet3", "fashion-unet-denoise"):
        assert read_metadata(path_of(name))["format"] == "pudnet-checkpoint-v1"
        PudNet.from_pretrained(name)
