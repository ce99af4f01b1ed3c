"""Target architectures: ordered parameter specs plus a functional forward.

A target never owns parameters. ``forward(params, x, stats)`` runs it with any weights: with
``stats=None`` every BatchNorm normalises with the batch's own statistics and the statistics are returned,
so that a dataset's images can set them once and every later call (support, query, the exported module in
eval mode) reuses them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import channel_moments, mean_and_variance

BN_EPS = 1e-5
Params = dict[str, Tensor]
Stats = dict[str, tuple[Tensor, Tensor]]  # BatchNorm name -> (mean, biased variance)


MATRIX_KINDS = ("conv", "conv_transpose", "linear")
SCALE_KINDS = ("bn_weight", "norm_weight")  # multiplicative: start at 1
KINDS = (*MATRIX_KINDS, *SCALE_KINDS, "bn_bias", "norm_bias", "bias")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter tensor of a target. ``kind``: ``conv``, ``conv_transpose``, ``linear`` (matrices,
    generated at He scale for ``fan``), ``bn_weight``/``bn_bias`` (a BatchNorm's, whose statistics come from
    the dataset), ``norm_weight``/``norm_bias`` (GroupNorm, LayerNorm, ...), ``bias``.

    ``fan``: the inputs each output sums (default: ``prod(shape[1:])``, right for convolutions and linear
    maps; a transposed convolution's is ``in_channels · kernel area / stride area``).
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    fan: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown parameter kind {self.kind!r}; known: {', '.join(KINDS)}")

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def fan_in(self) -> int:
        if self.fan:
            return self.fan
        return math.prod(self.shape[1:]) if len(self.shape) > 1 else 1

    @property
    def is_matrix(self) -> bool:
        return self.kind in MATRIX_KINDS

    @property
    def is_scale(self) -> bool:
        return self.kind in SCALE_KINDS


def batch_norm(x: Tensor, name: str, params: Params, stats: Stats | None, collected: Stats) -> Tensor:
    """BatchNorm ``name`` with the given statistics, or the batch's own (then recorded in ``collected``).

    Recorded statistics are detached: later batches are normalised with them as constants, exactly as the
    exported module does in eval mode.
    """
    weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
    if stats is None:
        out, mean, var = batch_norm_train(x, weight, bias)
        _record(collected, name, mean, var)
        return out
    mean, var = stats[name]
    return F.batch_norm(x, mean, var, weight, bias, False, 0.0, BN_EPS)


def batch_norm_train(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode BatchNorm of ``x`` (affine map optional): ``(output, mean, biased variance)``."""
    if x.device.type == "cpu" and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return _ChannelsLastBatchNorm.apply(x, weight, bias)
    out, mean, invstd = torch.native_batch_norm(x, weight, bias, None, None, True, 0.0, BN_EPS)
    return out, mean, _variance(invstd)


