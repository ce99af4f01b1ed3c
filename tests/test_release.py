"""pudnet release: a trained checkpoint becomes a shipped one, its prediction policy set, weights unchanged."""

import torch

import pudnet
from pudnet.cli import USAGE, main
from pudnet.report import checkpoint_sha256


def test_release_sets_the_refinement_and_keeps_weights_and_provenance(tmp_path, capsys):
    shipped = pudnet.PudNet.read_checkpoint("fashion-convnet3")
    out = tmp_path / "released.safetensors"
    assert main(["release", str(pudnet.pretrained.path_of("fashion-convnet3")), str(out), "--refine-steps", "0"]) == 0
    released = pudnet.PudNet.read_checkpoint(out)
    assert released.config.refine_steps == 0 and shipped.config.refine_steps == 10
    assert released.config.to_dict() | {"refine_steps": 10} == shipped.config.to_dict()
    assert all(torch.equal(released.model[k], v) for k, v in shipped.model.items())
    assert released.extra["released_from"]["source_sha256"] == checkpoint_sha256("fashion-convnet3")
    assert released.extra["step"] == shipped.extra["step"]
    again = tmp_path / "again.safetensors"
    assert main(["release", str(out), str(again), "--refine-steps", "10"]) == 0
    assert pudnet.PudNet.read_checkpoint(again).config == shipped.config
    assert "refinement" in capsys.readouterr().out


def test_release_refuses_a_bad_policy_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "released.safetensors"
    source = str(pudnet.pretrained.path_of("fashion-convnet3"))
    assert main(["release", source, str(out), "--refine-steps", "5000"]) == USAGE
    assert "refine_steps" in capsys.readouterr().err and not out.exists()
