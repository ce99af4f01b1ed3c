"""pudnet release: a trained checkpoint becomes a shipped one, its prediction policy set, weights unchanged."""

import pytest
import torch

import pudnet
from pudnet.cli import USAGE, main
from pudnet.data.episodes import EpisodeStream
from pudnet.data.sampler import EpisodeSpec
from pudnet.model.losses import meta_batch_losses
from pudnet.report import checkpoint_sha256


def test_release_sets_the_refinement_and_keeps_weights_and_provenance(tmp_path, capsys):
    shipped = pudnet.PudNet.read_checkpoint("fashion-convnet3")
    out = tmp_path / "released.safetensors"
    assert main(["release", str(pudnet.pretrained.path_of("fashion-convnet3")), str(out), "--refine-steps", "0"]) == 0
    released = pudnet.PudNet.read_checkpoint(out)
    assert released.config.refine_steps == 0 and shipped.config.refine_steps == 10
    assert released.config.to_dict() | {"refine_steps": 10, "num_train_classes": 24} == shipped.config.to_dict()
    assert set(shipped.model) - set(released.model) == {"head.weight", "head.bias"}  # training-only
    assert all(torch.equal(v, shipped.model[k]) for k, v in released.model.items())
    assert released.extra["released_from"]["source_sha256"] == checkpoint_sha256("fashion-convnet3")
    assert released.extra["step"] == shipped.extra["step"]
    again = tmp_path / "again.safetensors"
    assert main(["release", str(out), str(again), "--refine-steps", "10"]) == 0
    assert pudnet.PudNet.read_checkpoint(again).config.refinement == shipped.config.refinement
    assert "refinement" in capsys.readouterr().out


def test_release_refuses_a_bad_policy_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "released.safetensors"
    source = str(pudnet.pretrained.path_of("fashion-convnet3"))
    assert main(["release", source, str(out), "--refine-steps", "5000"]) == USAGE
    assert "refine_steps" in capsys.readouterr().err and not out.exists()


def test_a_released_checkpoint_predicts_what_its_source_does_and_trains_only_without_the_head(
        tmp_path, small_fashion):
    out = tmp_path / "released.safetensors"
    assert main(["release", str(pudnet.pretrained.path_of("fashion-convnet3")), str(out), "--refine-steps", "0"]) == 0
    released, source = pudnet.PudNet.from_pretrained(out), pudnet.PudNet.from_pretrained("fashion-convnet3")
    assert released.head is None
    data = small_fashion.of_classes([6, 7, 8, 9])
    support = data.labelled(per_class=5)
    ours = released.predict_weights(*released.labelled_dataset(data, support))
    theirs = source.predict_weights(*source.labelled_dataset(data, support))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    tasks = EpisodeStream(small_fashion, [0, 1, 2, 3], EpisodeSpec(4, 12, 4, 3), seed=0).batch([0])
    with pytest.raises(ValueError, match="auxiliary head.*loss 'metric'"):
        meta_batch_losses(released, tasks, torch.arange(10))


def test_release_keeps_the_learned_step_sizes_and_refuses_to_drop_them(tmp_path, capsys):
    from test_model import tiny

    source = tmp_path / "learned.safetensors"
    tiny(refine_steps=3, learn_refine_lr=True).save_pretrained(source)
    out = tmp_path / "released.safetensors"
    assert main(["release", str(source), str(out), "--refine-steps", "0", "--refine-last", "2"]) == USAGE
    assert "--refine-last 3" in capsys.readouterr().err and not out.exists()
    assert main(["release", str(source), str(out), "--refine-steps", "0"]) == 0
    assert torch.equal(pudnet.PudNet.from_pretrained(out).log_refine_lr,
                       pudnet.PudNet.from_pretrained(source).log_refine_lr)


def test_a_half_precision_release_stores_float16_and_loads_float32_weights(tmp_path):
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    source = str(pudnet.pretrained.path_of("fashion-convnet3"))
    assert main(["release", source, str(full)]) == 0
    assert main(["release", source, str(half), "--half"]) == 0
    assert half.stat().st_size < 0.55 * full.stat().st_size
    reference, loaded = pudnet.PudNet.read_checkpoint(full).model, pudnet.PudNet.read_checkpoint(half).model
    for name, value in reference.items():
        assert loaded[name].dtype == value.dtype
        if value.is_floating_point():
            assert torch.equal(loaded[name], value.half().float()), name
    assert pudnet.PudNet.from_pretrained(half) is not None


def test_a_half_precision_save_refuses_a_value_float16_cannot_hold(tmp_path):
    net = pudnet.PudNet()
    with torch.no_grad():
        net.log_tau.fill_(1e5)
    with pytest.raises(pudnet.ops.NonFiniteError, match="log_tau"):
        net.save_pretrained(tmp_path / "x.safetensors", half=True)
    assert not (tmp_path / "x.safetensors").exists()
