"""Meta-training on 2 CPU processes under torchrun (gloo) equals one process with the same global meta-batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pudnet.distributed import World
from pudnet.model.pudnet import PudNet
from pudnet.train import BEST, CHECKPOINT, METRICS, train

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import CONFIG, MODEL  # noqa: E402


def run_two_ranks(out: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(Path(__file__).parent / "ddp_worker.py"), str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_train_the_same_model_as_one(tmp_path, small_fashion):
    run_two_ranks(tmp_path / "ddp")
    single = train(MODEL, CONFIG, tmp_path / "single", store=small_fashion, progress=False)
    state = PudNet.read_checkpoint(tmp_path / "ddp" / CHECKPOINT)
    together, extra = PudNet.from_checkpoint(state), state.extra
    assert extra["step"] == CONFIG.steps and extra["world_size"] == 2
    for (name, a), b in zip(single.state_dict().items(), together.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    # rank 0 alone wrote the metrics (one record per step, plus the validations at steps 2 and 3)
    records = [json.loads(line) for line in (tmp_path / "ddp" / METRICS).read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert [r["step"] for r in records if "val_accuracy" in r] == [2, 3]
    assert (tmp_path / "ddp" / BEST).exists()
    logged = [json.loads(line) for line in (tmp_path / "single" / METRICS).read_text().splitlines()]
    assert records[0]["loss"] == pytest.approx(logged[0]["loss"], rel=1e-5)  # the loss is the global mean


def test_ranks_draw_disjoint_slices_of_each_steps_episodes():
    from types import SimpleNamespace

    from pudnet.train import Trainer

    def indices(rank: int, step: int) -> list[int]:
        world = World(rank=rank, size=2)
        fake = SimpleNamespace(step=step, config=SimpleNamespace(meta_batch=4), world=world, local_batch=2)
        return Trainer.episode_indices(fake)

    assert [indices(0, 3), indices(1, 3)] == [[12, 13], [14, 15]]


def test_meta_batch_must_split_evenly():
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        World(rank=0, size=3).share(4)
