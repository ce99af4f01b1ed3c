import math

import pytest
import torch

from pudnet.baselines.common import params_from_module
from pudnet.data.episodes import EpisodeStream
from pudnet.data.sampler import EpisodeSpec
from pudnet.evaluate import refined_baseline
from pudnet.model.refine import Refinement, refine, refinement_loss
from pudnet.targets import make_target
from pudnet.targets.base import Target

from test_model import tiny

SPEC = EpisodeSpec(ways=3, sketch=20, support=4, query=5)


@pytest.fixture
def group(small_fashion):
    return EpisodeStream(small_fashion, [6, 7, 8], SPEC, seed=3).batch([0])


@pytest.fixture
def target():
    return make_target("convnet3", in_channels=1, image_size=28, width=8)


def loss_of(target, params, images, labels, refinement):
    features, _ = target.forward(params, images)
    return refinement_loss(features, labels, refinement.tau, refinement.pseudo).item()


def test_frozen_prefix_then_rest_equals_the_whole_forward(target, group):
    params = target.random_params(torch.Generator().manual_seed(1))
    images = group.sketch[0]
    whole, whole_stats = target.forward(params, images)
    for changing in ({"conv3.weight"}, {"bn2.bias", "conv3.weight"}, {"conv1.weight"}):
        prefix, rest = target.frozen_prefix(params, images, changing)
        features, stats = rest(params, prefix)
        torch.testing.assert_close(features, whole)
        for name, (mean, var) in stats.items():
            torch.testing.assert_close(mean, whole_stats[name][0])
            torch.testing.assert_close(var, whole_stats[name][1])


def resnet18():
    return make_target("resnet18", in_channels=1, image_size=28)


def test_a_resnets_prefix_then_rest_equals_the_whole_forward(group):
    target = resnet18()
    params = target.random_params(torch.Generator().manual_seed(1))
    images = group.sketch[0][:12]
    whole, whole_stats = target.forward(params, images)
    prefix, rest = target.frozen_prefix(params, images, {"layer4.1.conv2.weight", "layer4.1.bn2.bias"})
    assert prefix.shape[1:] == (512, 4, 4)  # the input of the last convolution: the work is done ahead
    for _ in range(2):  # the prefix serves repeated passes unchanged
        features, stats = rest(params, prefix)
        torch.testing.assert_close(features, whole, rtol=1e-4, atol=1e-5)
    assert set(stats) == {"layer4.1.bn2"}
    torch.testing.assert_close(stats["layer4.1.bn2"][1], whole_stats["layer4.1.bn2"][1], rtol=1e-4, atol=1e-5)
    _, rest = target.frozen_prefix(params, images, {"layer4.1.conv1.weight"})  # not the tail: no work ahead
    torch.testing.assert_close(rest(params, images)[0], whole)


@pytest.mark.parametrize("which", ["convnet3", "resnet18"])
def test_the_unrolled_refinement_through_a_kept_prefix_has_the_gradients_of_whole_forwards(
        which, target, group, monkeypatch):
    target = target if which == "convnet3" else resnet18()
    labels = group.sketch_labels[0]
    keep = torch.cat([torch.nonzero(labels >= 0)[:, 0], torch.nonzero(labels < 0)[:4, 0]])  # 3 classes × 4 + 4
    images, labels = group.sketch[0][keep], labels[keep]
    refinement = Refinement(2)

    def outer_gradients():
        params = {k: v.requires_grad_() for k, v in target.random_params(torch.Generator().manual_seed(2)).items()}
        unrolled = refine(target, params, images, labels, refinement, differentiable=True)
        features, _ = target.forward(unrolled, images)
        loss = refinement_loss(features, labels, 10.0, 0.0)
        return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))

    kept = outer_gradients()
    monkeypatch.setattr(type(target), "frozen_prefix", Target.frozen_prefix)  # whole forwards
    whole = outer_gradients()
    for name, grad in whole.items():
        torch.testing.assert_close(kept[name], grad, rtol=1e-3, atol=1e-6, msg=name)
    first = next(iter(whole))
    assert whole[first].abs().max() > 0  # the first layer gets its gradient through the steps


def test_refinement_moves_only_the_last_tensors_and_lowers_its_loss(target, group):
    params = target.random_params(torch.Generator().manual_seed(1))
    images, labels = group.sketch[0], group.sketch_labels[0]
    refinement = Refinement(steps=5, lr=0.2, last=3)
    refined = refine(target, params, images, labels, refinement)
    changed = [name for name in params if not torch.equal(params[name], refined[name])]
    assert changed == ["conv3.weight", "bn3.weight", "bn3.bias"]
    assert loss_of(target, refined, images, labels, refinement) < loss_of(target, params, images, labels, refinement)
    again = refine(target, params, images, labels, refinement)
    assert all(torch.equal(refined[name], again[name]) for name in params)


def test_refinement_rejects_missing_or_mismatched_labels(target, group):
    params = target.random_params()
    images = group.sketch[0]
    with pytest.raises(ValueError, match="one label per image"):
        refine(target, params, images, group.sketch_labels[0][:-1], Refinement(2))
    with pytest.raises(ValueError, match="labelled images"):
        refine(target, params, images, torch.full((len(images),), -1), Refinement(2))
    missing_class = group.sketch_labels[0].clone()
    missing_class[missing_class == 1] = -1
    with pytest.raises(ValueError, match="each class present"):
        refine(target, params, images, missing_class, Refinement(2))
    with pytest.raises(ValueError, match="steps ≥ 0"):
        Refinement(steps=-1)


