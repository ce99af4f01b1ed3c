"""Triton hot path (pudnet.kernels) against the eager reference computed in float64.

The kernels are reached through the custom ops ``pudnet::ahru`` / ``pudnet::generate`` (``pudnet.model.hotpath``)
and tested in two variants, one per process: "cpu" runs them on CPU tensors in Triton's interpreter
(``hotpath.use_triton``; TRITON_INTERPRET=1 is set here, as in conftest.py, before anything below imports
triton's kernels, and a kernel module imported earlier without it is reloaded); "cuda" runs the compiled kernels
on CUDA tensors and needs a GPU and ``TRITON_INTERPRET=0`` (``benchmarks/gpu_check.sh`` runs it). Each variant is
skipped, with the reason, where the other one runs.

Every run draws fresh random inputs (seed from os.urandom, printed in every failure message; set
PUDNET_TEST_SEED to replay one), and every buffer the launchers allocate is poisoned with NaN, so an element a
kernel forgets to write fails the comparison. Criterion: ‖out − ref‖ / ‖ref‖ ≤ 1e-5 for outputs and for the
gradients of every input (the per-layer ``out_w`` / ``out_b`` gradients over all layers together).
"""

from __future__ import annotations

import os
import sys

import torch

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")  # compiled kernels
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"
    if "triton" in sys.modules:  # triton decorates its standard library when imported: too late to switch
        from triton.language import standard as _std
        from triton.runtime.interpreter import InterpretedFunction as _Interpreted

        if not isinstance(_std.zeros, _Interpreted):
            raise RuntimeError("triton was imported before TRITON_INTERPRET=1 was set; set it first "
                               "(tests/conftest.py does, before importing anything that imports triton)")

import contextlib  # noqa: E402
import importlib  # noqa: E402
import random  # noqa: E402

import pytest  # noqa: E402

from pudnet.kernels import _common  # noqa: E402 (no triton import)
from pudnet.model import hotpath  # noqa: E402

TOL = 1e-5
DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(
        ON_GPU, reason="Triton's interpreter is off (TRITON_INTERPRET=0): the CPU variants need it")),
    pytest.param("cuda", marks=pytest.mark.skipif(
        not ON_GPU, reason="no CUDA device" if not torch.cuda.is_available()
        else "TRITON_INTERPRET=1: the CUDA variants need compiled kernels (run with TRITON_INTERPRET=0)")),
]


def _kernel_modules():
    """The kernel modules, decorated for the interpreter when on CPU (reloaded if imported without it)."""
    from triton.runtime.interpreter import InterpretedFunction

    mods = [importlib.import_module("pudnet.kernels.ahru"), importlib.import_module("pudnet.kernels.generators")]
    for i, mod in enumerate(mods):
        probe = mod._ahru_fwd_kernel if i == 0 else mod._gen_out_fwd_kernel
        if isinstance(probe, InterpretedFunction) != (not ON_GPU):
            mods[i] = importlib.reload(mod)
    return mods


kahru, kgen = _kernel_modules()


@pytest.fixture(autouse=True)
def _poison_and_reset():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: no spinning OpenMP workers
    _common.POISON = True
    kahru.OVERRIDE.clear()
    kgen.OVERRIDE.clear()
    yield
    _common.POISON = False
    torch.set_num_threads(threads)
    kahru.OVERRIDE.clear()
    kgen.OVERRIDE.clear()


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("PUDNET_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    print(f"seed={value} (replay with PUDNET_TEST_SEED={value})")
    return value


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out).all():
        return float("inf")  # an unwritten (poisoned) or overflowing element
    denom = ref.norm().item()
    return (out - ref).norm().item() / (denom if denom > 0 else 1.0)


def check(name: str, out: torch.Tensor, ref: torch.Tensor, seed: int, tol: float = TOL) -> None:
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != {tuple(ref.shape)} (seed={seed})"
    err = rel_err(out, ref)
    assert err <= tol, f"{name}: relative error {err:.3e} > {tol:g} (seed={seed})"


def flat_grads(tensors) -> torch.Tensor:
    return torch.cat([t.grad.detach().double().cpu().flatten() for t in tensors])


