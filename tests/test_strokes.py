"""Synthetic stroke classes: pure functions of their ids, classes that differ, images that vary within one,
and their place in the transformed task pool."""

import json
from dataclasses import replace

import numpy as np
import pytest

from pudnet.data.sampler import EpisodeSpec, SplitMix64
from pudnet.data.strokes import MEMBERS, STROKE_CLASSES, VALIDATION_UNIVERSE, render, stroke_class, stroke_store
from pudnet.data.task_pool import TransformedClassStream
from pudnet.model.pudnet import PudNet
from pudnet.train import TrainConfig, Validator, holdout_split, train
from test_train import CONFIG, MODEL

SPEC = EpisodeSpec(ways=4, sketch=6, support=2, query=3)
BASES = [0, 1, 2, 3, 4, 5]


def drawn(class_id: int, count: int = 12, index: int = 0) -> np.ndarray:
    return render(stroke_class(class_id), count, SplitMix64(1, index)).astype(np.float32)


def test_a_class_and_its_images_are_pure_functions_of_the_ids():
    assert np.array_equal(stroke_class(17).control, stroke_class(17).control)
    images = render(stroke_class(17), 5, SplitMix64(1, 2))
    assert images.dtype == np.uint8 and images.shape == (5, 1, 28, 28)
    assert np.array_equal(images, render(stroke_class(17), 5, SplitMix64(1, 2)))
    assert render(stroke_class(17), 3, SplitMix64(1, 2), size=32).shape == (3, 1, 32, 32)
    with pytest.raises(ValueError, match="stroke class ids"):
        stroke_class(STROKE_CLASSES)


def test_strokes_are_light_on_dark_and_images_of_a_class_closer_than_images_of_two():
    a, b = drawn(3, 24), drawn(3 + 5 * MEMBERS, 24)
    assert a.max() == 255 and np.median(a) == 0 and 0.05 < (a > 128).mean() < 0.4  # ink covers a part
    within = np.abs(a[:12].mean(0) - a[12:].mean(0)).mean()  # mean images: the jitter averages out
    between = np.abs(a[:12].mean(0) - b[:12].mean(0)).mean()
    assert within < between, (within, between)
    assert not np.array_equal(a[0], a[1])  # each image drawn afresh


def test_classes_of_a_family_share_its_strokes_moved_a_little():
    family = [stroke_class(MEMBERS * 7 + m).control for m in range(4)]
    assert all(c.shape == family[0].shape for c in family)
    spread = np.mean([np.abs(c - family[0]).mean() for c in family[1:]])
    assert 0.02 < spread < 0.2 and not np.array_equal(family[0], family[1])


def test_the_pool_mixes_in_the_asked_fraction_of_stroke_tasks(fashion_train):
    store = fashion_train.of_classes(BASES)
    stream = TransformedClassStream(store, BASES, SPEC, seed=2, stroke_tasks=0.5)
    episodes = [stream.episode(i) for i in range(200)]
    strokes = [e for e in episodes if e.strokes]
    assert 0.38 < len(strokes) / len(episodes) < 0.62
    assert all((e.classes >= stream.pool_classes).all() and len(set(e.classes)) == SPEC.ways for e in strokes)
    assert all((e.classes < stream.pool_classes).all() for e in episodes if not e.strokes)
    index = next(i for i, e in enumerate(episodes) if e.strokes)
    sketch, query, _ = stream.images(index)
    assert sketch.shape == (SPEC.ways * SPEC.sketch, 1, 28, 28) and query.shape[0] == SPEC.ways * SPEC.query
    assert np.array_equal(sketch, stream.images(index)[0])
    plain = TransformedClassStream(store, BASES, SPEC, seed=2)  # no stroke tasks: the pool as before
    assert not any(plain.episode(i).strokes for i in range(50))


def test_stroke_tasks_outside_the_transformed_pool_or_outside_zero_one_are_refused(fashion_train):
    with pytest.raises(ValueError, match="task_pool='transformed'"):
        TrainConfig(stroke_tasks=0.5)
    with pytest.raises(ValueError, match="stroke_tasks"):
        TrainConfig(task_pool="transformed", validation_degrees=45, stroke_tasks=1.5)
    with pytest.raises(ValueError, match="fraction"):
        TransformedClassStream(fashion_train.of_classes(BASES), BASES, SPEC, seed=0, stroke_tasks=-0.1)


def test_meta_training_through_the_refinement_on_stroke_tasks_learns_the_step_sizes_and_logs_the_forward_loss(tmp_path, small_fashion):
    model = replace(MODEL, loss="metric", refine_steps=1, learn_refine_lr=True)
    config = TrainConfig(steps=2, **{**CONFIG, "task_pool": "transformed", "validation_degrees": 45,
                                     "stroke_tasks": 0.5, "unroll_steps": 1, "lr": 0.01, "forward_weight": 0.5})
    net = train(model, config, tmp_path, store=small_fashion, progress=False)
    assert not np.allclose(net.refine_step_sizes().detach().numpy(), 0.2)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(r["forward"] > 0 for r in records)  # the forward pass's own loss, logged beside the refined one
    with pytest.raises(ValueError, match="needs unroll_steps"):
        TrainConfig(forward_weight=1.0)


def test_the_stroke_validation_scores_held_out_classes_of_another_universe(small_fashion):
    store = stroke_store([0, 1, 70], 4, seed=1)
    assert store.images.shape == (12, 1, 28, 28) and store.classes == [0, 1, 2]
    assert not np.array_equal(stroke_class(0, VALIDATION_UNIVERSE).control, stroke_class(0).control)
    config = TrainConfig(validation="strokes", validate_every=1, validation_groups=2, seed=0)
    _, sketch, query = holdout_split(small_fashion, config.train_classes, config.validation_fraction)
    record = Validator(sketch, query, config)(PudNet(MODEL).eval())
    assert 0.0 <= record["val_accuracy"] <= 100.0 and np.isfinite(record["val_own_minus_foreign"])
