"""Targets: specs match the exported modules, functional forward == exported module, gradients flow."""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from torch.func import functional_call

from pudnet.targets import make_target, target_names
from pudnet.targets.base import Target
from pudnet.targets.resnet import adapted_resnet

ALL = ["convnet3", "resnet18", "resnet34"]
# relative to the features' scale: the functional forward folds BatchNorm into convolutions and pools before
# the affine map, the module does not; on ResNet-34 both are ~1e-5 of a float64 run away, in float32
TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: the machine's two cores are shared, and spinning OpenMP workers slow everyone."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.lru_cache(maxsize=None)
def _cached_params(name: str, in_channels: int, seed: int) -> dict[str, torch.Tensor]:
    target = make_target(name, in_channels=in_channels)
    g = torch.Generator().manual_seed(seed)
    params = target.random_params(g)
    for spec in target.specs():
        if spec.kind == "bn_weight":
            params[spec.name] = 1.0 + 0.2 * torch.randn(spec.shape, generator=g)
        elif spec.kind == "bn_bias":
            params[spec.name] = 0.1 * torch.randn(spec.shape, generator=g)
    return params


def _params(target: Target, seed: int = 0, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    """Random weights with non-trivial BatchNorm affine parameters (random_params has ones/zeros).

    Cached per (target, channels, seed): random draws for ResNet-34's 21 M weights are a large part of
    this file's run time. Fresh leaf tensors are returned when gradients are wanted.
    """
    params = _cached_params(target.name, target.in_channels, seed)
    if requires_grad:
        return {k: v.clone().requires_grad_(True) for k, v in params.items()}
    return dict(params)


def _images(n: int, c: int, size: int, seed: int) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _meta_module(target: Target) -> torch.nn.Module:
    """The target's module without the cost of random init (names and shapes only)."""
    with torch.device("meta"):
        return target.module()


def _state_params(module: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """State-dict entries that are parameters (no running statistics / num_batches_tracked)."""
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items() if not k.endswith(skip)]


def test_registry():
    assert set(ALL) <= set(target_names())
    with pytest.raises(ValueError, match="unknown target"):
        make_target("resnet50")
    t = make_target("resnet18", in_channels=3, image_size=32)
    assert (t.name, t.in_channels, t.image_size, t.feature_dim) == ("resnet18", 3, 32, 512)
    cfg = t.config()
    again = make_target(cfg["name"], **{k: v for k, v in cfg.items() if k != "name"})
    assert again.config() == cfg and [s for s in again.specs()] == t.specs()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_specs_match_module_state_dict(name, in_channels):
    target = make_target(name, in_channels=in_channels)
    specs = target.specs()
    assert [(s.name, s.shape) for s in specs] == _state_params(_meta_module(target))
    assert len({s.name for s in specs}) == len(specs)
    for s in specs:
        assert s.kind in ("conv", "bn_weight", "bn_bias")
        assert (s.kind == "conv") == (len(s.shape) == 4)
    assert not any(s.name.startswith("fc.") for s in specs)


def test_resnet_spec_layout():
    specs = make_target("resnet18").specs()
    names = [s.name for s in specs]
    assert names[:6] == [
        "conv1.weight", "bn1.weight", "bn1.bias",
        "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
    ]
    assert "layer1.0.downsample.0.weight" not in names
    for stage, planes in [(2, 128), (3, 256), (4, 512)]:
        i = names.index(f"layer{stage}.0.downsample.0.weight")
        assert specs[i].shape == (planes, planes // 2, 1, 1)
        assert names[i + 1 : i + 3] == [f"layer{stage}.0.downsample.1.weight", f"layer{stage}.0.downsample.1.bias"]
    assert specs[0].shape == (64, 1, 3, 3)
    # parameter counts: torchvision's ResNet minus fc, with the 3x3 stem
    n18 = sum(s.numel for s in specs)
    n34 = sum(s.numel for s in make_target("resnet34").specs())
    with torch.device("meta"):
        assert n18 == sum(p.numel() for p in adapted_resnet(18, 1).parameters()) == 11_167_680
        assert n34 == sum(p.numel() for p in adapted_resnet(34, 1).parameters()) == 21_275_840


@pytest.mark.parametrize(
    "name,in_channels,size",
    [
        ("convnet3", 1, 28),
        ("convnet3", 3, 32),
        ("resnet18", 1, 28),
        ("resnet18", 3, 28),
        ("resnet18", 1, 32),
        ("resnet18", 3, 32),
        ("resnet34", 3, 32),
    ],
)
def test_exported_module_eval_matches_forward(name, in_channels, size):
    target = make_target(name, in_channels=in_channels, image_size=size)
    params = _params(target)
    with torch.no_grad():
        # statistics from the dataset the weights are for; the query batch is another one
        _, stats = target.forward(params, _images(4, in_channels, size, seed=1), None)
        assert set(stats) == {s.name[: -len(".weight")] for s in target.specs() if s.kind == "bn_weight"}
        query = _images(2, in_channels, size, seed=2)
        feats, used = target.forward(params, query, stats)
        assert used is stats
        assert feats.shape == (2, target.feature_dim)
        module = target.to_module(params, stats)
        assert not module.training
        out = module(query)
    assert (out - feats).abs().max().item() <= TOL * feats.abs().max().item()
    # stats given: each sample is processed independently of the rest of the batch (no query leakage;
    # a leak would change features by O(1), float32 conv algorithms differ by batch size at ~1e-5)
    with torch.no_grad():
        single, _ = target.forward(params, query[:1], stats)
    assert (single - feats[:1]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_resnet_is_torchvision_and_state_dict_loads(name):
    depth = int(name[len("resnet"):])
    target = make_target(name, in_channels=3, image_size=32)
    params = _params(target)
    x = _images(4, 3, 32, seed=4)
    with torch.no_grad():
        _, stats = target.forward(params, x, None)
        module = target.to_module(params, stats)
    assert isinstance(module, torchvision.models.ResNet)
    assert isinstance(module.fc, torch.nn.Identity) and isinstance(module.maxpool, torch.nn.Identity)
    assert module.conv1.stride == (1, 1) and module.conv1.kernel_size == (3, 3) and module.conv1.bias is None
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in module.state_dict().values()
               if p.is_floating_point())
    assert module.conv1.weight.data_ptr() != params["conv1.weight"].data_ptr()  # a copy, not a view
    # the saved state dict loads strictly into a fresh adapted torchvision ResNet and gives the same output
    fresh = adapted_resnet(depth, in_channels=3)
    fresh.load_state_dict(module.state_dict(), strict=True)
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), module(x))