class _ChannelsLastBatchNorm(torch.autograd.Function):
    """PyTorch's CPU kernels for a channels-last batch, given statistics summed in float64.

    Their own channels-last statistics carry ~1e-5 relative error (NCHW: ~1e-7), which gradients through
    them amplify to ~1e-3 once a layer's inputs are all positive; their normalisation and backward pass
    are exact enough given exact statistics."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, bias: Tensor | None):
        dtype = torch.promote_types(x.dtype, torch.float32) if weight is None else weight.dtype
        mean, var = mean_and_variance([channel_moments(x)], x.numel() // x.shape[1], dtype)
        out = torch.native_batch_norm(x, weight, bias, mean, var, False, 0.0, BN_EPS)[0]
        ctx.save_for_backward(x, weight, mean, torch.rsqrt(var + BN_EPS))
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad: Tensor, _mean: Tensor, _var: Tensor):
        x, weight, mean, invstd = ctx.saved_tensors
        wanted = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
        return torch.ops.aten.native_batch_norm_backward(grad, x, weight, None, None, mean, invstd, True, BN_EPS,
                                                         wanted)


def conv_bn(x: Tensor, conv_weight: Tensor, name: str, params: Params, stats: Stats | None, collected: Stats,
            stride: int = 1, padding: int = 0) -> Tensor:
    """``batch_norm(conv2d(x, conv_weight), name, ...)``, the statistics rule of :func:`batch_norm`.

    Faster, same function and gradients: with given statistics the normalisation is folded into the
    convolution's weights; a 3×3 convolution over few input channels gets its batch statistics in closed
    form from the patch covariance (:func:`patch_stats`) and is folded too.
    """
    if stats is None and _has_few_inputs(conv_weight, stride, padding):
        mean, var = patch_stats(patches(x), conv_weight)
        _record(collected, name, mean, var)
    elif stats is None:
        return batch_norm(F.conv2d(x, conv_weight, stride=stride, padding=padding), name, params, None, collected)
    else:
        mean, var = stats[name]
    scale, shift = bn_scale_shift(params, name, mean, var)
    return F.conv2d(x, _scaled(conv_weight, scale), stride=stride, padding=padding).add_(shift[:, None, None])


def conv_bn_relu_maxpool(x: Tensor, conv_weight: Tensor, name: str, params: Params, stats: Stats | None,
                         collected: Stats) -> Tensor:
    """``max_pool2d(relu(batch_norm(conv2d(x, conv_weight, padding=1))), 2)`` (statistics rule of
    :func:`batch_norm`), pooling before the elementwise passes so that they touch a quarter of the values.

    BatchNorm is ``scale·y + shift`` per channel; max-pooling commutes with it where ``scale ≥ 0`` and
    with ReLU. The sign of a negative BatchNorm weight is moved into the convolution's filter. The output
    is channels-last (several times faster pooling and convolutions on CPU).
    """
    if _has_few_inputs(conv_weight, 1, 1):
        rows = patches(x)
        if stats is None:
            mean, var = patch_stats(rows, conv_weight)
            _record(collected, name, mean, var)
        else:
            mean, var = stats[name]
        scale, shift = bn_scale_shift(params, name, mean, var)
        return _relu_maxpool(patch_conv(rows, _scaled(conv_weight, scale), x.shape), shift)
    x = x.contiguous(memory_format=torch.channels_last)
    if stats is not None:
        scale, shift = bn_scale_shift(params, name, *stats[name])
        return _relu_maxpool(F.conv2d(x, _scaled(conv_weight, scale), padding=1), shift)
    weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
    sign = torch.where(weight < 0, -1.0, 1.0).to(weight.dtype)  # 0 counts as positive
    normalised, mean, var = batch_norm_train(F.conv2d(x, _scaled(conv_weight, sign), padding=1), None, None)
    _record(collected, name, sign * mean, var)
    pooled = F.max_pool2d(normalised, 2)
    return F.relu_(torch.addcmul(bias[:, None, None], pooled, (weight * sign)[:, None, None]).to(pooled.dtype))


def bn_scale_shift(params: Params, name: str, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel ``(scale, shift)`` with BatchNorm ``name`` under statistics ``(mean, var)`` equal to
    ``scale·y + shift``."""
    weight = params[f"{name}.weight"]
    scale = weight * torch.rsqrt(var.to(weight.dtype) + BN_EPS)
    return scale, params[f"{name}.bias"] - scale * mean.to(weight.dtype)


PATCH_INPUTS = 27
"""3×3 convolutions with at most this many inputs per output (``in_channels·9``: grey or RGB images) run
through :func:`patches`."""


def patches(x: Tensor) -> Tensor:
    """The zero-padded 3×3 neighbourhood of every pixel of ``x [N, C, H, W]``: ``[N·H·W, C·9]``, rows in
    channels-last pixel order, columns in the order of a flattened ``[C, 3, 3]`` filter."""
    n, c, h, w = x.shape
    return F.unfold(x, 3, padding=1).transpose(1, 2).reshape(n * h * w, c * 9)


def patch_stats(rows: Tensor, conv_weight: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and biased variance over all pixels of each channel of the convolution whose patches are
    ``rows``: ``w·μ`` and ``wᵀΣw`` from the patches' mean μ and covariance Σ (float64, small: ``C·9``
    square), so no pass over the convolution's output is needed, forward or backward."""
    rows = rows.double()
    mean = rows.mean(0)
    cov = rows.T @ rows / len(rows) - torch.outer(mean, mean)  # no cancellation to fear in float64
    w = conv_weight.flatten(1).double()
    return (w @ mean).to(conv_weight.dtype), ((w @ cov) * w).sum(1).to(conv_weight.dtype)


def patch_conv(rows: Tensor, conv_weight: Tensor, shape: torch.Size) -> Tensor:
    """``conv2d(x, conv_weight, padding=1)`` for ``rows = patches(x)``, ``x`` of ``shape``: one matrix
    product, channels-last output."""
    n, _, h, w = shape
    # a contiguous [C·9, out] right factor: its gradient is then rowsᵀ·grad, several times faster on CPU
    # than the (gradᵀ·rows)ᵀ autograd computes for a transposed one
    right = conv_weight.flatten(1).T.contiguous()
    return (rows @ right).view(n, h, w, -1).permute(0, 3, 1, 2)


