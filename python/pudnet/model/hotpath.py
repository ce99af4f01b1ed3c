"""PudNet's hot path — the AHRU recurrence and the weight-generator convolutions — as ``torch.library`` custom ops.

``ahru_eager`` / ``generate_eager`` are the eager reference, the numerical contract the Triton kernels in
``pudnet.kernels`` match. ``ahru`` / ``generate`` call the custom ops ``pudnet::ahru`` / ``pudnet::generate``, so
the dispatcher picks the implementation and torch.compile and DDP see one op each:

* CPU tensors: the eager reference.
* Other devices (CUDA): the Triton kernels, in float32 (inputs cast in, results cast back to the dtype the eager
  reference would give); the eager reference where they cannot run (float64, no triton, a device Triton does
  not drive).
* Backward: the ops ``pudnet::ahru_backward`` / ``pudnet::generate_backward``. Besides its result, a forward
  returns the residuals the Triton backward reads (none on the eager path): with residuals the backward runs the
  Triton backward launchers, without them the VJP of the eager reference, recomputed (so on CPU a forward and
  backward costs one forward more than autograd through the eager operators would). No double backward.
* Autocast: on CPU the ops run the eager reference under autocast, as eager PyTorch would (products and
  convolutions in the autocast dtype; the recurrence's state and the biases where type promotion puts them).
  Autocast's dtype reaches the op as its ``autocast_dtype`` argument, so compiled graphs and the fake kernels
  see it too. On CUDA the ops compute in float32 whatever autocast says (the Triton kernels' precision).
* ``use_triton(flag)``: a test and benchmark hook that swaps the kernels inside a block.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor


def ahru_eager(
    e: Tensor, h0: Tensor, x0: Tensor, w_x: Tensor, w_h: Tensor, b_x: Tensor, b_h: Tensor,
    alpha: float, steps: int,
) -> Tensor:
    """The AHRU recurrence over ``steps`` target layers; returns ``r'`` of every layer ``[B, steps, E]``.

    ``e`` [B, E] dataset embedding, ``h0`` [B, E] initial hidden state, ``x0`` [E] learned first input;
    ``w_x``, ``w_h`` [E, 3E] and ``b_x``, ``b_h`` [3E] hold the update (z), reset (g) and candidate (n)
    gates in that order. One step (GRU-like, weights shared across steps)::

        z = σ(x W_xz + b_xz + h W_hz + b_hz)
        g = σ(x W_xg + b_xg + h W_hg + b_hg)
        n = tanh(x W_xn + b_xn + g ⊙ (h W_hn + b_hn))
        h = (1 − z) ⊙ n + z ⊙ h
        r' = (1 − α) h + α e          # initial residual connection
        x = r'                        # the next layer's input
    """
    x = x0.expand_as(e)
    h = h0
    outputs = []
    for _ in range(steps):
        gx = x @ w_x + b_x
        gh = h @ w_h + b_h
        xz, xg, xn = gx.chunk(3, dim=-1)
        hz, hg, hn = gh.chunk(3, dim=-1)
        z = torch.sigmoid(xz + hz)
        g = torch.sigmoid(xg + hg)
        n = torch.tanh(xn + g * hn)
        h = (1 - z) * n + z * h
        x = (1 - alpha) * h + alpha * e
        outputs.append(x)
    return torch.stack(outputs, dim=1)


def generate_eager(
    codes: Tensor, lin_w: Tensor, lin_b: Tensor, conv_w: Tensor, conv_b: Tensor,
    out_w: list[Tensor], out_b: list[Tensor], k: int,
) -> list[Tensor]:
    """The weight generators of one group of layers that share a kernel size ``k``.

    ``codes`` [B, L, E] are the layers' conditioning vectors (``r'``); per layer ``l``:
    ``lin_w[l]`` [E, H·k·k], ``lin_b[l]`` [H·k·k], ``conv_w[l]`` [H, H, 3, 3], ``conv_b[l]`` [H],
    ``out_w[l]`` [O_l, H], ``out_b[l]`` [O_l]. Layer ``l`` computes::

        a = reshape(codes[:, l] @ lin_w[l] + lin_b[l], [B, H, k, k])
        a = leaky_relu(conv3x3(a, conv_w[l], conv_b[l], padding=1), 0.2)
        raw[b, o, i, j] = Σ_c out_w[l][o, c] a[b, c, i, j] + out_b[l][o]    # a 1×1 convolution

    and returns ``raw`` [B, O_l, k, k] per layer (the caller reshapes it to the parameter's shape).
    """
    batch, hidden = codes.shape[0], conv_w.shape[1]
    raws = []
    for layer in range(codes.shape[1]):
        a = (codes[:, layer] @ lin_w[layer] + lin_b[layer]).view(batch, hidden, k, k)
        a = F.leaky_relu(F.conv2d(a, conv_w[layer], conv_b[layer], padding=1), 0.2)
        rows = out_w[layer].shape[0]
        bias = out_b[layer][None, :, None].expand(batch, rows, k * k)
        raw = torch.baddbmm(bias, out_w[layer].expand(batch, -1, -1), a.reshape(batch, hidden, k * k))
        raws.append(raw.view(batch, rows, k, k))
    return raws


def ahru(e, h0, x0, w_x, w_h, b_x, b_h, alpha: float, steps: int) -> Tensor:
    """``r'`` of every step ``[B, steps, E]`` (``ahru_eager``), through ``pudnet::ahru``."""
    return torch.ops.pudnet.ahru(e, h0, x0, w_x, w_h, b_x, b_h, float(alpha), int(steps))[0]


def generate(codes, lin_w, lin_b, conv_w, conv_b, out_w, out_b, k: int) -> list[Tensor]:
    """One ``[B, O_l, k, k]`` tensor per layer (``generate_eager``, with ``lin_w``/``lin_b``/``conv_w``/``conv_b``
    stacked), through ``pudnet::generate``."""
    return torch.ops.pudnet.generate(codes, lin_w, lin_b, conv_w, conv_b, list(out_w), list(out_b), int(k))[0]


# What the ops do under autocast, by device type: CPU honours it (the eager reference runs under autocast);
# CUDA computes in float32 whatever autocast says (the Triton kernels). Other devices: not honoured.
_HONOURS_AUTOCAST = {"cpu": True, "cuda": False}


def computes_in_autocast_dtype(device_type: str) -> bool:
    """Whether the ops' products and convolutions run in autocast's dtype on this device type."""
    return _HONOURS_AUTOCAST.get(device_type, False)


# ------------------------------------------------------------------------------------------ choosing a path


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _triton_runs(t: Tensor, autocast_dtype: torch.dtype | None) -> bool:
    """Whether the Triton kernels compute a call whose first tensor is ``t``. They compute in float32, so float64
    and an autocast dtype to honour take the eager reference, as do devices Triton does not drive (CPU tensors
    reach the Triton kernels only through ``use_triton``, in Triton's interpreter) and machines without triton."""
    return (autocast_dtype is None and t.dtype != torch.float64 and t.device.type in ("cuda", "cpu")
            and _triton_installed())


def _leaves_residuals(t: Tensor, autocast_dtype: torch.dtype | None) -> bool:
    """Whether the normal dispatch takes the Triton path (the fake kernels' view: CPU tensors run eager)."""
    return t.device.type != "cpu" and _triton_runs(t, autocast_dtype)


def _promoted(tensors) -> torch.dtype:
    return functools.reduce(torch.promote_types, (t.dtype for t in tensors))


def _float32(tensors) -> list[Tensor]:
    return [t.float().contiguous() for t in tensors]  # no copy when already float32 and contiguous


def _autocast(device_type: str, dtype: torch.dtype | None):
    """Autocast to ``dtype``; off when it is None, whatever the caller's autocast state."""
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)


