import json

import pytest
import torch

from pudnet.model.pudnet import PudNetConfig
from pudnet.train import CHECKPOINT, METRICS, TrainConfig, Trainer, TrainingDiverged, train

MODEL = PudNetConfig(embedding_dim=16, generator_hidden=4, sketch_width=4, sketch_dim=8,
                     target_kwargs={"in_channels": 1, "image_size": 28, "width": 8})
CONFIG = dict(meta_batch=2, ways=3, sketch=6, support=2, query=3, checkpoint_every=2, log_every=1)


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
    from pudnet.model.pudnet import PudNet

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
