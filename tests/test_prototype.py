"""The class-prototype update of the last convolution: starts at zero, reads the labelled data, ignores class
order, trains, and round-trips through a checkpoint."""

from dataclasses import replace

import pytest
import torch

from pudnet.data.episodes import EpisodeStream
from pudnet.data.sampler import EpisodeSpec
from pudnet.model.config import PudNetConfig
from pudnet.model.pudnet import PudNet
from test_train import MODEL

UPDATING = replace(MODEL, weight_mode="frozen_base", sketch_support=True, prototype_update=True)


@pytest.fixture
def tasks(small_fashion):
    return EpisodeStream(small_fashion, [0, 1, 2, 3], EpisodeSpec(4, 12, 4, 3), seed=2).batch([0, 1])


def nudged(net: PudNet) -> PudNet:
    torch.manual_seed(1)
    with torch.no_grad():
        net.prototype.out.weight.normal_(0, 0.3)
    return net


def update_of(net, tasks, labels=None):
    labels = tasks.sketch_labels if labels is None else labels
    return net.prototype(net.base_params(), tasks.sketch, labels)


def test_a_fresh_update_is_zero_and_targets_the_last_convolution(tasks):
    torch.manual_seed(0)
    net = PudNet(UPDATING)
    assert net.prototype.name == "conv3.weight"
    assert torch.equal(update_of(net, tasks), torch.zeros(2, *net.base.conv3__weight.shape))
    assert net.config.uses_labels


def test_the_update_reads_the_data_and_ignores_class_order(tasks):
    torch.manual_seed(0)
    net = nudged(PudNet(UPDATING))
    update = update_of(net, tasks)
    assert update.abs().max() > 0
    assert (update[0] - update[1]).norm() > 0.05 * update[0].norm()  # two datasets, two updates
    labels = tasks.sketch_labels.clone()
    known = labels >= 0
    labels[known] = (labels[known] + 1) % 4  # the same classes under other indices
    assert torch.allclose(update_of(net, tasks, labels), update, atol=1e-6)


def test_the_update_trains_and_survives_a_checkpoint(tasks, tmp_path):
    torch.manual_seed(0)
    net = nudged(PudNet(UPDATING))
    weights = net(tasks.sketch, tasks.sketch_labels)
    weights[6].pow(2).sum().backward()
    assert net.prototype.hidden.weight.grad.abs().max() > 0 and net.prototype.gain.grad is not None
    net.save_pretrained(tmp_path / "p.safetensors")
    loaded = PudNet.from_pretrained(tmp_path / "p.safetensors")
    assert torch.equal(update_of(loaded, tasks), update_of(net, tasks).detach())


def test_the_update_needs_a_base_and_labels(tasks):
    with pytest.raises(ValueError, match="needs weight_mode"):
        PudNetConfig(prototype_update=True)
    with pytest.raises(ValueError, match="needs labelled samples"):
        PudNet(replace(UPDATING, sketch_support=False))(tasks.sketch)