def _eager_vjp(fn, tensors, grads, autocast_dtype: torch.dtype | None) -> list[Tensor]:
    """The gradients of ``fn(*tensors)`` (a list of tensors) with respect to ``tensors``: the forward recomputed
    under the forward's autocast, the backward outside it, as autograd would have run them."""
    # A custom op's kernel runs with the autograd dispatch keys excluded: let this one record a graph again
    # (as torch.utils.checkpoint does; torch.func.vjp would break under any TorchDispatchMode).
    with torch._C._SetExcludeDispatchKeyGuard(torch._C.DispatchKey.AutogradFunctionality, False), \
            torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in tensors]
        with _autocast(leaves[0].device.type, autocast_dtype):
            outputs = fn(*leaves)
        result = torch.autograd.grad(outputs, leaves, grads, allow_unused=True, materialize_grads=True)
    return _unaliased(result, [*tensors, *grads])


def _unaliased(outputs, inputs) -> list[Tensor]:
    """``outputs`` sharing no storage with ``inputs`` or with one another, as a custom op must return them: the
    gradient of an expand or a reshape that reduces nothing is a view of the incoming gradient."""
    taken = {t.untyped_storage().data_ptr() for t in inputs}
    result = []
    for t in outputs:
        if t.untyped_storage().data_ptr() in taken:
            t = t.clone()
        taken.add(t.untyped_storage().data_ptr())
        result.append(t)
    return result


