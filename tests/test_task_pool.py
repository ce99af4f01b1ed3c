"""The transformed task pool: many distinct virtual classes, pure episodes, no held-out image, training works."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from pudnet.cli import USAGE, main
from pudnet.data.sampler import EpisodeSpec
from pudnet.data.store import ImageStore
from pudnet.data.task_pool import TRANSFORMS, TransformedClassStream, excluded_angle, transform, virtual_class
from pudnet.train import TrainConfig, check_task_pool, holdout_split, task_stream, train
from test_resume import assert_same_files
from test_train import CONFIG, MODEL

BASES = (0, 1, 2, 3, 4, 5)
SPEC = EpisodeSpec(ways=4, sketch=6, support=2, query=3)
METRIC = replace(MODEL, loss="metric")
POOL = dict(CONFIG, task_pool="transformed")


@pytest.fixture(scope="module")
def numbered() -> ImageStore:
    """40 images of each of 6 classes, each carrying its own index in its first two pixels."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (240, 1, 28, 28), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = np.arange(240) // 256, np.arange(240) % 256
    return ImageStore(images, np.repeat(np.arange(6), 40))


def _index_of(images: np.ndarray) -> np.ndarray:
    return images[:, 0, 0, 0].astype(np.int64) * 256 + images[:, 0, 0, 1]


def test_the_pool_holds_more_than_ten_thousand_distinct_classes():
    def described(c):  # coarse enough that near-equal classes count once
        vc = virtual_class(c, BASES, avoid_degrees=90)
        return (vc.bases, vc.mixture, round(vc.blend_weight, 1), round(vc.degrees / 5), vc.flip_h, vc.flip_v,
                round(vc.scale, 1), bool(vc.elastic), vc.shuffle, vc.invert)

    assert TRANSFORMS * len(BASES) >= 10_000
    assert len({described(c) for c in range(20_000)}) >= 10_000


def test_episodes_are_a_pure_function_of_seed_and_index(fashion_train):
    store = fashion_train.of_classes(list(BASES))
    a, b = (TransformedClassStream(store, list(BASES), SPEC, seed=3) for _ in range(2))
    for index in (0, 7, 10**6):
        for x, y in zip(a.images(index), b.images(index)):
            assert np.array_equal(x, y)
    assert not np.array_equal(a.images(0)[0], a.images(1)[0])
    assert not np.array_equal(a.images(0)[0], TransformedClassStream(store, list(BASES), SPEC, seed=4).images(0)[0])
    batch = a.batch([5, 6])
    assert torch.equal(batch.sketch[1], torch.from_numpy(a.images(6)[0]).float() / 255)


def test_images_are_uint8_of_the_store_shape_and_batches_floats_in_range(fashion_train):
    stream = TransformedClassStream(fashion_train.of_classes(list(BASES)), list(BASES), SPEC, seed=0)
    sketch, query, classes = stream.images(2)
    assert sketch.dtype == query.dtype == np.uint8
    assert sketch.shape == (SPEC.ways * SPEC.sketch, 1, 28, 28) and query.shape == (SPEC.ways * SPEC.query, 1, 28, 28)
    assert classes.shape == (SPEC.ways,) and len(set(classes.tolist())) == SPEC.ways
    assert sketch.max() > 100 and sketch.min() == 0
    batch = stream.batch([0, 1, 2])
    assert batch.sketch.shape == (3, SPEC.ways * SPEC.sketch, 1, 28, 28) and batch.query.shape[1] == 12
    assert batch.sketch.dtype == torch.float32 and 0 <= batch.sketch.min() and batch.sketch.max() <= 1


def test_no_held_out_validation_image_is_ever_drawn(numbered):
    config = TrainConfig(**{**POOL, "ways": 4, "validate_every": 1})
    kept, sketch, query = holdout_split(numbered, config.train_classes, config.validation_fraction)
    held = set(_index_of(sketch.images)) | set(_index_of(query.images))
    assert len(held) == 24
    stream = task_stream(kept, config)
    assert isinstance(stream, TransformedClassStream)
    drawn = set()
    for index in range(300):
        episode = stream.episode(index)
        drawn |= set(_index_of(kept.images[episode.picks.ravel()]))
    assert drawn and not drawn & held
    assert len(drawn) == len(kept)  # every kept image is reachable


