"""Any nn.Module is a target (Target.from_module, PudNet.for_module); the U-Net denoiser is one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pudnet
from pudnet.model.pudnet import PudNet
from pudnet.targets import ModuleTarget, Target, make_target
from pudnet.targets.unet import UNet


class Unusual(nn.Module):
    """A module nobody wrote for pudnet: conv → GroupNorm → transposed conv → BatchNorm → linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, (3, 5), padding=(1, 2))
        self.norm = nn.GroupNorm(2, 8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = self.bn(self.up(torch.relu(self.norm(self.conv(x)))))
        return self.fc(torch.relu(h).mean((2, 3)))


def test_specs_and_roles_come_from_the_owning_modules():
    target = Target.from_module(Unusual())
    kinds = {s.name: (s.kind, s.fan_in) for s in target.specs()}
    assert kinds == {
        "conv.weight": ("conv", 15), "conv.bias": ("bias", 1),
        "norm.weight": ("norm_weight", 1), "norm.bias": ("norm_bias", 1),
        # a stride-2 2×2 transposed convolution: each output sums in_channels · 4 / 4 inputs
        "up.weight": ("conv_transpose", 8), "up.bias": ("bias", 1),
        "bn.weight": ("bn_weight", 1), "bn.bias": ("bn_bias", 1),
        "fc.weight": ("linear", 4), "fc.bias": ("bias", 1),
    }
    assert target.batchnorm_names() == ["bn"] and target.in_channels == 1


def test_functional_forward_matches_the_module_and_its_statistics_rule():
    torch.manual_seed(0)
    module, x = Unusual(), torch.rand(6, 1, 7, 9)
    target = Target.from_module(module)
    params = {name: p.detach() for name, p in module.named_parameters()}
    out, stats = target.forward(params, x)
    module.train()
    assert torch.allclose(out, module(x), atol=1e-6)  # batch statistics, as a module in training mode
    mean = module.up(torch.relu(module.norm(module.conv(x)))).mean((0, 2, 3))
    assert torch.allclose(stats["bn"][0], mean, atol=1e-6)
    exported = target.to_module(params, stats)
    assert isinstance(exported, Unusual) and not exported.training
    assert torch.allclose(exported(x), target.forward(params, x, stats)[0], atol=1e-6)
    assert torch.allclose(exported(x), out, atol=1e-5)
    assert target.template is not module


def test_a_parameter_of_unknown_role_is_named_or_given_a_role():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.gain = nn.Parameter(torch.ones(2))

        def forward(self, x):
            return self.conv(x) * self.gain[:, None, None]

    with pytest.raises(ValueError, match="'gain' of a Scaled: its role is unknown"):
        Target.from_module(Scaled())
    target = Target.from_module(Scaled(), roles=lambda name, owner: "norm_weight" if name == "gain" else None)
    assert [(s.name, s.kind) for s in target.specs()] == [("gain", "norm_weight"), ("conv.weight", "conv"),
                                                          ("conv.bias", "bias")]


def test_for_module_meta_trains_and_predicts_an_instance_of_the_users_class():
    torch.manual_seed(0)
    net = PudNet.for_module(Unusual(), name="unusual_test", embedding_dim=16, generator_hidden=4, sketch_width=4,
                            sketch_dim=8)
    assert net.head is None and "unusual_test" in pudnet.targets.target_names()
    images = torch.rand(2, 12, 1, 8, 8)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(4):
        weights = net(images)
        loss = sum(net.target.forward(net.params_of(weights, b), images[b])[0].square().mean() for b in range(2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="'unet' is a built-in target"):
        PudNet.for_module(Unusual(), name="unet")
    module = net.eval().predict(images[0])
    assert isinstance(module, Unusual)
    assert module(images[0]).shape == (12, 3) and torch.isfinite(module(images[0])).all()


def test_unet_target_is_the_module_and_keeps_any_image_size():
    target = make_target("unet", in_channels=1, width=4)
    assert isinstance(target, ModuleTarget) and target.feature_dim is None
    assert target.config() == {"name": "unet", "in_channels": 1, "width": 4}
    params = target.random_params(torch.Generator().manual_seed(0))
    for shape in [(3, 1, 28, 28), (2, 1, 13, 30)]:
        x = torch.rand(shape)
        out, stats = target.forward(params, x)
        assert out.shape == x.shape
        assert torch.allclose(target.to_module(params, stats)(x), out, atol=1e-5)
    assert isinstance(target.module(), UNet)


def test_streamed_statistics_of_a_module_target_equal_one_pass():
    target = make_target("unet", in_channels=1, width=4)
    params = target.random_params(torch.Generator().manual_seed(1))
    x = torch.rand(40, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    one_pass = target.dataset_stats(params, x, chunk=64)
    streamed = target.dataset_stats(params, x, chunk=16)
    for name in one_pass:
        for a, b in zip(one_pass[name], streamed[name]):
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name
