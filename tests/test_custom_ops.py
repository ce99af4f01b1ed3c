"""The hot path's custom ops (``pudnet.model.hotpath``) on CPU: registered, self-consistent (torch.library.opcheck),
the eager reference's numbers and gradients bit for bit — in float32 and under bf16 autocast — and traceable by
torch.compile as one op each. The Triton kernels behind the ops are tested in test_kernels.py."""

from __future__ import annotations

import pytest
import torch

from pudnet.model import hotpath

EMB, HIDDEN, ALPHA = 8, 4, 0.3
SIZES = [5, 7, 1]  # O_l of the generator layers; AHRU steps = len(SIZES)
# (meta-batch, kernel size k); with one task and k = 1 some gradients are views of the incoming ones, which a
# custom op may not return
SHAPES = {"B2-k3": (2, 3), "B1-k1": (1, 1)}


def _inputs(shape: str = "B2-k3", seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)

    def t(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).requires_grad_()

    batch, k = SHAPES[shape]
    e, layers, hkk = EMB, len(SIZES), HIDDEN * k * k
    return {"k": k, 
        "ahru": [t(batch, e), t(batch, e, scale=0.5), t(e, scale=0.5), t(e, 3 * e, scale=e ** -0.5),
                 t(e, 3 * e, scale=e ** -0.5), t(3 * e, scale=0.3), t(3 * e, scale=0.3)],
        "generators": [t(layers, e, hkk, scale=e ** -0.5), t(layers, hkk, scale=0.1),
                       t(layers, HIDDEN, HIDDEN, 3, 3, scale=(9 * HIDDEN) ** -0.5), t(layers, HIDDEN, scale=0.1)],
        "out_w": [t(o, HIDDEN, scale=HIDDEN ** -0.5) for o in SIZES],
        "out_b": [t(o, scale=0.1) for o in SIZES],
        "codes": t(batch, layers, e),
    }


def _op_args(op: str, x: dict) -> tuple:
    if op == "ahru":
        return (*x["ahru"], ALPHA, len(SIZES))
    return (x["codes"], *x["generators"], x["out_w"], x["out_b"], x["k"])


def _hot_path(ahru, generate, x: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The model's use: the AHRU's codes feed the generators; returns the codes and the raw outputs."""
    codes = ahru(*x["ahru"], ALPHA, len(SIZES))
    return codes, generate(codes, *x["generators"], x["out_w"], x["out_b"], x["k"])


def _loss(codes: torch.Tensor, raws: list[torch.Tensor]) -> torch.Tensor:
    return codes.float().sum() + sum((raw.float() ** 2).sum() for raw in raws)


def _leaves(x: dict) -> list[torch.Tensor]:
    return [*x["ahru"], *x["generators"], *x["out_w"], *x["out_b"]]


def test_ops_are_registered():
    for name in ("ahru", "ahru_backward", "generate", "generate_backward"):
        assert isinstance(getattr(torch.ops.pudnet, name).default, torch._ops.OpOverload)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("op", ["ahru", "generate"])
def test_opcheck(op, autocast, shape):
    """Schema, autograd registration, fake kernel against the CPU kernel, and AOT dispatch with dynamic shapes
    (forward and backward through the backward op)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        torch.library.opcheck(getattr(torch.ops.pudnet, op).default, _op_args(op, _inputs(shape)))


@pytest.mark.parametrize("op", ["ahru_backward", "generate_backward"])
def test_opcheck_backward_ops(op):
    x = _inputs()
    with torch.no_grad():
        args = _op_args(op.removesuffix("_backward"), x)
        out, residuals = getattr(torch.ops.pudnet, op.removesuffix("_backward"))(*args)
    detached = [[t.detach() for t in a] if isinstance(a, list) else a.detach() if isinstance(a, torch.Tensor)
                else a for a in args]
    if op == "ahru_backward":
        call = (torch.randn_like(out), *detached[:7], out, residuals, *detached[7:])
    else:
        call = ([torch.randn_like(r) for r in out], *detached[:7], residuals, *detached[7:])
    torch.library.opcheck(getattr(torch.ops.pudnet, op).default, call)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_cpu_ops_are_the_eager_reference(autocast, shape):
    """On CPU the ops' outputs and gradients equal the eager reference's bit for bit (the CPU kernel is the
    reference, the backward its VJP), with the reference's dtypes: under bf16 autocast the AHRU's state stays in
    float32 (type promotion with its float32 biases) and the generators' outputs come out in bfloat16."""
    results = []
    for ahru, generate in ((hotpath.ahru, hotpath.generate), (hotpath.ahru_eager, hotpath.generate_eager)):
        x = _inputs(shape)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            codes, raws = _hot_path(ahru, generate, x)
        _loss(codes, raws).backward()
        results.append(([codes, *raws], [t.grad for t in _leaves(x)]))
    (outs, grads), (ref_outs, ref_grads) = results
    assert outs[0].dtype == torch.float32
    assert {r.dtype for r in outs[1:]} == {torch.bfloat16 if autocast else torch.float32}
    for a, b in zip(outs + grads, ref_outs + ref_grads):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_autocast_reaches_the_op_as_an_argument():
    """Autocast's dtype becomes the op's ``autocast_dtype`` argument (what compiled graphs record), and float64
    inputs, which autocast leaves alone, get none."""
    seen = []

    class Spy(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.pudnet.ahru.default:
                seen.append(args[9] if len(args) > 9 else None)
            return func(*args, **(kwargs or {}))

    x = _inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), Spy():
        hotpath.ahru(*x["ahru"], ALPHA, 3)
        hotpath.ahru(*[t.double() for t in x["ahru"]], ALPHA, 3)
    assert seen == [torch.bfloat16, None]


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile_fullgraph(backend):
    """torch.compile(fullgraph=True) of the hot path: one node per op in the traced graph, the eager numbers
    and gradients, in float32 and under bf16 autocast. aot_eager (Dynamo, the fake kernels, AOTAutograd) takes
    ~1.5 s here; inductor adds C++ code generation (~10 s cold on this 2-CPU machine), hence slow."""
    graphs = []

    def recording(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend(backend)(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(lambda x: _loss(*_hot_path(hotpath.ahru, hotpath.generate, x)), fullgraph=True,
                             backend=recording)
    for autocast in (False, True):
        results = []
        for fn in (compiled, lambda x: _loss(*_hot_path(hotpath.ahru, hotpath.generate, x))):
            x = _inputs()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = fn(x)
            loss.backward()
            results.append([loss.detach(), *[t.grad for t in _leaves(x)]])
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    targets = [node.target for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert targets.count(torch.ops.pudnet.ahru) == 1
    assert targets.count(torch.ops.pudnet.generate) == 1
