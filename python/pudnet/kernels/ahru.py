"""Fused AHRU recurrence: the whole L-step recurrence in one Triton launch forward, two backward.

Numerical contract: ``pudnet.model.hotpath.ahru_eager`` (same arguments and semantics). Per step ``t``::

    z = σ(x W_xz + b_xz + h W_hz + b_hz)          g = σ(x W_xg + b_xg + h W_hg + b_hg)
    hn = h W_hn + b_hn                            n = tanh(x W_xn + b_xn + g ⊙ hn)
    h  = (1 − z) ⊙ n + z ⊙ h                      x = r'_t = (1 − α) h + α e

Forward (``_ahru_fwd_kernel``, one launch): each program owns ``BLOCK_B`` batch rows and walks the L steps.
The state of step ``t`` is written to global memory (``out`` holds ``x_t = r'_t``, ``hs`` holds ``h_t``; both
are needed by the backward anyway) and re-read, chunk by chunk of ``E``, as the input of step ``t + 1``; a
block barrier separates the steps, so any ``E`` works (no power-of-two or register-size limit). The gates
``z, g, n, hn`` of every step are saved too (``[B, L, 4, E]``, tiny), so the backward needs no recompute.
All products accumulate in fp32 (``tl.dot(..., input_precision="ieee")``: no TF32, the 1e-5 contract).
With fewer than 16 rows per program the products are broadcast-multiply-reduce instead of ``tl.dot``, so
meta-batch 1 does not pay for 15 padded rows.

Backward: the recurrence part is inherently sequential in time and runs in one launch
(``_ahru_bwd_kernel``) walking the steps in reverse with the carried ``dh``/``dx`` in global scratch (the
``dh0`` and ``dx_{-1}`` output buffers themselves); it writes the gate pre-activation gradients
``dA_x, dA_h`` ``[B, L, 3E]``. The weight gradients ``dW = Σ_{b,t} input_{b,t}ᵀ dA_{b,t}`` and the bias
gradients are a reduction over all B·L rows that is parallel, not sequential, so a second launch
(``_ahru_wgrad_kernel``) computes them as one tiled GEMM over the B·L rows instead of accumulating them
step by step inside the serial loop (which would either serialise them on one program or need atomics).
It also reduces ``dx0 = Σ_b dx_{-1}``. Backward = 2 launches whatever L is.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._common import buffer, check_device, interpreting, launch, next_pow2

# Notes on the kernel code: device-function calls are inlined by hand and loop-invariant index arithmetic
# is hoisted, because Triton's interpreter (the CI path) re-patches the language on every device-function
# call and pays ~0.3 ms per operation; on a GPU the compiler would have done both anyway.
# tanh is written through tl.sigmoid: tl.tanh does not exist and libdevice's tanh fails in the interpreter.

# --------------------------------------------------------------------------------------------------- forward


@triton.jit
def _ahru_fwd_kernel(
    e_ptr, h0_ptr, x0_ptr, wx_ptr, wh_ptr, bx_ptr, bh_ptr,  # inputs (contiguous fp32)
    out_ptr, hs_ptr, gates_ptr,  # outputs: out [B, L, E] = r'; hs [B, L, E] = h; gates [B, L, 4, E]
    B, E, L, alpha,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    E3 = 3 * E
    rn = tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    seq_k = rows[:, None] * (L * E) + rk[None, :]  # [BB, BK] offsets into out / hs at step 0, column 0
    seq_n = rows[:, None] * (L * E) + rn[None, :]
    vec_k = rows[:, None] * E + rk[None, :]  # [BB, BK] offsets into e / h0
    vec_n = rows[:, None] * E + rn[None, :]
    gate_n = rows[:, None] * (4 * L * E) + rn[None, :]
    w_kn = rk[:, None] * E3 + rn[None, :]  # [BK, BN] offsets into a gate block of W
    for t in range(L):
        first = t == 0
        later = t > 0
        for n0 in range(0, E, BLOCK_N):
            cmask = (n0 + rn) < E
            m_out = rmask[:, None] & cmask[None, :]
            acc_z = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
            acc_g = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
            acc_xn = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
            acc_hn = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
            for k0 in range(0, E, BLOCK_K):
                kmask = (k0 + rk) < E
                m_in = rmask[:, None] & kmask[None, :]
                # the step's input x and state h: x0 / h0 at the first step, the previous step's r' / h after
                prev = seq_k + ((t - 1) * E + k0)
                xp = tl.load(out_ptr + prev, mask=m_in & later, other=0.0)
                xp += tl.load(x0_ptr + k0 + rk, mask=kmask & first, other=0.0)[None, :]
                hp = tl.load(hs_ptr + prev, mask=m_in & later, other=0.0)
                hp += tl.load(h0_ptr + vec_k + k0, mask=m_in & first, other=0.0)
                m_w = kmask[:, None] & cmask[None, :]
                wx = wx_ptr + (w_kn + (k0 * E3 + n0))
                wh = wh_ptr + (w_kn + (k0 * E3 + n0))
                wxz = tl.load(wx, mask=m_w, other=0.0)
                whz = tl.load(wh, mask=m_w, other=0.0)
                wxg = tl.load(wx + E, mask=m_w, other=0.0)
                whg = tl.load(wh + E, mask=m_w, other=0.0)
                wxn = tl.load(wx + 2 * E, mask=m_w, other=0.0)
                whn = tl.load(wh + 2 * E, mask=m_w, other=0.0)
                if USE_DOT:
                    acc_z = tl.dot(xp, wxz, acc_z, input_precision="ieee")
                    acc_z = tl.dot(hp, whz, acc_z, input_precision="ieee")
                    acc_g = tl.dot(xp, wxg, acc_g, input_precision="ieee")
                    acc_g = tl.dot(hp, whg, acc_g, input_precision="ieee")
                    acc_xn = tl.dot(xp, wxn, acc_xn, input_precision="ieee")
                    acc_hn = tl.dot(hp, whn, acc_hn, input_precision="ieee")
                else:  # fewer than 16 rows: broadcast products, no padded rows
                    x3 = xp[:, :, None]
                    h3 = hp[:, :, None]
                    acc_z += tl.sum(x3 * wxz[None, :, :] + h3 * whz[None, :, :], axis=1)
                    acc_g += tl.sum(x3 * wxg[None, :, :] + h3 * whg[None, :, :], axis=1)
                    acc_xn += tl.sum(x3 * wxn[None, :, :], axis=1)
                    acc_hn += tl.sum(h3 * whn[None, :, :], axis=1)
            c = n0 + rn
            bz = tl.load(bx_ptr + c, mask=cmask, other=0.0) + tl.load(bh_ptr + c, mask=cmask, other=0.0)
            bg = tl.load(bx_ptr + E + c, mask=cmask, other=0.0) + tl.load(bh_ptr + E + c, mask=cmask, other=0.0)
            bxn = tl.load(bx_ptr + 2 * E + c, mask=cmask, other=0.0)
            bhn = tl.load(bh_ptr + 2 * E + c, mask=cmask, other=0.0)
            z = tl.sigmoid(acc_z + bz[None, :])
            g = tl.sigmoid(acc_g + bg[None, :])
            hn = acc_hn + bhn[None, :]
            n = 2.0 * tl.sigmoid(2.0 * (acc_xn + bxn[None, :] + g * hn)) - 1.0  # tanh
            cur = seq_n + (t * E + n0)
            h_old = tl.load(hs_ptr + cur - E, mask=m_out & later, other=0.0)
            h_old += tl.load(h0_ptr + vec_n + n0, mask=m_out & first, other=0.0)
            e = tl.load(e_ptr + vec_n + n0, mask=m_out, other=0.0)
            h_new = (1.0 - z) * n + z * h_old
            tl.store(hs_ptr + cur, h_new, mask=m_out)
            tl.store(out_ptr + cur, (1.0 - alpha) * h_new + alpha * e, mask=m_out)
            gate = gate_n + (t * 4 * E + n0)
            tl.store(gates_ptr + gate, z, mask=m_out)
            tl.store(gates_ptr + gate + E, g, mask=m_out)
            tl.store(gates_ptr + gate + 2 * E, n, mask=m_out)
            tl.store(gates_ptr + gate + 3 * E, hn, mask=m_out)
        # step t's state must be visible to every thread of the program before step t + 1 reads it
        tl.debug_barrier()


# -------------------------------------------------------------------------------------------------- backward


@triton.jit
def _ahru_bwd_kernel(
    dout_ptr, h0_ptr, wx_ptr, wh_ptr, hs_ptr, gates_ptr,  # inputs
    dax_ptr, dah_ptr,  # outputs [B, L, 3E]: gradients of the gate pre-activations (x side, h side)
    dx_ptr, dh_ptr, de_ptr,  # outputs [B, E]: dx_{-1} (→ dx0), dh0, de; dx/dh double as the carries
    B, E, L, alpha,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_DOT: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    E3 = 3 * E
    rn = tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    vec_n = rows[:, None] * E + rn[None, :]
    seq_n = rows[:, None] * (L * E) + rn[None, :]
    gate_n = rows[:, None] * (4 * L * E) + rn[None, :]
    da_n = rows[:, None] * (L * E3) + rn[None, :]
    da_k = rows[:, None] * (L * E3) + rk[None, :]
    wt_kn = rn[None, :] * E3 + rk[:, None]  # [BK, BN] offsets of a Wᵀ tile
    zero = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
    for n0 in range(0, E, BLOCK_N):
        m = rmask[:, None] & ((n0 + rn) < E)[None, :]
        tl.store(dx_ptr + vec_n + n0, zero, mask=m)
        tl.store(dh_ptr + vec_n + n0, zero, mask=m)
        tl.store(de_ptr + vec_n + n0, zero, mask=m)
    tl.debug_barrier()
    for i in range(L):
        t = L - 1 - i
        first = t == 0
        later = t > 0
        # phase 1, elementwise per chunk of E: the gradients of the gate pre-activations of step t
        for n0 in range(0, E, BLOCK_N):
            m = rmask[:, None] & ((n0 + rn) < E)[None, :]
            vec = vec_n + n0
            cur = seq_n + (t * E + n0)
            dxt = tl.load(dout_ptr + cur, mask=m, other=0.0) + tl.load(dx_ptr + vec, mask=m, other=0.0)
            dh = tl.load(dh_ptr + vec, mask=m, other=0.0) + (1.0 - alpha) * dxt
            tl.store(de_ptr + vec, tl.load(de_ptr + vec, mask=m, other=0.0) + alpha * dxt, mask=m)
            gate = gate_n + (t * 4 * E + n0)
            z = tl.load(gates_ptr + gate, mask=m, other=0.0)
            g = tl.load(gates_ptr + gate + E, mask=m, other=0.0)
            n = tl.load(gates_ptr + gate + 2 * E, mask=m, other=0.0)
            hn = tl.load(gates_ptr + gate + 3 * E, mask=m, other=0.0)
            h_prev = tl.load(hs_ptr + cur - E, mask=m & later, other=0.0)
            h_prev += tl.load(h0_ptr + vec, mask=m & first, other=0.0)
            d_n = dh * (1.0 - z) * (1.0 - n * n)  # through tanh
            d_z = dh * (h_prev - n) * z * (1.0 - z)
            d_g = d_n * hn * g * (1.0 - g)
            da = da_n + (t * E3 + n0)
            tl.store(dax_ptr + da, d_z, mask=m)
            tl.store(dax_ptr + da + E, d_g, mask=m)
            tl.store(dax_ptr + da + 2 * E, d_n, mask=m)
            tl.store(dah_ptr + da, d_z, mask=m)
            tl.store(dah_ptr + da + E, d_g, mask=m)
            tl.store(dah_ptr + da + 2 * E, d_n * g, mask=m)
            tl.store(dh_ptr + vec, dh * z, mask=m)  # the direct path h_{t-1} → h_t
        tl.debug_barrier()
        # phase 2: dx_{t-1} = dA_x W_xᵀ, dh_{t-1} += dA_h W_hᵀ (contraction over all 3E gate columns)
        for n0 in range(0, E, BLOCK_N):
            cmask = (n0 + rn) < E
            m = rmask[:, None] & cmask[None, :]
            acc_x = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
            acc_h = tl.zeros([BLOCK_B, BLOCK_N], dtype=tl.float32)
            for j0 in range(0, E3, BLOCK_K):
                jmask = (j0 + rk) < E3
                m_a = rmask[:, None] & jmask[None, :]
                m_w = jmask[:, None] & cmask[None, :]
                a_off = da_k + (t * E3 + j0)
                w_off = wt_kn + (n0 * E3 + j0)
                ax = tl.load(dax_ptr + a_off, mask=m_a, other=0.0)
                ah = tl.load(dah_ptr + a_off, mask=m_a, other=0.0)
                wx = tl.load(wx_ptr + w_off, mask=m_w, other=0.0)
                wh = tl.load(wh_ptr + w_off, mask=m_w, other=0.0)
                if USE_DOT:
                    acc_x = tl.dot(ax, wx, acc_x, input_precision="ieee")
                    acc_h = tl.dot(ah, wh, acc_h, input_precision="ieee")
                else:
                    acc_x += tl.sum(ax[:, :, None] * wx[None, :, :], axis=1)
                    acc_h += tl.sum(ah[:, :, None] * wh[None, :, :], axis=1)
            vec = vec_n + n0
            tl.store(dx_ptr + vec, acc_x, mask=m)
            tl.store(dh_ptr + vec, tl.load(dh_ptr + vec, mask=m, other=0.0) + acc_h, mask=m)
        tl.debug_barrier()


@triton.jit
def _ahru_wgrad_kernel(
    x0_ptr, h0_ptr, out_ptr, hs_ptr, dax_ptr, dah_ptr, dxm1_ptr,  # inputs
    dwx_ptr, dwh_ptr, dbx_ptr, dbh_ptr, dx0_ptr,  # outputs
    B, E, L,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """Axis 2 picks the job: 0 → dW_x, db_x; 1 → dW_h, db_h; 2 → dx0 = Σ_b dx_{-1}[b].

    dW[m, n] = Σ_r in[r, m] dA[r, n], db[n] = Σ_r dA[r, n] over the B·L rows r = (b, t), where the step's
    input ``in`` is x0 / h0[b] at t = 0 and r'[b, t-1] / h[b, t-1] after.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    which = tl.program_id(2)
    E3 = 3 * E
    ms = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = ms < E
    rr = tl.arange(0, BLOCK_R)
    if which < 2:
        if which == 0:
            first_ptr = x0_ptr
            first_stride = 0 * E  # x0 is the input of step 0 for every row
            prev_ptr = out_ptr
            d_ptr = dax_ptr
            dw_ptr = dwx_ptr
            db_ptr = dbx_ptr
        else:
            first_ptr = h0_ptr
            first_stride = 1 * E
            prev_ptr = hs_ptr
            d_ptr = dah_ptr
            dw_ptr = dwh_ptr
            db_ptr = dbh_ptr
        ns = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = ns < E3
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        bacc = tl.zeros([BLOCK_N], dtype=tl.float32)
        for r0 in range(0, B * L, BLOCK_R):
            rs = r0 + rr
            rmask = rs < B * L
            t = rs % L
            m_in = rmask[:, None] & mmask[None, :]
            inp = tl.load(prev_ptr + (rs[:, None] - 1) * E + ms[None, :], mask=m_in & (t > 0)[:, None], other=0.0)
            inp += tl.load(first_ptr + (rs // L)[:, None] * first_stride + ms[None, :],
                           mask=m_in & (t == 0)[:, None], other=0.0)
            d = tl.load(d_ptr + rs[:, None] * E3 + ns[None, :], mask=rmask[:, None] & nmask[None, :], other=0.0)
            acc = tl.dot(tl.trans(inp), d, acc, input_precision="ieee")
            bacc += tl.sum(d, axis=0)
        tl.store(dw_ptr + ms[:, None] * E3 + ns[None, :], acc, mask=mmask[:, None] & nmask[None, :])
        tl.store(db_ptr + ns, bacc, mask=nmask & (pid_m == 0))
    else:
        acc0 = tl.zeros([BLOCK_M], dtype=tl.float32)
        for r0 in range(0, B, BLOCK_R):
            rs = r0 + rr
            acc0 += tl.sum(tl.load(dxm1_ptr + rs[:, None] * E + ms[None, :],
                                   mask=(rs < B)[:, None] & mmask[None, :], other=0.0), axis=0)
        tl.store(dx0_ptr + ms, acc0, mask=mmask & (pid_n == 0))


# ------------------------------------------------------------------------------------------------- launchers


# Block-size overrides, for the tests (small blocks exercise the multi-chunk and masked paths).
OVERRIDE: dict = {}


def _config(batch: int, emb: int) -> dict:
    """Block sizes. Rows per program: 16 (tl.dot) from meta-batch 16 up, else the next power of two
    (broadcast products, no padded rows)."""
    if batch >= 16:
        block_b, use_dot = 16, True
    else:
        # the interpreter has no 16-minimum for tl.dot and its tl.sum is slow: dot there (the tests force
        # the broadcast branch on a small case through OVERRIDE)
        block_b, use_dot = next_pow2(batch), interpreting()
    if interpreting():  # one chunk up to E = 128: the interpreter pays per operation, not per element
        block_n = block_k = min(128, max(16, next_pow2(emb)))
    else:
        # Not timed yet (no GPU where this was written). Chosen from ahead-of-time sm_90 compiles (ptxas -v):
        # 64×32 tiles with 8 warps are the largest that compile without register spills on both paths.
        block_n, block_k = 64, (32 if use_dot else 16)
    cfg = dict(BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_K=block_k, USE_DOT=use_dot, num_warps=8, num_stages=1)
    cfg.update({k: v for k, v in OVERRIDE.items() if k in cfg})
    return cfg


def check_shapes(e, h0, x0, w_x, w_h, b_x, b_h, steps: int) -> None:
    """The shapes of ``hotpath.ahru_eager``."""
    if e.dim() != 2:
        raise ValueError(f"e must be [B, E], got {tuple(e.shape)}")
    batch, emb = e.shape
    expected = {"h0": (h0, (batch, emb)), "x0": (x0, (emb,)), "w_x": (w_x, (emb, 3 * emb)),
                "w_h": (w_h, (emb, 3 * emb)), "b_x": (b_x, (3 * emb,)), "b_h": (b_h, (3 * emb,))}
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must be {list(shape)}, got {list(t.shape)}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")


def ahru_forward(e, h0, x0, w_x, w_h, b_x, b_h, alpha: float, steps: int):
    """Launch the fused forward on contiguous float32 tensors; returns ``(out [B, L, E], hs [B, L, E],
    gates [B, L, 4, E])`` in float32 (``hs`` and ``gates`` are what the backward reads)."""
    device = check_device(e, h0, x0, w_x, w_h, b_x, b_h)
    batch, emb = e.shape
    steps = int(steps)
    out = buffer((batch, steps, emb), device)
    hs = buffer((batch, steps, emb), device)
    gates = buffer((batch, steps, 4, emb), device)
    cfg = _config(batch, emb)
    grid = (triton.cdiv(batch, cfg["BLOCK_B"]),)
    launch(_ahru_fwd_kernel, grid, e, h0, x0, w_x, w_h, b_x, b_h, out, hs, gates,
           batch, emb, steps, float(alpha), **cfg)
    return out, hs, gates


def ahru_backward(dout, e, h0, x0, w_x, w_h, out, hs, gates, alpha: float):
    """Gradients ``(de, dh0, dx0, dw_x, dw_h, db_x, db_h)`` in two launches (contiguous float32 in and out)."""
    device = e.device
    batch, steps, emb = out.shape
    dax = buffer((batch, steps, 3 * emb), device)
    dah = buffer((batch, steps, 3 * emb), device)
    dxm1 = buffer((batch, emb), device)
    dh0 = buffer((batch, emb), device)
    de = buffer((batch, emb), device)
    cfg = _config(batch, emb)
    launch(_ahru_bwd_kernel, (triton.cdiv(batch, cfg["BLOCK_B"]),), dout, h0, w_x, w_h, hs, gates,
           dax, dah, dxm1, dh0, de, batch, emb, steps, float(alpha), **cfg)
    dwx = buffer((emb, 3 * emb), device)
    dwh = buffer((emb, 3 * emb), device)
    dbx = buffer((3 * emb,), device)
    dbh = buffer((3 * emb,), device)
    dx0 = buffer((emb,), device)
    bm = OVERRIDE.get("WGRAD_BLOCK", 128 if interpreting() else 64)
    grid = (triton.cdiv(emb, bm), triton.cdiv(3 * emb, bm), 3)
    launch(_ahru_wgrad_kernel, grid, x0, h0, out, hs, dax, dah, dxm1, dwx, dwh, dbx, dbh, dx0,
           batch, emb, steps, BLOCK_M=bm, BLOCK_N=bm, BLOCK_R=32)
    return de, dh0, dx0, dwx, dwh, dbx, dbh