def _has_few_inputs(conv_weight: Tensor, stride: int, padding: int) -> bool:
    """Whether the convolution is a stride-1 same-size 3×3 one that :func:`patches` can serve."""
    same_size_3x3 = conv_weight.shape[2:] == (3, 3) and stride == 1 and padding == 1
    return same_size_3x3 and conv_weight[0].numel() <= PATCH_INPUTS


def _scaled(conv_weight: Tensor, scale: Tensor) -> Tensor:
    return conv_weight * scale[:, None, None, None].to(conv_weight.dtype)


def _relu_maxpool(y: Tensor, shift: Tensor) -> Tensor:
    return F.relu_(F.max_pool2d(y, 2).add_(shift[:, None, None]))


def _variance(invstd: Tensor) -> Tensor:
    return (invstd.detach().float() ** -2 - BN_EPS).clamp_min(0.0)


def _record(collected: Stats, name: str, mean: Tensor, var: Tensor) -> None:
    collected[name] = (mean.detach().float(), var.detach().float())


STATS_CHUNK = 1024
"""Images per pass of :meth:`Target.dataset_stats`: a dataset of up to this many images takes one pass; a
larger one is streamed in chunks of this size (~0.2 GB of activations each for a 28 px ConvNet-3)."""


class _Collected(Exception):
    """Ends a forward pass once the BatchNorm being measured has seen its input."""


class Target:
    """A target architecture: ``specs`` in generation order and a functional ``forward``."""

    name: str
    in_channels: int
    feature_dim: int | None  # features of a classifier; None for a target whose output is not features

    @staticmethod
    def from_module(module: nn.Module, name: str | None = None, in_channels: int | None = None,
                    roles: Callable[[str, nn.Module], str | None] | None = None) -> "ModuleTarget":
        """A target for any ``nn.Module`` (:class:`ModuleTarget`)."""
        return ModuleTarget(module, name, in_channels, roles)

    def specs(self) -> list[ParamSpec]:
        raise NotImplementedError

    def forward(self, params: Params, x: Tensor, stats: Stats | None = None) -> tuple[Tensor, Stats]:
        """Features ``[N, feature_dim]`` and the BatchNorm statistics used."""
        raise NotImplementedError

    def batchnorm_names(self) -> list[str]:
        return [spec.name.removesuffix(".weight") for spec in self.specs() if spec.kind == "bn_weight"]

    @torch.no_grad()
    def dataset_stats(self, params: Params, images: Tensor, chunk: int = STATS_CHUNK,
                      progress: Callable[[int], None] | None = None) -> Stats:
        """The BatchNorm statistics of the dataset ``images`` under ``params``: every BatchNorm's mean and
        biased variance over all images and positions, each layer normalised with the statistics of the
        layers before it — what ``forward(params, images)`` returns, in bounded memory.

        Up to ``chunk`` images take that one pass. More are streamed: one pass over the chunks per BatchNorm,
        in the order the network runs them, summing (in float64) the layer's inputs with every earlier layer's
        statistics fixed, and stopping each chunk's forward there — exact, at the cost of about (layers + 1)/2
        full passes. ``progress`` is called with the number of chunk passes done after each one.
        """
        if len(images) <= chunk:
            return self.forward(params, images)[1]
        # channels-last: ~1.5x faster convolutions and BatchNorms on CPU
        module = self.to_module(params, self._placeholder_stats(params)).to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
        layers = _batchnorms_in_running_order(module, images[:2])
        stats: Stats = {}
        for name, layer in layers:
            stats[name] = _streamed_moments(module, layer, images, chunk, progress)
            layer.running_mean.copy_(stats[name][0])
            layer.running_var.copy_(stats[name][1])
        return stats

    def _placeholder_stats(self, params: Params) -> Stats:
        return {name: (torch.zeros_like(params[f"{name}.weight"]), torch.ones_like(params[f"{name}.weight"]))
                for name in self.batchnorm_names()}

    def frozen_prefix(self, params: Params, x: Tensor, changing: set[str], differentiable: bool = False
                      ) -> tuple[Tensor, Callable]:
        """For repeated passes over one batch ``x`` in which only the parameters named in ``changing`` vary
        (refinement of the last layers): the work that does not depend on them, done once, and a function
        ``(params, prefix) -> forward(params, x)``. The prefix is computed without gradient unless
        ``differentiable`` (then a loss of the passes trains the other parameters through it, exactly as through
        whole forwards). This default does nothing ahead."""
        return x, lambda p, h: self.forward(p, h)

    def canonical(self, params: Params) -> Params:
        """``params`` with the degrees of freedom the network's function ignores divided out, so that
        distances between parameter sets measure distances between functions: every convolution here feeds
        a batch-normalisation with the dataset's statistics, so each filter's scale is irrelevant and
        filters are normalised to unit norm. Targets with more such symmetries override this."""
        return {
            name: F.normalize(value.flatten(1), dim=1).view_as(value) if value.dim() == 4 else value
            for name, value in params.items()
        }

    def module(self) -> nn.Module:
        """A fresh ``torch.nn.Module`` of this architecture whose state-dict names match ``specs``."""
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": self.name, "in_channels": self.in_channels}

    def to_module(self, params: Params, stats: Stats) -> nn.Module:
        """The module in eval mode with ``params`` loaded and BatchNorm running statistics from ``stats``."""
        module = self.module()
        state = {k: v.detach().clone() for k, v in params.items()}
        for name, (mean, var) in stats.items():
            state[f"{name}.running_mean"] = mean.detach().clone()
            state[f"{name}.running_var"] = var.detach().clone()
            state[f"{name}.num_batches_tracked"] = torch.tensor(1)
        module.load_state_dict(state, strict=True)
        return module.eval()

    def random_params(self, generator: torch.Generator | None = None) -> Params:
        """Kaiming-normal convolutions and linear maps, unit BatchNorm: the random-init floor."""
        params = {}
        for spec in self.specs():
            if spec.is_matrix:
                std = math.sqrt(2.0 / spec.fan_in)
                params[spec.name] = torch.randn(spec.shape, generator=generator) * std
            elif spec.is_scale:
                params[spec.name] = torch.ones(spec.shape)
            else:
                params[spec.name] = torch.zeros(spec.shape)
        return params


