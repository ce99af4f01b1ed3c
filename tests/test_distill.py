"""Amortised refinement: the distillation term pulls the forward pass toward the refined frozen base."""

import json
from dataclasses import replace

import pytest
import torch

from pudnet.cli import USAGE, main
from pudnet.data.episodes import EpisodeStream
from pudnet.model.losses import Distillation, distillation_loss
from pudnet.model.pudnet import PudNet
from pudnet.model.refine import Refinement, refine
from pudnet.train import METRICS, TrainConfig, check_task_pool, train
from test_train import CONFIG, MODEL

FROZEN = replace(MODEL, weight_mode="frozen_base", sketch_support=True, residual_init=0.02)
REFINEMENT = Refinement(3)


@pytest.fixture
def tasks(small_fashion):
    return EpisodeStream(small_fashion, [0, 1, 2], TrainConfig(**CONFIG).spec, seed=5).batch([0, 1])


def stacked(params_per_task: list[dict], net: PudNet) -> list[torch.Tensor]:
    return [torch.stack([p[spec.name] for p in params_per_task]) for spec in net.specs]


def test_the_params_term_is_one_at_the_base_and_zero_at_the_refined_base(tasks):
    torch.manual_seed(0)
    net = PudNet(FROZEN)
    base = net.base_params()
    distillation = Distillation("params", 1.0, REFINEMENT)
    teachers = [refine(net.target, base, tasks.sketch[b], tasks.sketch_labels[b], REFINEMENT) for b in range(2)]
    at_base = stacked([base, base], net)
    assert distillation_loss(net, at_base, tasks, 0, distillation).item() == pytest.approx(1.0, abs=1e-6)
    at_teacher = stacked(teachers, net)
    assert distillation_loss(net, at_teacher, tasks, 1, distillation).item() == pytest.approx(0.0, abs=1e-9)
    swapped = stacked(teachers[::-1], net)  # another task's refined weights explain little of this task's change
    assert distillation_loss(net, swapped, tasks, 0, distillation).item() > 0.05


def test_the_logits_term_is_zero_at_the_teacher_and_positive_elsewhere(tasks):
    torch.manual_seed(0)
    net = PudNet(FROZEN)
    base = net.base_params()
    distillation = Distillation("logits", 1.0, REFINEMENT)
    teacher = refine(net.target, base, tasks.sketch[0], tasks.sketch_labels[0], REFINEMENT)
    assert distillation_loss(net, stacked([teacher, base], net), tasks, 0, distillation).item() == \
        pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(net, stacked([base, base], net), tasks, 0, distillation).item() > 1e-4


def test_distillation_needs_a_frozen_base_and_a_known_mode():
    with pytest.raises(ValueError, match="distill must be one of"):
        TrainConfig(distill="weights")
    with pytest.raises(ValueError, match="frozen_base"):
        check_task_pool(MODEL, TrainConfig(distill="params"))
    check_task_pool(FROZEN, TrainConfig(distill="params"))
    with pytest.raises(ValueError, match="weight > 0"):
        Distillation("params", 0.0, REFINEMENT)
    with pytest.raises(ValueError, match="has no base"):
        PudNet(MODEL).base_params()


def test_the_cli_refuses_distillation_without_a_frozen_base(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--distill", "params"]) == USAGE
    assert "frozen_base" in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("mode", ["params", "logits"])
def test_meta_training_with_distillation_logs_the_term(tmp_path, small_fashion, mode):
    config = TrainConfig(steps=4, distill=mode, distill_steps=2, **{**CONFIG, "log_every": 2})
    train(FROZEN, config, tmp_path, store=small_fashion, progress=False)
    records = [json.loads(line) for line in (tmp_path / METRICS).read_text().splitlines()]
    assert len(records) == 2 and all(r["distill"] > 0 for r in records)
    assert all(r["loss"] > r["metric"] + 0.99 * r["distill"] for r in records)  # the term is in the loss


@pytest.mark.parametrize("mode", ["params", "logits"])
def test_the_hypernetwork_can_fit_the_teacher_through_the_term(tasks, mode):
    torch.manual_seed(0)
    net = PudNet(FROZEN)
    distillation = Distillation(mode, 1.0, Refinement(2))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)

    def term():
        weights = net(tasks.sketch, tasks.sketch_labels)
        return sum(distillation_loss(net, weights, tasks, b, distillation) for b in range(2))

    start = term().item()
    for _ in range(15):
        optimizer.zero_grad()
        term().backward()
        optimizer.step()
    assert term().item() < 0.8 * start