def test_a_refining_pudnet_needs_labels_refines_its_prediction_and_keeps_it_in_checkpoints(
        small_fashion, group, tmp_path):
    net = tiny(refine_steps=3).eval()
    assert net.config.uses_labels and not net.config.sketch_support
    images, labels = group.sketch[0], group.sketch_labels[0]
    with pytest.raises(ValueError, match="labels"):
        net.predict_params(images)
    refined, _ = net.predict_params(images, labels)
    plain = net.predict_weights(images, labels)
    assert not torch.equal(refined["conv3.weight"], plain["conv3.weight"])
    assert torch.equal(refined["conv2.weight"], plain["conv2.weight"])
    data = small_fashion.of_classes([6, 7, 8])
    with pytest.raises(ValueError, match="labelled samples"):
        net.predict(data)
    module = net.predict(data, support=data.labelled(per_class=4))
    assert module(data.tensor()[:5]).shape == (5, net.target.feature_dim)
    net.save_pretrained(tmp_path / "refining.safetensors")
    loaded = type(net).from_pretrained(tmp_path / "refining.safetensors")
    assert loaded.config.refinement == net.config.refinement


def test_refined_baseline_refines_the_baselines_parameters_per_group(target, group):
    fixed = params_from_module(target.module(), target)
    make = refined_baseline(lambda tasks: fixed, target, Refinement(steps=2))
    refined = make(group)
    assert not torch.equal(refined["conv3.weight"], fixed["conv3.weight"])
    assert torch.equal(refined["conv1.weight"], fixed["conv1.weight"])


def test_the_differentiable_refinement_equals_the_plain_one_and_passes_gradients_back(target, group):
    torch.manual_seed(0)
    params = {k: v.requires_grad_() for k, v in target.random_params().items()}
    refinement = Refinement(3)
    images, labels = group.sketch[0], group.sketch_labels[0]
    plain = refine(target, {k: v.detach() for k, v in params.items()}, images, labels, refinement)
    unrolled = refine(target, params, images, labels, refinement, differentiable=True)
    for name in plain:
        torch.testing.assert_close(unrolled[name].detach(), plain[name], rtol=1e-4, atol=1e-5)
    features, _ = target.forward(unrolled, images)
    grads = torch.autograd.grad(features.pow(2).sum(), [params["conv1.weight"], params["conv3.weight"]])
    assert all(g.abs().max() > 0 for g in grads)  # the first layer through the unrolled steps too


def test_step_sizes_per_tensor_replace_the_learning_rate_and_learn_through_the_unrolled_steps(target, group):
    params = target.random_params(torch.Generator().manual_seed(1))
    images, labels = group.sketch[0], group.sketch_labels[0]
    refinement = Refinement(steps=2, lr=0.2, last=3)
    same = refine(target, params, images, labels, refinement, step_sizes=torch.full((3,), 0.2))
    default = refine(target, params, images, labels, refinement)
    assert all(torch.equal(same[name], default[name]) for name in params)
    only_bias = refine(target, params, images, labels, refinement, step_sizes=torch.tensor([0.0, 0.0, 0.2]))
    assert torch.equal(only_bias["conv3.weight"], params["conv3.weight"])
    assert not torch.equal(only_bias["bn3.bias"], params["bn3.bias"])
    with pytest.raises(ValueError, match="one step size per refined tensor"):
        refine(target, params, images, labels, refinement, step_sizes=torch.ones(2))
    log_rates = torch.full((3,), math.log(0.2), requires_grad=True)
    params = {name: value.requires_grad_() for name, value in params.items()}  # as a hypernetwork's output
    unrolled = refine(target, params, images, labels, refinement, differentiable=True, step_sizes=log_rates.exp())
    features, _ = target.forward(unrolled, images)
    (grad,) = torch.autograd.grad(refinement_loss(features, labels, 10.0, 1.0), [log_rates])
    assert (grad != 0).all()


def test_a_pudnet_with_learned_step_sizes_refines_at_them_and_keeps_them_in_checkpoints(group, tmp_path):
    net = tiny(refine_steps=2, learn_refine_lr=True).eval()
    torch.testing.assert_close(net.refine_step_sizes(), torch.full((3,), 0.2))
    assert tiny(refine_steps=2).refine_step_sizes() is None
    images, labels = group.sketch[0], group.sketch_labels[0]
    before, _ = net.predict_params(images, labels)
    with torch.no_grad():
        net.log_refine_lr[0] = -30.0  # conv3.weight no longer moves
    after, _ = net.predict_params(images, labels)
    assert torch.equal(after["conv3.weight"], net.predict_weights(images, labels)["conv3.weight"])
    assert not torch.equal(before["conv3.weight"], after["conv3.weight"])
    net.save_pretrained(tmp_path / "rates.safetensors")
    loaded = type(net).from_pretrained(tmp_path / "rates.safetensors")
    assert torch.equal(loaded.refine_step_sizes(), net.refine_step_sizes())