def _batchnorms_in_running_order(module: nn.Module, probe: Tensor) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every BatchNorm of ``module`` in the order a forward pass of ``probe`` runs them."""
    order: list[tuple[str, nn.Module]] = []
    hooks = [layer.register_forward_pre_hook(lambda layer, _, name=name: order.append((name, layer)))
             for name, layer in module.named_modules() if isinstance(layer, nn.modules.batchnorm._BatchNorm)]
    try:
        module(probe)
    finally:
        for hook in hooks:
            hook.remove()
    return order


def _streamed_moments(module: nn.Module, layer: nn.Module, images: Tensor, chunk: int,
                      progress: Callable[[int], None] | None) -> tuple[Tensor, Tensor]:
    """Mean and biased variance per channel of ``layer``'s input over every chunk of ``images``."""
    moments: list[Tensor] = []
    count = 0

    def measure(_layer, inputs):
        nonlocal count
        count += inputs[0].numel() // inputs[0].shape[1]
        moments.append(channel_moments(inputs[0]))
        raise _Collected

    hook = layer.register_forward_pre_hook(measure)
    try:
        for start in range(0, len(images), chunk):
            try:
                module(images[start:start + chunk])
            except _Collected:
                pass
            if progress is not None:
                progress(1)
    finally:
        hook.remove()
    return mean_and_variance(moments, count, layer.running_mean.dtype)


