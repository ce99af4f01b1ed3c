"""Finite or nothing: non-finite checkpoints and predictions are refused, and so are NaN or 0–255 float images."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import pudnet
from pudnet.checkpoint import CheckpointError
from pudnet.cli import main
from pudnet.model.pudnet import PudNet
from pudnet.ops import NonFiniteError
from pudnet.train import TRAIN_STATE, TrainConfig, Trainer, TrainingDiverged
from test_train import CONFIG, MODEL


def poison(net: PudNet, value: float = float("nan")) -> None:
    with torch.no_grad():
        net.embed.weight.fill_(value)


def test_training_refuses_to_save_a_non_finite_state_and_names_the_last_finite_one(tmp_path, small_fashion):
    trainer = Trainer(PudNet(MODEL), TrainConfig(steps=3, **CONFIG), tmp_path, small_fashion)
    trainer.train_step()
    trainer.save()
    saved = (tmp_path / TRAIN_STATE).read_bytes()
    poison(trainer.net, float("inf"))
    with pytest.raises(TrainingDiverged, match=r"'embed.weight' holds NaN or infinite.*last finite state, step 1"):
        trainer.save()
    assert (tmp_path / TRAIN_STATE).read_bytes() == saved


def test_divergence_names_the_step_of_the_last_finite_checkpoint(tmp_path, small_fashion):
    trainer = Trainer(PudNet(MODEL), TrainConfig(steps=3, **CONFIG), tmp_path, small_fashion)
    with pytest.raises(TrainingDiverged, match="no state yet"):
        poison(trainer.net)
        trainer.train_step()
    trainer = Trainer(PudNet(MODEL), TrainConfig(steps=3, **CONFIG), tmp_path, small_fashion)
    trainer.train_step()
    trainer.save()
    poison(trainer.net)
    with pytest.raises(TrainingDiverged, match=r"at step 2; the last finite state, step 1"):
        trainer.train_step()


def test_non_finite_checkpoints_are_neither_written_nor_loaded(tmp_path):
    net = PudNet(MODEL)
    poison(net)
    with pytest.raises(NonFiniteError, match="'embed.weight'"):
        net.save_pretrained(tmp_path / "c.safetensors")
    assert not list(tmp_path.iterdir())
    meta = {"format": "pudnet-checkpoint-v2", "config": json.dumps(net.config.to_dict())}
    save_file(dict(net.state_dict()), tmp_path / "c.safetensors", metadata=meta)  # written by something else
    with pytest.raises(CheckpointError, match="c.safetensors.*'embed.weight' holds NaN"):
        PudNet.from_pretrained(tmp_path / "c.safetensors")


def test_predict_from_a_diverged_checkpoint_fails_and_writes_nothing(tmp_path, capsys, small_fashion, monkeypatch):
    net = PudNet(MODEL)
    with torch.no_grad():
        net.embed.weight.fill_(3e38)  # finite weights whose predictions overflow
    net.save_pretrained(tmp_path / "diverged.safetensors")
    monkeypatch.setattr("pudnet.data.datasets.fashion_mnist", lambda split, root=None: small_fashion)
    out = tmp_path / "weights.safetensors"
    code = main(["predict", "--checkpoint", str(tmp_path / "diverged.safetensors"), "--classes", "6,7",
                 "--out", str(out)])
    assert code == 3
    assert "NaN or infinite" in capsys.readouterr().err and not out.exists()


def test_predicted_parameters_are_checked(small_fashion):
    net = PudNet(MODEL).eval()
    poison(net)
    images = small_fashion.of_classes([6, 7]).tensor()[:16]
    with pytest.raises(NonFiniteError, match="predicted parameters.*tensor '"):
        net.predict_weights(images)
    with pytest.raises(NonFiniteError):
        net.predict_params(images)


@pytest.mark.parametrize("call", ["predict", "predict_weights", "predict_params"])
def test_nan_and_0_255_float_images_are_refused(call, small_fashion):
    net = PudNet(MODEL).eval()
    images = small_fashion.of_classes([6, 7]).tensor()[:16]
    predict = getattr(net, call)
    with_nan = images.clone()
    with_nan[3, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        predict(with_nan)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*\[0, 255\]"):
        predict(images * 255)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        predict(images - 0.5)
    uint8 = torch.from_numpy(np.ascontiguousarray(small_fashion.of_classes([6, 7]).images[:16]))
    assert predict(uint8) is not None  # uint8 images: any value is an intensity
