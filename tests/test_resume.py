"""Crash-safe training state: one atomic training-state file, cross-checked on resume; stale files removed."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from pudnet.checkpoint import CheckpointError, atomic_save
from pudnet.model.config import PudNetConfig
from pudnet.model.pudnet import PudNet
from pudnet.train import BEST, CHECKPOINT, METRICS, TRAIN_STATE, TrainConfig, Trainer, train
from test_train import CONFIG, MODEL

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak_resume.py"


def run(folder, steps, store, resume=False, model=MODEL):
    return train(model, TrainConfig(steps=steps, **CONFIG), folder, resume=resume, store=store, progress=False)


def contents(path) -> dict[str, torch.Tensor]:
    state = PudNet.read_checkpoint(path)
    return {**state.model, **{f"training/{k}": v for k, v in state.training.items()}}


def assert_same_files(a: Path, b: Path) -> None:
    for name in (TRAIN_STATE, CHECKPOINT):
        found, expected = contents(b / name), contents(a / name)
        assert found.keys() == expected.keys()
        assert all(torch.equal(found[k], expected[k]) for k in found), name


@pytest.fixture(scope="module")
def straight(tmp_path_factory, small_fashion) -> Path:
    folder = tmp_path_factory.mktemp("straight")
    run(folder, 4, small_fashion)
    return folder


def test_resume_is_bit_identical_with_optimizer_and_rng(straight, tmp_path, small_fashion):
    run(tmp_path, 2, small_fashion)
    run(tmp_path, 4, small_fashion, resume=True)
    assert_same_files(straight, tmp_path)
    state = PudNet.read_checkpoint(tmp_path / TRAIN_STATE)
    assert state.extra["step"] == 4 and "rng/torch" in state.training
    assert any(k.startswith("optimizer/") for k in state.training)


def test_a_model_file_left_behind_by_a_kill_between_the_writes_cannot_change_the_resumed_model(
        straight, tmp_path, small_fashion):
    run(tmp_path / "older", 1, small_fashion)
    run(tmp_path / "run", 2, small_fashion)
    # killed between the two writes of step 2: the training state is new, the model file still the step-1 one
    shutil.copy(tmp_path / "older" / CHECKPOINT, tmp_path / "run" / CHECKPOINT)
    run(tmp_path / "run", 4, small_fashion, resume=True)
    assert_same_files(straight, tmp_path / "run")
    assert PudNet.read_checkpoint(tmp_path / "run" / CHECKPOINT).extra["step"] == 4


def test_resume_refuses_missing_incomplete_or_foreign_training_states(tmp_path, small_fashion):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        run(tmp_path, 2, small_fashion, resume=True)
    run(tmp_path, 1, small_fashion)
    with pytest.raises(CheckpointError, match="differs from the one asked for"):
        run(tmp_path, 2, small_fashion, resume=True, model=PudNetConfig(**{**MODEL.to_dict(), "alpha": 0.5}))
    shutil.copy(tmp_path / CHECKPOINT, tmp_path / TRAIN_STATE)  # a model file is no training state
    with pytest.raises(CheckpointError, match="not a complete training state"):
        run(tmp_path, 2, small_fashion, resume=True)
    atomic_save({"0.exp_avg": torch.zeros(3)}, tmp_path / TRAIN_STATE, {"step": "1"})  # the old optimizer-only file
    with pytest.raises(CheckpointError, match="not a PudNet checkpoint"):
        run(tmp_path, 2, small_fashion, resume=True)


def test_stale_temporary_files_of_killed_saves_are_removed_on_start(tmp_path, small_fashion):
    stale = [".checkpoint.safetensors.k1ll3d.tmp", ".train_state.safetensors.abc.tmp", ".metrics.jsonl.x.tmp"]
    kept = [".unrelated.tmp", "notes.tmp"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"partial")
    Trainer(PudNet(MODEL), TrainConfig(steps=1, **CONFIG), tmp_path, small_fashion)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_resume_drops_the_metrics_of_lost_steps_and_cut_lines(tmp_path, small_fashion):
    run(tmp_path, 2, small_fashion)
    with open(tmp_path / METRICS, "a") as log:
        log.write(json.dumps({"step": 3, "loss": 1.0}) + '\n{"step": 4, "lo')  # logged, then killed before saving
    run(tmp_path, 3, small_fashion, resume=True)
    steps = [json.loads(line)["step"] for line in (tmp_path / METRICS).read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_a_fresh_run_drops_what_a_run_killed_before_its_first_save_left(straight, tmp_path, small_fashion):
    # killed during its first save: a metrics record and a best model, no training state to resume from
    (tmp_path / METRICS).write_text(json.dumps({"step": 1, "loss": 9.0}) + '\n{"step": 2, "lo')
    shutil.copy(straight / CHECKPOINT, tmp_path / BEST)
    run(tmp_path, 4, small_fashion)  # started again without --resume
    assert _losses(tmp_path) == _losses(straight) and not (tmp_path / BEST).exists()


def _losses(folder: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (folder / METRICS).read_text().splitlines())]


def test_training_killed_at_random_moments_resumes_bit_identically(tmp_path):
    spec = importlib.util.spec_from_file_location("soak_resume", SOAK)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    result = soak.soak(kills=2, steps=8, seed=1, work=tmp_path)  # one kill plan; the moments still vary
    assert result["kills"] == 2 and result["final_identical"], result
    assert result["identical"] == result["resumed_runs"] >= 1, result
    assert result["corrupt"] == 0 and result["orphaned"] == 0, result


def test_a_fresh_run_refuses_a_folder_that_holds_a_saved_run(tmp_path, small_fashion):
    run(tmp_path, 2, small_fashion)
    before = (tmp_path / TRAIN_STATE).read_bytes()
    with pytest.raises(ValueError, match="already holds a run.*--resume"):
        run(tmp_path, 3, small_fashion)
    assert (tmp_path / TRAIN_STATE).read_bytes() == before