def _residuals_get_no_gradient(ctx, residuals) -> None:
    """No gradient flows into the residuals, and none is made up for them: autograd would otherwise fill a
    zero gradient as large as each residual in every backward (so a result's unused gradient comes as None)."""
    ctx.mark_non_differentiable(*residuals)
    ctx.set_materialize_grads(False)


def _like(grads, tensors) -> list[Tensor]:
    """Gradients in their inputs' dtypes, contiguous (what the backward ops' fake kernels promise)."""
    return [g.to(t.dtype).contiguous() for g, t in zip(grads, tensors)]


# ------------------------------------------------------------------------------------------------------ AHRU


def _ahru_reference(tensors, alpha: float, steps: int) -> list[Tensor]:
    return [ahru_eager(*tensors, alpha, steps).to(_promoted(tensors))]


def _ahru_eager_kernel(e, h0, x0, w_x, w_h, b_x, b_h, alpha, steps, autocast_dtype=None):
    with _autocast(e.device.type, autocast_dtype):
        return _ahru_reference((e, h0, x0, w_x, w_h, b_x, b_h), alpha, steps)[0], []


def _ahru_triton_kernel(
    e: Tensor, h0: Tensor, x0: Tensor, w_x: Tensor, w_h: Tensor, b_x: Tensor, b_h: Tensor, alpha: float,
    steps: int, autocast_dtype: torch.dtype | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """``(r' [B, steps, E], residuals)``: the fused Triton recurrence where it runs, else the eager reference."""
    if not _triton_runs(e, autocast_dtype):
        return _ahru_eager_kernel(e, h0, x0, w_x, w_h, b_x, b_h, alpha, steps, autocast_dtype)
    from pudnet.kernels import ahru as kernels

    tensors = (e, h0, x0, w_x, w_h, b_x, b_h)
    kernels.check_shapes(*tensors, steps)
    out, hs, gates = kernels.ahru_forward(*_float32(tensors), alpha, steps)
    return out.to(_promoted(tensors)), [hs, gates]


def _ahru_backward_kernel(
    dout: Tensor, e: Tensor, h0: Tensor, x0: Tensor, w_x: Tensor, w_h: Tensor, b_x: Tensor, b_h: Tensor,
    out: Tensor, residuals: list[Tensor], alpha: float, steps: int, autocast_dtype: torch.dtype | None = None,
) -> list[Tensor]:
    """The gradients of the seven tensor inputs: the Triton backward when the forward left residuals, else the
    VJP of the eager reference."""
    tensors = (e, h0, x0, w_x, w_h, b_x, b_h)
    if residuals:
        from pudnet.kernels.ahru import ahru_backward

        grads = ahru_backward(*_float32((dout, e, h0, x0, w_x, w_h, out)), *residuals, alpha)
    else:
        grads = _eager_vjp(lambda *t: _ahru_reference(t, alpha, steps), tensors, [dout], autocast_dtype)
    return _like(grads, tensors)


_AHRU = torch.library.custom_op("pudnet::ahru", _ahru_triton_kernel, mutates_args=())
_AHRU.register_kernel("cpu", _ahru_eager_kernel)
_AHRU_BACKWARD = torch.library.custom_op("pudnet::ahru_backward", _ahru_backward_kernel, mutates_args=())


@_AHRU.register_fake
def _(e, h0, x0, w_x, w_h, b_x, b_h, alpha, steps, autocast_dtype=None):
    batch, emb = e.shape
    out = e.new_empty((batch, steps, emb), dtype=_promoted((e, h0, x0, w_x, w_h, b_x, b_h)))
    if not _leaves_residuals(e, autocast_dtype):
        return out, []
    f32 = dict(dtype=torch.float32)  # hs [B, L, E], gates [B, L, 4, E] (pudnet.kernels.ahru.ahru_forward)
    return out, [e.new_empty((batch, steps, emb), **f32), e.new_empty((batch, steps, 4, emb), **f32)]


@_AHRU_BACKWARD.register_fake
def _(dout, e, h0, x0, w_x, w_h, b_x, b_h, out, residuals, alpha, steps, autocast_dtype=None):
    return [t.new_empty(t.shape) for t in (e, h0, x0, w_x, w_h, b_x, b_h)]


def _ahru_setup_context(ctx, inputs, output):
    *tensors, alpha, steps, autocast_dtype = inputs
    out, residuals = output
    _residuals_get_no_gradient(ctx, residuals)
    ctx.save_for_backward(*tensors, out, *residuals)
    ctx.arguments = (alpha, steps, autocast_dtype)


def _ahru_backward(ctx, dout, _dresiduals):
    saved = ctx.saved_tensors
    out = saved[7]
    dout = torch.zeros_like(out) if dout is None else dout
    grads = _AHRU_BACKWARD(dout, *saved[:8], list(saved[8:]), *ctx.arguments)
    return (*grads, None, None, None)


_AHRU.register_autograd(_ahru_backward, setup_context=_ahru_setup_context)


# ------------------------------------------------------------------------------------------------ generators


def _generate_reference(tensors, layers: int, k: int, autocast_dtype: torch.dtype | None) -> list[Tensor]:
    codes, lin_w, lin_b, conv_w, conv_b, *outs = tensors
    raws = generate_eager(codes, lin_w, lin_b, conv_w, conv_b, outs[:layers], outs[layers:], k)
    dtype = _generate_dtype(tensors, autocast_dtype)
    return [raw.to(dtype) for raw in raws]


def _generate_dtype(tensors, autocast_dtype: torch.dtype | None) -> torch.dtype:
    return autocast_dtype or _promoted(tensors)  # under autocast the last product (baddbmm) gives its dtype


def _generate_eager_kernel(codes, lin_w, lin_b, conv_w, conv_b, out_w, out_b, k, autocast_dtype=None):
    tensors = (codes, lin_w, lin_b, conv_w, conv_b, *out_w, *out_b)
    with _autocast(codes.device.type, autocast_dtype):
        return _generate_reference(tensors, len(out_w), k, autocast_dtype), []


def _generate_triton_kernel(
    codes: Tensor, lin_w: Tensor, lin_b: Tensor, conv_w: Tensor, conv_b: Tensor, out_w: list[Tensor],
    out_b: list[Tensor], k: int, autocast_dtype: torch.dtype | None = None,
) -> tuple[list[Tensor], list[Tensor]]:
    """``(raws, residuals)``: the batched Triton generators where they run, else the eager reference."""
    if not out_w or not _triton_runs(codes, autocast_dtype):
        return _generate_eager_kernel(codes, lin_w, lin_b, conv_w, conv_b, out_w, out_b, k, autocast_dtype)
    from pudnet.kernels import generators as kernels

    kernels.check_shapes(codes, lin_w, lin_b, conv_w, conv_b, out_w, out_b, k)
    raws, a, c = kernels.generate_forward(codes.float(), *_float32((lin_w, lin_b, conv_w, conv_b)),
                                          _float32(out_w), _float32(out_b), k)
    dtype = _generate_dtype((codes, lin_w, lin_b, conv_w, conv_b, *out_w, *out_b), None)
    return [raw.to(dtype) for raw in raws], [a, c]


def _generate_backward_kernel(
    draws: list[Tensor], codes: Tensor, lin_w: Tensor, lin_b: Tensor, conv_w: Tensor, conv_b: Tensor,
    out_w: list[Tensor], out_b: list[Tensor], residuals: list[Tensor], k: int,
    autocast_dtype: torch.dtype | None = None,
) -> list[Tensor]:
    """The gradients of ``codes, lin_w, lin_b, conv_w, conv_b, *out_w, *out_b`` (one flat list): the Triton
    backward when the forward left residuals, else the VJP of the eager reference."""
    tensors = (codes, lin_w, lin_b, conv_w, conv_b, *out_w, *out_b)
    if residuals:
        from pudnet.kernels.generators import generate_backward

        *grads, d_out_w, d_out_b = generate_backward(_float32(draws), codes.float(), *_float32((lin_w, conv_w)),
                                                     *residuals, _float32(out_w), k)
        grads += [*d_out_w, *d_out_b]
    else:
        layers = len(out_w)
        grads = _eager_vjp(lambda *t: _generate_reference(t, layers, k, autocast_dtype), tensors, draws,
                           autocast_dtype)
    return _like(grads, tensors)


_GENERATE = torch.library.custom_op("pudnet::generate", _generate_triton_kernel, mutates_args=())
_GENERATE.register_kernel("cpu", _generate_eager_kernel)
_GENERATE_BACKWARD = torch.library.custom_op("pudnet::generate_backward", _generate_backward_kernel,
                                             mutates_args=())


@_GENERATE.register_fake
def _(codes, lin_w, lin_b, conv_w, conv_b, out_w, out_b, k, autocast_dtype=None):
    batch, layers, _ = codes.shape
    dtype = _generate_dtype((codes, lin_w, lin_b, conv_w, conv_b, *out_w, *out_b), autocast_dtype)
    raws = [codes.new_empty((batch, w.shape[0], k, k), dtype=dtype) for w in out_w]
    if not out_w or not _leaves_residuals(codes, autocast_dtype):
        return raws, []
    hidden = conv_w.shape[1]
    hkk, nk = hidden * k * k, batch * k * k
    f32 = dict(dtype=torch.float32)  # a [L, B, H·k·k], c [L, H, B·k·k] (pudnet.kernels.generators)
    return raws, [codes.new_empty((layers, batch, hkk), **f32), codes.new_empty((layers, hidden, nk), **f32)]


@_GENERATE_BACKWARD.register_fake
def _(draws, codes, lin_w, lin_b, conv_w, conv_b, out_w, out_b, residuals, k, autocast_dtype=None):
    return [t.new_empty(t.shape) for t in (codes, lin_w, lin_b, conv_w, conv_b, *out_w, *out_b)]


def _generate_setup_context(ctx, inputs, output):
    codes, lin_w, lin_b, conv_w, conv_b, out_w, out_b, k, autocast_dtype = inputs
    raws, residuals = output
    _residuals_get_no_gradient(ctx, residuals)
    ctx.save_for_backward(codes, lin_w, lin_b, conv_w, conv_b, *out_w, *out_b, *residuals)
    ctx.raw_shapes = [(raw.shape, raw.dtype) for raw in raws]
    ctx.layers, ctx.arguments = len(out_w), (k, autocast_dtype)


def _generate_backward(ctx, draws, _dresiduals):
    n = ctx.layers
    codes, lin_w, lin_b, conv_w, conv_b, *rest = ctx.saved_tensors
    out_w, out_b, residuals = rest[:n], rest[n:2 * n], rest[2 * n:]
    draws = [codes.new_zeros(shape, dtype=dtype) if d is None else d
             for d, (shape, dtype) in zip(draws, ctx.raw_shapes)]
    grads = _GENERATE_BACKWARD(draws, codes, lin_w, lin_b, conv_w, conv_b, out_w, out_b, residuals,
                               *ctx.arguments)
    return (*grads[:5], grads[5:5 + n], grads[5 + n:], None, None)


_GENERATE.register_autograd(_generate_backward, setup_context=_generate_setup_context)


# -------------------------------------------------------------------------------------------------- autocast


def _autocast_kernel(op, n_args: int, device_type: str):
    """An ``Autocast<device>`` kernel: autocast's dtype becomes the op's ``autocast_dtype`` argument (after its
    ``n_args`` others) — None where the op computes in float32 regardless, and for float64 inputs, which autocast
    leaves alone."""

    def kernel(_keyset, *args):
        honoured = computes_in_autocast_dtype(device_type) and args[0].dtype != torch.float64
        dtype = torch.get_autocast_dtype(device_type) if honoured else None
        with torch.autocast(device_type, enabled=False):
            return op(*args[:n_args], dtype)

    return kernel


_LIB = torch.library.Library("pudnet", "FRAGMENT")
for _name, _op, _n_args in (("ahru", _AHRU, 9), ("generate", _GENERATE, 8)):
    for _device_type in _HONOURS_AUTOCAST:
        _LIB.impl(_name, _autocast_kernel(_op, _n_args, _device_type), f"Autocast{_device_type.upper()}",
                  with_keyset=True)


# ------------------------------------------------------------------------------------------------ test hook


@contextlib.contextmanager
def use_triton(flag: bool) -> Iterator[None]:
    """Test and benchmark hook: inside the block the ops run the Triton kernels (``True``; CPU tensors in Triton's
    interpreter, which ``TRITON_INTERPRET=1`` must have turned on before triton was imported) or the eager
    reference (``False``), for CPU and CUDA tensors alike. Eager mode only: the fake kernels keep describing the
    normal dispatch, so do not torch.compile inside the block."""
    kernels = {"ahru": _ahru_triton_kernel if flag else _ahru_eager_kernel,
               "generate": _generate_triton_kernel if flag else _generate_eager_kernel}
    with torch.library._scoped_library("pudnet", "IMPL") as lib:
        for name, kernel in kernels.items():
            for key in ("CPU", "CUDA"):
                lib.impl(name, kernel, key)
        yield