def leaves(tensors, dtype, device):
    return [t.to(device=device, dtype=dtype).detach().requires_grad_() for t in tensors]


@contextlib.contextmanager
def triton_path(device: str):
    """The ops' Triton kernels — by dispatch for CUDA tensors, through the test hook for CPU tensors — and a
    check that they ran."""
    with hotpath.use_triton(True) if device == "cpu" else contextlib.nullcontext(), \
            _common.count_launches() as launches:
        yield
    assert sum(launches.values()) > 0, "the Triton kernels did not run"


# ------------------------------------------------------------------------------------------------------ AHRU


def ahru_inputs(batch: int, emb: int, gen: torch.Generator):
    # Weights with std 1/√E (≈ 1.7× the model's uniform(±1/√E) init). Twice that makes the 36-step recurrence
    # ill-conditioned: then even eager fp32 misses 1e-5 against float64 for ~2% of seeds (max 1.9e-5 over
    # 150 seeds), while at 1/√E it stays below 3.5e-7 — a test of the kernels, not of fp32.
    scale = emb ** -0.5
    return [
        torch.randn(batch, emb, generator=gen),  # e
        torch.randn(batch, emb, generator=gen).tanh(),  # h0
        0.5 * torch.randn(emb, generator=gen),  # x0
        scale * torch.randn(emb, 3 * emb, generator=gen),  # w_x
        scale * torch.randn(emb, 3 * emb, generator=gen),  # w_h
        0.3 * torch.randn(3 * emb, generator=gen),  # b_x
        0.3 * torch.randn(3 * emb, generator=gen),  # b_h
    ]