@pytest.mark.parametrize("name,in_channels,size", [("convnet3", 1, 28), ("resnet18", 1, 28), ("resnet34", 3, 32)])
def test_forward_without_stats_matches_train_mode(name, in_channels, size):
    target = make_target(name, in_channels=in_channels, image_size=size)
    params = _params(target)
    x = _images(4, in_channels, size, seed=6)
    module = target.module()
    module.load_state_dict(params, strict=False)
    module.train()
    with torch.no_grad():
        feats, stats = target.forward(params, x, None)
        out = module(x)
    assert (out - feats).abs().max().item() <= TOL * feats.abs().max().item()
    # the statistics returned are the batch's: biased variance, as BatchNorm normalises with
    mean, var = stats["bn1"]
    h = torch.nn.functional.conv2d(x, params["conv1.weight"], padding=1)
    assert torch.allclose(mean, h.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(var, h.var((0, 2, 3), unbiased=False), atol=1e-6)


@pytest.mark.parametrize("name,in_channels,size", [("convnet3", 1, 28), ("convnet3", 3, 30), ("resnet18", 1, 28),
                                                   ("resnet18", 3, 32)])
def test_meta_training_gradients_match_the_module(name, in_channels, size):
    """Sketch pass with batch statistics (gradients through them), query pass with those statistics:
    statistics, features and gradients equal the exported module's (train mode, then eval mode), in float64
    so that only the algebra is compared. BatchNorm weights of both signs (the pooled ConvNet moves their sign
    into the convolution); size 30 has pooling drop rows that the statistics still count."""
    target = make_target(name, in_channels=in_channels, image_size=size)
    params = _with_negative_bn_weights(target, {k: v.double() for k, v in _params(target, seed=3).items()})
    sketch, query = (_images(n, in_channels, size, seed=s).double() for n, s in ((6, 16), (3, 17)))
    sketch[:, :, : size // 4] = 0.0  # blank rows, like the background of real images

    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    features, stats = target.forward(leaves, sketch)
    query_features, _ = target.forward(leaves, query, stats)
    _meta_loss(features, query_features).backward()

    module_leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    module_features, module_query, module_stats = _module_meta_pass(target, module_leaves, sketch, query, stats)
    _meta_loss(module_features, module_query).backward()

    assert set(stats) == set(module_stats)
    for bn, (mean, var) in module_stats.items():
        torch.testing.assert_close(stats[bn][0].double(), mean, rtol=1e-5, atol=1e-6, msg=bn)
        torch.testing.assert_close(stats[bn][1].double(), var, rtol=1e-5, atol=1e-6, msg=bn)
    torch.testing.assert_close(features, module_features, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(query_features, module_query, rtol=1e-9, atol=1e-9)
    for key, leaf in leaves.items():
        torch.testing.assert_close(leaf.grad, module_leaves[key].grad, rtol=1e-8, atol=1e-10, msg=key)


def _with_negative_bn_weights(target: Target, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``params`` with the sign of about 30% of every BatchNorm's weights flipped."""
    gen = torch.Generator().manual_seed(4)
    flipped = dict(params)
    for spec in target.specs():
        if spec.kind == "bn_weight":
            flip = torch.rand(spec.shape, generator=gen) < 0.3
            flipped[spec.name] = torch.where(flip, -params[spec.name], params[spec.name])
    return flipped


def _meta_loss(features: torch.Tensor, query_features: torch.Tensor) -> torch.Tensor:
    projection = torch.linspace(-1, 1, features.shape[1], dtype=features.dtype)
    return (features @ projection).square().mean() + (query_features @ projection).sin().mean()


def _module_meta_pass(target: Target, params: dict, sketch: torch.Tensor, query: torch.Tensor, running: dict):
    """The exported module on the sketch in train mode, then on the query in eval mode with the ``running``
    statistics (as ``to_module`` loads them): ``(sketch features, query features, the sketch's biased batch
    statistics)``."""
    module = target.module().to(sketch.dtype)
    stats = {}

    def record(name: str, bn: torch.nn.Module, inputs: tuple[torch.Tensor]) -> None:
        if bn.training:
            x = inputs[0].detach()
            stats[name] = (x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False))

    for name, bn in module.named_modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.register_forward_pre_hook(functools.partial(record, name))
    features = functional_call(module.train(), params, (sketch,))
    buffers = {f"{name}.running_{kind}": value.to(sketch.dtype) for name, (mean, var) in running.items()
               for kind, value in (("mean", mean), ("var", var))}
    return features, functional_call(module.eval(), {**params, **buffers}, (query,)), stats


@pytest.mark.parametrize("name", ALL)
def test_random_params_have_reasonable_scale(name):
    target = make_target(name, in_channels=1, image_size=28)
    params = target.random_params(torch.Generator().manual_seed(7))
    assert [k for k in params] == [s.name for s in target.specs()]
    with torch.no_grad():
        _, stats = target.forward(params, _images(8, 1, 28, seed=8), None)
        feats, _ = target.forward(params, _images(4, 1, 28, seed=9), stats)
    assert torch.isfinite(feats).all()
    assert 1e-2 <= feats.std().item() <= 1e2
    # features differ between images (not collapsed to a constant)
    assert (feats - feats.mean(0)).abs().max().item() > 1e-4


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_every_param(name):
    target = make_target(name, in_channels=1, image_size=28)
    params = _params(target, requires_grad=True)
    x = _images(4, 1, 28, seed=11)
    feats, _ = target.forward(params, x, None)
    proj = torch.randn(feats.shape[1], generator=torch.Generator().manual_seed(12))
    (feats @ proj).square().mean().backward()
    for spec in target.specs():
        g = params[spec.name].grad
        assert g is not None, spec.name
        assert g.shape == spec.shape
        assert torch.isfinite(g).all(), spec.name
        assert g.abs().sum() > 0, spec.name


def test_gradients_with_collected_stats():
    """Meta-training: statistics collected on a sketch batch, reused on a query batch; grads reach all."""
    target = make_target("resnet18", in_channels=1, image_size=28)
    params = _params(target, requires_grad=True)
    _, stats = target.forward(params, _images(4, 1, 28, seed=14), None)
    feats, _ = target.forward(params, _images(2, 1, 28, seed=15), stats)
    feats.square().mean().backward()
    for name, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("name", ["convnet3", "resnet18"])
def test_canonical_form_divides_out_exactly_the_rescalings_the_function_ignores(name):
    target = make_target(name, in_channels=1, image_size=28) if name == "convnet3" else make_target(name, in_channels=1)
    gen = torch.Generator().manual_seed(3)
    params = {k: v + 0.1 * torch.randn(v.shape, generator=gen) for k, v in target.random_params(gen).items()}
    rescaled = {k: v * (0.5 + torch.rand(v.shape[0], 1, 1, 1, generator=gen)) if v.dim() == 4 else v
                for k, v in params.items()}
    if name == "convnet3":
        for i in (1, 2, 3):
            c = 0.3 + 2 * torch.rand((), generator=gen)
            rescaled[f"bn{i}.weight"], rescaled[f"bn{i}.bias"] = c * params[f"bn{i}.weight"], c * params[f"bn{i}.bias"]
    x = torch.rand(32, 1, 28, 28, generator=gen)
    ours, theirs = target.forward(params, x)[0], target.forward(rescaled, x)[0]
    torch.testing.assert_close(torch.nn.functional.cosine_similarity(ours, theirs), torch.ones(32), rtol=0, atol=1e-4)
    for key, value in target.canonical(params).items():
        torch.testing.assert_close(target.canonical(rescaled)[key], value, rtol=1e-4, atol=1e-5, msg=key)
    changed = {**params, next(iter(params)): params[next(iter(params))].flip(0)}
    assert not torch.allclose(flat(target.canonical(changed)), flat(target.canonical(params)))


def flat(params):
    return torch.cat([p.flatten() for p in params.values()])