def test_two_virtual_classes_of_one_base_make_visibly_different_images(fashion_train):
    images = fashion_train.of_classes([0]).images[:64]
    single = [c for c in range(400) if virtual_class(c, BASES).bases == (0,)]
    assert len(single) >= 40
    differences = []
    for a, b in zip(single[0::2], single[1::2]):
        x, y = (transform(images, None, virtual_class(c, BASES)).astype(np.float32) for c in (a, b))
        differences.append(np.abs(x - y).mean())
    assert np.median(differences) > 25 and np.mean(np.asarray(differences) > 8) >= 0.9, differences


def test_most_tasks_share_one_transformation_among_classes_of_distinct_bases(numbered):
    stream = TransformedClassStream(numbered, list(BASES), SPEC, seed=1)
    episodes = [stream.episode(i).classes for i in range(400)]
    shared = [c for c in episodes if len(set(c // len(BASES))) == 1]
    assert 0.65 < len(shared) / len(episodes) < 0.85  # P_SHARED = 0.75
    assert all(len(set(c % len(BASES))) == SPEC.ways for c in shared)
    others = [c for c in episodes if len(set(c // len(BASES))) > 1]
    assert all(len(set(c)) == SPEC.ways for c in others) and len({int(x) for c in others for x in c}) > 300


def test_mixtures_pair_two_different_bases():
    mixtures = [vc for vc in (virtual_class(c, BASES) for c in range(300)) if vc.mixture]
    assert len(mixtures) > 30 and all(len(set(vc.bases)) == 2 for vc in mixtures)
    assert {vc.mixture for vc in mixtures} == {"blend", "tile"}


@pytest.mark.parametrize("avoid", [90.0, 45.0])
def test_no_class_turns_near_the_validation_angle_or_its_mirror_images(avoid):
    angles = [virtual_class(c, BASES, avoid).degrees for c in range(3000)]
    assert not any(excluded_angle(a, avoid) for a in angles)
    turned = [a for a in angles if a != 0.0]
    assert len(turned) > 1000 and max(turned) - min(turned) > 300  # arbitrary angles elsewhere
    assert excluded_angle(avoid + 19, avoid) and excluded_angle(180 - avoid, avoid) and excluded_angle(-avoid, avoid)
    assert not excluded_angle(avoid + 21, avoid) or avoid == 90.0  # 90: −90 ≡ 90 (mod 180), a band of 40°


def test_configs_that_would_train_on_validation_classes_or_a_head_are_refused():
    with pytest.raises(ValueError, match="drop rotated_classes"):
        TrainConfig(task_pool="transformed", rotated_classes=True, validation_degrees=45)
    for degrees in (0.0, 180.0, 10.0):
        with pytest.raises(ValueError, match="upright or upside-down"):
            TrainConfig(task_pool="transformed", validation_degrees=degrees)
    with pytest.raises(ValueError, match="task_pool must be one of"):
        TrainConfig(task_pool="tasks")
    TrainConfig(task_pool="transformed", validation="images", validation_degrees=0.0)  # no rotated validation
    with pytest.raises(ValueError, match="loss='metric'"):
        check_task_pool(MODEL, TrainConfig(task_pool="transformed"))
    check_task_pool(METRIC, TrainConfig(task_pool="transformed"))
    check_task_pool(MODEL, TrainConfig())


@pytest.mark.parametrize("extra, message", [
    ([], "loss='metric'"),
    (["--model", '{"loss": "metric"}', "--rotated-classes", "--validation-degrees", "45"], "drop rotated_classes"),
])
def test_the_cli_refuses_a_transformed_pool_with_the_head_or_rotated_classes(tmp_path, capsys, extra, message):
    assert main(["train", "--out", str(tmp_path / "run"), "--task-pool", "transformed", *extra]) == USAGE
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


def run(folder, steps, store, resume=False, **extra):
    config = TrainConfig(steps=steps, **{**POOL, **extra})
    return train(METRIC, config, folder, resume=resume, store=store, progress=False)


def test_meta_training_on_the_transformed_pool_validates_and_resumes_bit_identically(tmp_path, small_fashion):
    run(tmp_path / "straight", 4, small_fashion)
    run(tmp_path / "resumed", 2, small_fashion)
    run(tmp_path / "resumed", 4, small_fashion, resume=True)
    assert_same_files(tmp_path / "straight", tmp_path / "resumed")
    run(tmp_path / "validated", 1, small_fashion, validate_every=1, validation_groups=2)
    assert (tmp_path / "validated" / "best.safetensors").exists()