_NORMS = (nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def parameter_kind(leaf: str, owner: nn.Module) -> str | None:
    """The :class:`ParamSpec` kind of parameter ``leaf`` (``weight``, ``bias``) of module ``owner``, or None
    for an owner of no known role."""
    if isinstance(owner, nn.modules.conv._ConvTransposeNd):
        return "conv_transpose" if leaf == "weight" else "bias"
    if isinstance(owner, nn.modules.conv._ConvNd):
        return "conv" if leaf == "weight" else "bias"
    if isinstance(owner, nn.Linear):
        return "linear" if leaf == "weight" else "bias"
    if isinstance(owner, nn.modules.batchnorm._BatchNorm):
        return {"weight": "bn_weight", "bias": "bn_bias"}.get(leaf)
    if isinstance(owner, _NORMS):
        return {"weight": "norm_weight", "bias": "norm_bias"}.get(leaf)
    return None


def fan_of(kind: str, shape: tuple[int, ...], owner: nn.Module) -> int:
    """The inputs each output of a matrix parameter sums (0: :class:`ParamSpec`'s default rule)."""
    if kind != "conv_transpose":
        return 0
    stride_area = math.prod(owner.stride)
    return max(1, shape[0] // owner.groups * math.prod(shape[2:]) // stride_area)


class ModuleTarget(Target):
    """Any ``nn.Module`` as a target: its ``named_parameters()`` (in registration order) are the specs, each
    kind inferred from the module that owns it (:func:`parameter_kind`; ``roles(name, owner)`` may name a
    kind for the others), and ``forward`` runs a copy of it with the given parameters through
    :func:`torch.func.functional_call`.

    Statistics rule: with ``stats=None`` every BatchNorm normalises with the batch's statistics (its
    input's mean and biased variance, recorded detached and returned), otherwise with ``stats``; the rest of
    the module runs in eval mode. GroupNorm, LayerNorm and the like need no statistics.
    """

    def __init__(self, module: nn.Module, name: str | None = None, in_channels: int | None = None,
                 roles: Callable[[str, nn.Module], str | None] | None = None, config: dict | None = None):
        self._config = config or {}
        self.template = copy.deepcopy(module).eval()
        self.name = name or type(module).__name__
        self.in_channels = in_channels if in_channels is not None else _first_input_channels(module)
        self.feature_dim = getattr(module, "feature_dim", None)
        self._specs = _module_specs(self.template, roles)
        self._batchnorms = [(n, m) for n, m in self.template.named_modules()
                            if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for name_, layer in self._batchnorms:
            if not layer.affine or not layer.track_running_stats:
                raise ValueError(f"{self.name}.{name_}: a BatchNorm needs affine=True and track_running_stats=True "
                                 "(its statistics come from the dataset)")

    def specs(self) -> list[ParamSpec]:
        return list(self._specs)

    def config(self) -> dict:
        return {**super().config(), **self._config}

    def module(self) -> nn.Module:
        return copy.deepcopy(self.template)

    def forward(self, params: Params, x: Tensor, stats: Stats | None = None) -> tuple[Tensor, Stats]:
        collected: Stats = {}
        tensors: dict[str, Tensor] = dict(params)
        hooks = []
        for name, layer in self._batchnorms:
            if stats is None:
                placeholder = params[f"{name}.weight"].detach().float()
                mean, var = torch.zeros_like(placeholder), torch.ones_like(placeholder)  # updated, then dropped
                hooks.append(layer.register_forward_pre_hook(partial(_record_input, collected, name)))
            else:
                mean, var = stats[name]
            tensors[f"{name}.running_mean"], tensors[f"{name}.running_var"] = mean, var
            layer.train(stats is None)
        try:
            out = torch.func.functional_call(self.template, tensors, (x,), strict=False)
        finally:
            for hook in hooks:
                hook.remove()
            for _name, layer in self._batchnorms:
                layer.eval()
        return out, (stats if stats is not None else collected)


def _record_input(collected: Stats, name: str, layer: nn.Module, inputs: tuple[Tensor, ...]) -> None:
    x = inputs[0].detach()
    mean, var = mean_and_variance([channel_moments(x)], x.numel() // x.shape[1], torch.float32)
    _record(collected, name, mean, var)


def _module_specs(module: nn.Module, roles: Callable[[str, nn.Module], str | None] | None) -> list[ParamSpec]:
    owners = dict(module.named_modules())
    specs = []
    for name, value in module.named_parameters():
        owner_name, _, leaf = name.rpartition(".")
        owner = owners[owner_name]
        kind = (roles(name, owner) if roles else None) or parameter_kind(leaf, owner)
        if kind is None:
            raise ValueError(f"parameter {name!r} of a {type(owner).__name__}: its role is unknown; pass "
                             f"roles=lambda name, module: <one of {', '.join(KINDS)}>")
        specs.append(ParamSpec(name, tuple(value.shape), kind, fan_of(kind, tuple(value.shape), owner)))
    if not specs:
        raise ValueError(f"{type(module).__name__} has no parameters to predict")
    return specs


def _first_input_channels(module: nn.Module) -> int:
    for layer in module.modules():
        if isinstance(layer, nn.modules.conv._ConvNd):
            return layer.in_channels
    raise ValueError(f"{type(module).__name__}: no convolution to read the input channels from; pass in_channels")


_REGISTRY: dict[str, Callable[..., Target]] = {}


def register(name: str):
    def wrap(factory):
        _REGISTRY[name] = factory
        return factory

    return wrap


def make_target(name: str, in_channels: int = 1, **kwargs) -> Target:
    if name not in _REGISTRY:
        raise ValueError(f"unknown target {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](in_channels=in_channels, **kwargs)


def target_names() -> list[str]:
    return sorted(_REGISTRY)