AHRU_CASES = {
    # ResNet-34's ~36 steps, meta-batch 1, an embedding that is not a power of two
    "B1-E100-L36": dict(batch=1, emb=100, steps=36, override={}),
    # two programs (17 rows, 16 per program), several masked chunks of E, the tl.dot path
    "B17-E40-L5-chunks": dict(batch=17, emb=40, steps=5, override=dict(BLOCK_N=16, BLOCK_K=16, WGRAD_BLOCK=16)),
    # meta-batch > 1 below 16 rows: the broadcast-product path the GPU takes for small batches, odd E = 24
    "B3-E24-L9-broadcast": dict(batch=3, emb=24, steps=9, override=dict(USE_DOT=False, BLOCK_N=16, BLOCK_K=16)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(AHRU_CASES))
def test_ahru_matches_float64_eager(case, device, seed):
    spec = AHRU_CASES[case]
    kahru.OVERRIDE.update(spec["override"])
    gen = torch.Generator().manual_seed(seed)
    alpha = random.Random(seed).uniform(0.05, 0.95)
    inputs = ahru_inputs(spec["batch"], spec["emb"], gen)
    grad_out = torch.randn(spec["batch"], spec["steps"], spec["emb"], generator=gen)

    ours = leaves(inputs, torch.float32, device)
    with triton_path(device):
        out = hotpath.ahru(*ours, alpha, spec["steps"])
        out.backward(grad_out.to(device))
    ref_in = leaves(inputs, torch.float64, device="cpu")
    ref = hotpath.ahru_eager(*ref_in, alpha, spec["steps"])
    ref.backward(grad_out.double())

    check(f"{case} r'", out, ref, seed)
    for name, a, b in zip(["e", "h0", "x0", "w_x", "w_h", "b_x", "b_h"], ours, ref_in):
        check(f"{case} d{name}", a.grad, b.grad, seed)


# ------------------------------------------------------------------------------------------------ generators


def generator_inputs(batch: int, layers: int, emb: int, hidden: int, k: int, sizes, gen: torch.Generator):
    kk = k * k
    stacked = [
        torch.randn(batch, layers, emb, generator=gen),  # codes
        torch.randn(layers, emb, hidden * kk, generator=gen) / emb ** 0.5,  # lin_w
        0.1 * torch.randn(layers, hidden * kk, generator=gen),  # lin_b
        torch.randn(layers, hidden, hidden, 3, 3, generator=gen) / (3 * hidden ** 0.5),  # conv_w
        0.1 * torch.randn(layers, hidden, generator=gen),  # conv_b
    ]
    out_w = [torch.randn(o, hidden, generator=gen) / hidden ** 0.5 for o in sizes]
    out_b = [0.1 * torch.randn(o, generator=gen) for o in sizes]
    return stacked, out_w, out_b


GEN_CASES = {
    # ResNet-34's 36 convolution generators in one group, meta-batch 1, E = 100, H = 24
    "resnet34-like-B1-L36-k3": dict(batch=1, layers=36, emb=100, hidden=24, k=3, sizes="random36", override={}),
    # BatchNorm-style vectors (k = 1) incl. a 1-row layer, several tiles per layer, meta-batch 3
    "B3-L7-k1-tiles": dict(batch=3, layers=7, emb=40, hidden=24, k=1, sizes=[64, 1, 130, 64, 33, 7, 200],
                           override=dict(ROWS=32, BLOCK_O=16, BLOCK_O_BWD=8)),
    # several column chunks (B·KK = 18 > 16), row chunks in the conv, small E/J blocks, strided codes
    "B2-L3-k3-chunks-strided": dict(batch=2, layers=3, emb=20, hidden=16, k=3, sizes=[40, 3, 100],
                                    override=dict(ROWS=32, BLOCK_O=16, BLOCK_O_BWD=32, BLOCK_N=16, BLOCK_J=32,
                                                  BLOCK_E=16, BLOCK_R=16), strided=True),
    # a 7×7 stem convolution (ResNet conv1), H = 8 padded to 16
    "B2-L2-k7": dict(batch=2, layers=2, emb=20, hidden=8, k=7, sizes=[10, 33], override=dict(BLOCK_O=16)),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(GEN_CASES))
def test_generators_match_float64_eager(case, device, seed):
    spec = GEN_CASES[case]
    kgen.OVERRIDE.update(spec["override"])
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    sizes = [rng.randint(1, 80) for _ in range(36)] if spec["sizes"] == "random36" else spec["sizes"]
    k = spec["k"]
    stacked, out_w, out_b = generator_inputs(spec["batch"], spec["layers"], spec["emb"], spec["hidden"], k,
                                             sizes, gen)
    grads_out = [torch.randn(spec["batch"], o, k, k, generator=gen) for o in sizes]

    ours = leaves(stacked, torch.float32, device)
    ours_w, ours_b = leaves(out_w, torch.float32, device), leaves(out_b, torch.float32, device)
    codes = ours[0]
    if spec.get("strided"):  # the layers' codes as a strided view of a larger tensor
        wide = torch.zeros(spec["batch"], 2 * spec["layers"], spec["emb"], device=device)
        wide = wide.index_copy(1, torch.arange(0, 2 * spec["layers"], 2, device=device), codes)
        codes = wide[:, ::2]
        assert not codes.is_contiguous()
    with triton_path(device):
        outs = hotpath.generate(codes, *ours[1:], ours_w, ours_b, k)
        torch.autograd.backward(outs, [g.to(device) for g in grads_out])

    ref_in = leaves(stacked, torch.float64, device="cpu")
    ref_w, ref_b = leaves(out_w, torch.float64, device="cpu"), leaves(out_b, torch.float64, device="cpu")
    refs = hotpath.generate_eager(*ref_in, ref_w, ref_b, k)
    torch.autograd.backward(refs, [g.double() for g in grads_out])

    assert len(outs) == len(refs)
    for layer, (out, ref) in enumerate(zip(outs, refs)):
        check(f"{case} raw[{layer}]", out, ref, seed)
    for name, a, b in zip(["codes", "lin_w", "lin_b", "conv_w", "conv_b"], ours, ref_in):
        check(f"{case} d{name}", a.grad, b.grad, seed)
    # per-layer output weights and biases: checked over all layers at once (an O_l = 1 layer's bias gradient
    # is one sum that can fall arbitrarily close to 0, where a relative error means nothing)
    check(f"{case} d out_w", flat_grads(ours_w), flat_grads(ref_w), seed)
    check(f"{case} d out_b", flat_grads(ours_b), flat_grads(ref_b), seed)


# ---------------------------------------------------------------------------------- dispatch and launch counts


@pytest.mark.parametrize("device", DEVICES)
def test_forced_kernels_match_and_fuse(device, seed):
    """use_triton(True / False) routes hotpath.ahru / hotpath.generate to the kernels / the eager reference: same
    numbers, and the launch counts of the fused path (AHRU 1 forward + 2 backward; a generator group 2 + 2),
    whatever L is."""
    gen = torch.Generator().manual_seed(seed)
    batch, emb, hidden, steps, k = 2, 24, 16, 11, 3
    sizes = [random.Random(seed).randint(1, 40) for _ in range(steps)]
    ahru_in = ahru_inputs(batch, emb, gen)
    stacked, out_w, out_b = generator_inputs(batch, steps, emb, hidden, k, sizes, gen)
    results = {}
    for mode in (False, True):
        a_in = leaves(ahru_in, torch.float32, device)
        g_in = leaves(stacked, torch.float32, device)
        g_w, g_b = leaves(out_w, torch.float32, device), leaves(out_b, torch.float32, device)
        with hotpath.use_triton(mode):
            with _common.count_launches() as fwd:
                r = hotpath.ahru(*a_in, 0.3, steps)
                raws = hotpath.generate(r, *g_in[1:], g_w, g_b, k)
            loss = sum((raw * raw).sum() for raw in raws) + r.sum()
            with _common.count_launches() as bwd:
                loss.backward()
        grads = [t.grad for t in a_in + g_in[1:]] + [flat_grads(g_w), flat_grads(g_b)]
        results[mode] = (r, raws, grads, dict(fwd), dict(bwd))

    r_e, raws_e, grads_e, fwd_e, bwd_e = results[False]
    r_t, raws_t, grads_t, fwd_t, bwd_t = results[True]
    assert fwd_e == {} and bwd_e == {}, "eager mode launched Triton kernels"
    assert fwd_t == {"_ahru_fwd_kernel": 1, "_gen_hidden_fwd_kernel": 1, "_gen_out_fwd_kernel": 1}
    assert bwd_t == {"_ahru_bwd_kernel": 1, "_ahru_wgrad_kernel": 1, "_gen_out_bwd_kernel": 1,
                     "_gen_hidden_bwd_kernel": 1}
    check("dispatch r'", r_t, r_e, seed)
    for i, (a, b) in enumerate(zip(raws_t, raws_e)):
        check(f"dispatch raw[{i}]", a, b, seed)
    for i, (a, b) in enumerate(zip(grads_t, grads_e)):
        check(f"dispatch grad[{i}]", a, b, seed)


@pytest.mark.parametrize("device", DEVICES)
def test_unused_outputs(device, seed):
    """A loss that uses one layer's output alone (autograd hands the others' gradients over as None, since the
    ops make up no zero gradients): the kernels' gradients are the eager reference's."""
    gen = torch.Generator().manual_seed(seed)
    stacked, out_w, out_b = generator_inputs(2, 3, 20, 16, 3, [40, 3, 100], gen)
    grads = {}
    for mode in (False, True):
        inputs = leaves([*stacked, *out_w, *out_b], torch.float32, device)
        with hotpath.use_triton(mode):
            raws = hotpath.generate(*inputs[:5], inputs[5:8], inputs[8:], 3)
            (raws[1] ** 2).sum().backward()
        grads[mode] = torch.cat([t.grad.flatten() for t in inputs])
    check("unused outputs", grads[True], grads[False], seed)


@pytest.mark.parametrize("device", DEVICES)
def test_device_dispatch_default(device):
    """Without the hook, CPU tensors take the eager kernel (no launch), CUDA tensors the Triton one; float64
    stays on the eager reference everywhere."""
    gen = torch.Generator().manual_seed(0)
    inputs = [t.to(device) for t in ahru_inputs(2, 16, gen)]
    with _common.count_launches() as launches:
        hotpath.ahru(*inputs, 0.3, 3)
    assert sum(launches.values()) == (1 if device == "cuda" else 0)
    with _common.count_launches() as launches:
        hotpath.ahru(*[t.double() for t in inputs], 0.3, 3)
    assert sum(launches.values()) == 0


@pytest.mark.parametrize("device", DEVICES)
def test_poison_marks_unwritten_elements(device):
    """The poison hook itself: a launcher buffer is NaN until written, and rel_err flags it."""
    buf = _common.buffer((3, 4), device)
    assert torch.isnan(buf).all()
    assert rel_err(buf, torch.ones(3, 4)) == float("inf")


@pytest.mark.parametrize("device", DEVICES)
def test_model_generators_take_the_triton_path(device, seed):
    """The model's own generator module (ConvNet-3 specs: a k=3 and a k=1 group) through the Triton kernels
    gives the eager numbers, outputs and parameter gradients."""
    from pudnet.model.generators import WeightGenerators
    from pudnet.targets import make_target

    torch.manual_seed(seed)
    specs = make_target("convnet3").specs()
    module = WeightGenerators(specs, 24, 16).to(device)
    codes = torch.randn(2, len(specs), 24, device=device)
    results = {}
    for mode in (False, True):
        module.zero_grad()
        c = codes.clone().requires_grad_()
        with hotpath.use_triton(mode), _common.count_launches() as launches:
            raws = module(c)
            sum((r * r).sum() for r in raws).backward()
        results[mode] = (raws, [c.grad] + [p.grad for p in module.parameters()], sum(launches.values()))
    (raws_e, grads_e, n_e), (raws_t, grads_t, n_t) = results[False], results[True]
    assert n_e == 0 and n_t == 4 * len(module.groups)
    for spec, a, b in zip(specs, raws_t, raws_e):
        assert a.shape == (2, *spec.shape)
        check(f"model {spec.name}", a, b, seed)
    check("model grads", torch.cat([g.flatten() for g in grads_t]), torch.cat([g.flatten() for g in grads_e]), seed)


# ------------------------------------------------------------------------------- the ops' fake kernels


def _ahru_call(device, seed):
    gen = torch.Generator().manual_seed(seed)
    return (*leaves(ahru_inputs(2, 24, gen), torch.float32, device), 0.3, 5)


def _generate_call(device, seed):
    gen = torch.Generator().manual_seed(seed)
    stacked, out_w, out_b = generator_inputs(2, 3, 20, 16, 3, [40, 3, 100], gen)
    return (*leaves(stacked, torch.float32, device), leaves(out_w, torch.float32, device),
            leaves(out_b, torch.float32, device), 3)


OP_CALLS = {"ahru": _ahru_call, "generate": _generate_call}


@pytest.mark.parametrize("op", list(OP_CALLS))
def test_fake_kernels_describe_the_triton_path(op, seed):
    """The fake kernel of a CUDA call (the Triton path: its result and the residuals its backward reads) has the
    shapes and dtypes the Triton kernels give; checked on CPU tensors in the interpreter, against fake CUDA
    tensors."""
    if ON_GPU:
        pytest.skip("the CUDA variant is test_opcheck_cuda")
    from torch._subclasses.fake_tensor import FakeTensorMode

    args = OP_CALLS[op]("cpu", seed)
    overload = getattr(torch.ops.pudnet, op).default
    with hotpath.use_triton(True):
        real = overload(*args)
    with FakeTensorMode():
        fake = overload(*[_on_fake_cuda(a) for a in args])
    real_leaves, fake_leaves = torch.utils._pytree.tree_leaves(real), torch.utils._pytree.tree_leaves(fake)
    assert len(real_leaves) == len(fake_leaves)
    for r, f in zip(real_leaves, fake_leaves):
        assert (r.shape, r.dtype, r.stride()) == (f.shape, f.dtype, f.stride())


def _on_fake_cuda(value):
    if isinstance(value, list):
        return [_on_fake_cuda(v) for v in value]
    if isinstance(value, torch.Tensor):
        return torch.empty(value.shape, dtype=value.dtype, device="cuda").requires_grad_(value.requires_grad)
    return value


@pytest.mark.parametrize("op", list(OP_CALLS))
def test_opcheck_cuda(op, seed):
    """torch.library.opcheck on CUDA tensors: schema, autograd registration, fake kernel against the Triton
    kernels, and AOT dispatch with dynamic shapes (forward and backward)."""
    if not ON_GPU:
        pytest.skip("no CUDA device with compiled Triton kernels (the CPU variant is "
                    "test_fake_kernels_describe_the_triton_path)")
    torch.library.opcheck(getattr(torch.ops.pudnet, op).default, OP_CALLS[op]("cuda", seed))
