import json

import pytest
import torch

from pudnet.model.config import PudNetConfig
from pudnet.model.pudnet import PudNet
from pudnet.train import (
    BEST, CHECKPOINT, METRICS, TrainConfig, Trainer, TrainingDiverged, Validator, holdout_split,
    parameter_groups, train,
)

MODEL = PudNetConfig(embedding_dim=16, generator_hidden=4, sketch_width=4, sketch_dim=8,
                     target_kwargs={"in_channels": 1, "image_size": 28, "width": 8})
CONFIG = dict(meta_batch=2, ways=3, sketch=6, support=2, query=3, checkpoint_every=2, log_every=1,
              validate_every=0)


def test_train_writes_metrics_and_checkpoints(tmp_path, small_fashion):
    train(MODEL, TrainConfig(steps=3, **CONFIG), tmp_path, store=small_fashion, progress=False)
    records = [json.loads(line) for line in (tmp_path / METRICS).read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(0 <= r["accuracy"] <= 1 and r["loss"] > 0 for r in records)
    assert (tmp_path / CHECKPOINT).exists()


def test_resume_continues_exactly(tmp_path, small_fashion):
    straight = train(MODEL, TrainConfig(steps=4, **CONFIG), tmp_path / "a", store=small_fashion, progress=False)
    train(MODEL, TrainConfig(steps=2, **CONFIG), tmp_path / "b", store=small_fashion, progress=False)
    resumed = train(MODEL, TrainConfig(steps=4, **CONFIG), tmp_path / "b", resume=True, store=small_fashion,
                    progress=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_nan_loss_stops_with_the_step(tmp_path, small_fashion):
    trainer = Trainer(PudNet(MODEL), TrainConfig(steps=3, **CONFIG), tmp_path, small_fashion)
    trainer.train_step()
    with torch.no_grad():
        trainer.net.embed.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="at step 2"):
        trainer.train_step()


def test_missing_training_classes_are_reported(tmp_path, small_fashion):
    store = small_fashion.of_classes([0, 1, 2])
    with pytest.raises(ValueError, match=r"classes \[3, 4, 5\] have no images"):
        train(MODEL, TrainConfig(steps=1, **CONFIG), tmp_path, store=store, progress=False)


@pytest.mark.parametrize("validation", ["rotated-classes", "images"])
def test_validation_uses_held_out_images_and_keeps_the_best(tmp_path, small_fashion, validation):
    config = TrainConfig(steps=2, **{**CONFIG, "validate_every": 1, "validation_groups": 3, "validation": validation})
    train(MODEL, config, tmp_path, store=small_fashion, progress=False)
    records = [json.loads(line) for line in (tmp_path / METRICS).read_text().splitlines()]
    validations = [r for r in records if "val_accuracy" in r]
    assert [r["step"] for r in validations] == [1, 2]
    assert all(0 <= r["val_accuracy"] <= 100 for r in validations)
    extra = PudNet.read_checkpoint(tmp_path / BEST).extra
    assert extra["validation"]["val_accuracy"] == max(r["val_accuracy"] for r in validations)


def test_holdout_split_is_disjoint(small_fashion):
    train_part, sketch, query = holdout_split(small_fashion, [0, 1], 0.1)
    assert len(sketch) == len(query) == 20
    assert len(train_part) == 360
    for part in (train_part, sketch, query):
        assert set(part.classes) == {0, 1}
    # the same images never appear in two parts
    rows = lambda s: {img.tobytes() for img in s.images}  # noqa: E731
    assert not rows(train_part) & rows(sketch) and not rows(sketch) & rows(query)


def test_rotated_classes_enlarge_the_task_pool(tmp_path, small_fashion):
    net = train(MODEL, TrainConfig(steps=1, rotated_classes=True, **CONFIG), tmp_path, store=small_fashion,
                progress=False)
    assert net.config.num_train_classes == 24


def test_rotated_class_validation_scores_novel_classes_of_held_out_images(small_fashion):
    config = TrainConfig(**{**CONFIG, "validate_every": 1})
    _, sketch, query = holdout_split(small_fashion, config.train_classes, 0.1)
    evaluator = Validator(sketch, query, config).evaluator
    assert evaluator.config.classes == [1000 + c for c in config.train_classes]
    task = evaluator.task(0)
    upright = {img.tobytes() for img in sketch.images}
    assert not {img.numpy().tobytes() for img in (task.sketch[0] * 255).round().to(torch.uint8)} & upright


def test_rotated_class_validation_refuses_rotated_training_classes():
    with pytest.raises(ValueError, match="validation='images'"):
        TrainConfig(**{**CONFIG, "validate_every": 1, "rotated_classes": True})


def test_base_learns_at_its_own_rate():
    net = PudNet(PudNetConfig(**{**MODEL.to_dict(), "weight_mode": "residual"}))
    groups = parameter_groups(net, TrainConfig(lr=1e-3, base_lr_scale=0.1, **CONFIG))
    assert [g.get("lr") for g in groups] == [None, pytest.approx(1e-4)]
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in net.base.parameters()}
