"""Batched weight generators: all layers of a group, for a batch of tasks, in two launches forward, two backward.

Numerical contract: ``pudnet.model.hotpath.generate_eager`` (same arguments, same returned list). Per layer
``l`` of a group sharing the kernel size ``k`` (``KK = k·k`` positions)::

    a = reshape(codes[:, l] @ lin_w[l] + lin_b[l], [B, H, k, k])
    c = leaky_relu(conv3x3(a, conv_w[l], conv_b[l], padding=1), 0.2)
    raw[b, o, p] = Σ_c out_w[l][o, c] c[b, c, p] + out_b[l][o]

Two very different stages, so two launches (instead of eager's ~5 per layer):

1. ``_gen_hidden_fwd_kernel`` — grid ``(L,)``: the small per-layer part (linear + 3×3 conv + LeakyReLU) of
   every layer for all B tasks. The linear is a tiled ``tl.dot`` written to ``a`` ``[L, B, H·KK]`` (saved
   for the backward); after a block barrier the convolution is 9 shifted ``tl.dot`` taps that gather the
   shifted ``a`` straight from global memory (padding by masks) into ``c`` ``[L, H, B·KK]``.
2. ``_gen_out_fwd_kernel`` — the big part, a grouped GEMM over all layers at once: a table of tiles
   ``(layer, first output row)`` covers every layer's ``O_l`` rows (layers of any ``O_l`` share the launch,
   not only layers of equal shape), each program computing ``BLOCK_O × SUB`` rows for all ``B·KK`` columns.
   The per-layer ``out_w``/``out_b`` are reached through pointer tables (no concatenation of the
   generators' weights), and so are the per-layer outputs ``[B, O_l, k, k]``: separate tensors, because the
   outputs of a custom op (``pudnet::generate``) may not alias one another.

Why not one launch: stage 2 of layer ``l`` needs all of stage 1 of layer ``l``; fusing them would make every
stage-2 program recompute the linear and the conv (≈3× the work of a 64-row tile at meta-batch 16), and a
cross-program dependency inside one launch (spin-waiting on flags) can deadlock when not all programs are
resident. Two launches per group, whatever L is.

Backward (two launches): ``_gen_out_bwd_kernel`` on the same tile table gives ``d out_w``, ``d out_b``
(each tile owns its rows: no atomics) and a per-tile partial ``dc`` (a reduction over ``O_l`` that spans
tiles); ``_gen_hidden_bwd_kernel`` (grid ``(L,)``) sums its layer's partials in a fixed order
(deterministic, no atomics, no zero-fill launch), then goes back through the LeakyReLU, the conv (9 taps, the
input gradient gathered with the opposite shift) and the linear, giving ``d codes``, ``d lin_w``, ``d lin_b``,
``d conv_w``, ``d conv_b``. All products accumulate in fp32 (``input_precision="ieee"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._common import buffer, check_device, interpreting, launch, next_pow2

# Notes on the kernel code: loop-invariant index arithmetic is hoisted and there are no device-function
# calls, because Triton's interpreter (the CI path) pays per operation and re-patches per call.

# --------------------------------------------------------------------------------------------------- forward


@triton.jit
def _gen_hidden_fwd_kernel(
    codes_ptr, s_cb, s_cl, s_ce,  # codes [B, L, E] (any strides)
    lin_w_ptr, lin_b_ptr, conv_w_ptr, conv_b_ptr,  # [L, E, H·KK], [L, H·KK], [L, H, H, 3, 3], [L, H]
    a_ptr, c_ptr,  # outputs: a [L, B, H·KK] (linear), c [L, H, B·KK] (after conv + LeakyReLU)
    B, E, H,
    K: tl.constexpr, HP: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_R: tl.constexpr,
):
    l = tl.program_id(0)
    KK: tl.constexpr = K * K
    HKK = H * KK
    N = B * KK
    a_base = a_ptr + l * (B * HKK)
    # 1) a[b, j] = Σ_e codes[b, l, e] lin_w[l, e, j] + lin_b[l, j]
    rb = tl.arange(0, BLOCK_B)
    rj = tl.arange(0, BLOCK_J)
    re = tl.arange(0, BLOCK_E)
    cd_off = codes_ptr + l * s_cl + rb[:, None] * s_cb + re[None, :] * s_ce
    lw_off = lin_w_ptr + l * (E * HKK) + re[:, None] * HKK + rj[None, :]
    a_off = a_base + rb[:, None] * HKK + rj[None, :]
    for b0 in range(0, B, BLOCK_B):
        bmask = (b0 + rb) < B
        for j0 in range(0, HKK, BLOCK_J):
            jmask = (j0 + rj) < HKK
            acc = tl.zeros([BLOCK_B, BLOCK_J], dtype=tl.float32)
            for e0 in range(0, E, BLOCK_E):
                emask = (e0 + re) < E
                cd = tl.load(cd_off + (b0 * s_cb + e0 * s_ce), mask=bmask[:, None] & emask[None, :], other=0.0)
                w = tl.load(lw_off + (e0 * HKK + j0), mask=emask[:, None] & jmask[None, :], other=0.0)
                acc = tl.dot(cd, w, acc, input_precision="ieee")
            acc += tl.load(lin_b_ptr + l * HKK + j0 + rj, mask=jmask, other=0.0)[None, :]
            tl.store(a_off + (b0 * HKK + j0), acc, mask=bmask[:, None] & jmask[None, :])
    # a must be visible to every thread before the shifted gathers of the convolution
    tl.debug_barrier()
    # 2) c[co, (b, p)] = leaky(Σ_tap Σ_ci a[b, ci, p + d_tap] conv_w[l, co, ci, tap] + conv_b[l, co])
    ch = tl.arange(0, HP)
    hmask = ch < H
    rr = tl.arange(0, BLOCK_R)
    w_off = conv_w_ptr + l * (H * H * 9) + ch[None, :] * (H * 9) + ch[:, None] * 9  # [ci, co] of a tap
    w_mask = hmask[:, None] & hmask[None, :]
    cb = tl.load(conv_b_ptr + l * H + ch, mask=hmask, other=0.0)
    c_off = c_ptr + l * (H * N) + ch[None, :] * N + rr[:, None]
    a_col = a_base + ch[None, :] * KK
    for r0 in range(0, N, BLOCK_R):
        rs = r0 + rr
        rmask = rs < N
        b = rs // KK
        p = rs % KK
        py = p // K
        px = p % K
        acc = tl.zeros([BLOCK_R, HP], dtype=tl.float32)
        for tap in tl.static_range(9):
            # with k = 1 only the centre tap ever sees the (1×1) input; the others read padding only
            if K > 1 or tap == 4:
                qy = py + (tap // 3 - 1)
                qx = px + (tap % 3 - 1)
                valid = rmask & (qy >= 0) & (qy < K) & (qx >= 0) & (qx < K)
                ash = tl.load(a_col + (b * HKK + qy * K + qx)[:, None], mask=valid[:, None] & hmask[None, :],
                              other=0.0)
                acc = tl.dot(ash, tl.load(w_off + tap, mask=w_mask, other=0.0), acc, input_precision="ieee")
        acc += cb[None, :]
        tl.store(c_off + r0, tl.where(acc > 0, acc, 0.2 * acc), mask=rmask[:, None] & hmask[None, :])


@triton.jit
def _gen_out_fwd_kernel(
    c_ptr, tile_layer_ptr, tile_o0_ptr, o_ptr, w_tab_ptr, b_tab_ptr,  # tables
    y_tab_ptr,  # output: a table of every layer's raw [B, O_l, KK]
    B, H,
    KK: tl.constexpr, HP: tl.constexpr, BLOCK_O: tl.constexpr, SUB: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    layer = tl.load(tile_layer_ptr + pid)
    o_start = tl.load(tile_o0_ptr + pid)
    O = tl.load(o_ptr + layer)
    w_base = tl.load(w_tab_ptr + layer).to(tl.pointer_type(tl.float32))  # out_w[l] [O_l, H]
    b_base = tl.load(b_tab_ptr + layer).to(tl.pointer_type(tl.float32))  # out_b[l] [O_l]
    y_base = tl.load(y_tab_ptr + layer).to(tl.pointer_type(tl.float32))
    N = B * KK
    ch = tl.arange(0, HP)
    hmask = ch < H
    ro = tl.arange(0, BLOCK_O)
    rn = tl.arange(0, BLOCK_N)
    c_off = c_ptr + layer * (H * N) + ch[:, None] * N + rn[None, :]
    for s in range(SUB):
        os_ = o_start + s * BLOCK_O + ro
        omask = os_ < O
        w = tl.load(w_base + os_[:, None] * H + ch[None, :], mask=omask[:, None] & hmask[None, :], other=0.0)
        bias = tl.load(b_base + os_, mask=omask, other=0.0)
        y_row = y_base + os_[:, None] * KK
        for n0 in range(0, N, BLOCK_N):
            ns = n0 + rn
            nmask = ns < N
            c = tl.load(c_off + n0, mask=hmask[:, None] & nmask[None, :], other=0.0)
            y = tl.dot(w, c, input_precision="ieee") + bias[:, None]
            tl.store(y_row + ((ns // KK) * (O * KK) + ns % KK)[None, :], y, mask=omask[:, None] & nmask[None, :])


# -------------------------------------------------------------------------------------------------- backward


@triton.jit
def _gen_out_bwd_kernel(
    c_ptr, tile_layer_ptr, tile_o0_ptr, o_ptr, w_tab_ptr, dy_tab_ptr,  # inputs
    dw_tab_ptr, db_tab_ptr, part_ptr,  # outputs: tables of d out_w[l], d out_b[l]; partial dc [tiles, H, B·KK]
    B, H,
    KK: tl.constexpr, HP: tl.constexpr, BLOCK_O: tl.constexpr, SUB: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    layer = tl.load(tile_layer_ptr + pid)
    o_start = tl.load(tile_o0_ptr + pid)
    O = tl.load(o_ptr + layer)
    w_base = tl.load(w_tab_ptr + layer).to(tl.pointer_type(tl.float32))
    dy_base = tl.load(dy_tab_ptr + layer).to(tl.pointer_type(tl.float32))  # d raw[l] [B, O_l, KK]
    dw_base = tl.load(dw_tab_ptr + layer).to(tl.pointer_type(tl.float32))
    db_base = tl.load(db_tab_ptr + layer).to(tl.pointer_type(tl.float32))
    N = B * KK
    ch = tl.arange(0, HP)
    hmask = ch < H
    ro = tl.arange(0, BLOCK_O)
    rn = tl.arange(0, BLOCK_N)
    c_off = c_ptr + layer * (H * N) + ch[:, None] * N + rn[None, :]
    part_off = part_ptr + pid * (H * N) + ch[:, None] * N + rn[None, :]
    oh_off = ro[:, None] * H + ch[None, :]
    for n0 in range(0, N, BLOCK_N):
        ns = n0 + rn
        nmask = ns < N
        later = n0 > 0  # d out_w, d out_b accumulate over the column chunks
        m_hn = hmask[:, None] & nmask[None, :]
        c = tl.load(c_off + n0, mask=m_hn, other=0.0)
        dy_col = dy_base + ((ns // KK) * (O * KK) + ns % KK)[None, :]
        dc = tl.zeros([HP, BLOCK_N], dtype=tl.float32)
        for s in range(SUB):
            o0 = o_start + s * BLOCK_O
            omask = (o0 + ro) < O
            m_oh = omask[:, None] & hmask[None, :]
            dy = tl.load(dy_col + (o0 + ro)[:, None] * KK, mask=omask[:, None] & nmask[None, :], other=0.0)
            w = tl.load(w_base + oh_off + o0 * H, mask=m_oh, other=0.0)
            dc = tl.dot(tl.trans(w), dy, dc, input_precision="ieee")
            dw = tl.dot(dy, tl.trans(c), input_precision="ieee")
            db = tl.sum(dy, axis=1)
            if later:  # a branch, not a masked load: with the masked load ptxas spills (sm_90, 32 registers)
                dw += tl.load(dw_base + oh_off + o0 * H, mask=m_oh, other=0.0)
                db += tl.load(db_base + o0 + ro, mask=omask, other=0.0)
            tl.store(dw_base + oh_off + o0 * H, dw, mask=m_oh)
            tl.store(db_base + o0 + ro, db, mask=omask)
        tl.store(part_off + n0, dc, mask=m_hn)
        # the next column chunk re-reads d out_w / d out_b written here
        tl.debug_barrier()


@triton.jit
def _gen_hidden_bwd_kernel(
    codes_ptr, s_cb, s_cl, s_ce, lin_w_ptr, conv_w_ptr, a_ptr, c_ptr,  # forward inputs and saved buffers
    part_ptr, tile_start_ptr, tile_count_ptr,  # partial dc of every tile, and each layer's tile range
    dpre_ptr, da_ptr,  # scratch: d(conv pre-activation) [L, H, B·KK], d a [L, B, H·KK]
    dcodes_ptr, dlin_w_ptr, dlin_b_ptr, dconv_w_ptr, dconv_b_ptr,  # outputs (dcodes [B, L, E] contiguous)
    B, E, H, L,
    K: tl.constexpr, HP: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_R: tl.constexpr,
):
    l = tl.program_id(0)
    KK: tl.constexpr = K * K
    HKK = H * KK
    N = B * KK
    ch = tl.arange(0, HP)
    hmask = ch < H
    rr = tl.arange(0, BLOCK_R)
    # 0) dc = Σ (this layer's tile partials), through the LeakyReLU (c > 0 ⇔ pre-activation > 0)
    ts = tl.load(tile_start_ptr + l)
    tc = tl.load(tile_count_ptr + l)
    hn_off = ch[:, None] * N + rr[None, :]  # [HP, BR]
    dpre_base = dpre_ptr + l * (H * N)
    dcb = tl.zeros([HP], dtype=tl.float32)
    for r0 in range(0, N, BLOCK_R):
        m = hmask[:, None] & ((r0 + rr) < N)[None, :]
        acc = tl.zeros([HP, BLOCK_R], dtype=tl.float32)
        for i in range(tc):
            acc += tl.load(part_ptr + (ts + i) * (H * N) + hn_off + r0, mask=m, other=0.0)
        c = tl.load(c_ptr + l * (H * N) + hn_off + r0, mask=m, other=0.0)
        dpre = tl.where(c > 0, acc, 0.2 * acc)
        tl.store(dpre_base + hn_off + r0, dpre, mask=m)
        dcb += tl.sum(dpre, axis=1)
    tl.store(dconv_b_ptr + l * H + ch, dcb, mask=hmask)
    tl.debug_barrier()
    # 1) d conv_w[co, ci, tap] = Σ_(b,p) dpre[co, (b, p)] a[b, ci, p + d_tap]
    a_base = a_ptr + l * (B * HKK)
    a_col = a_base + ch[None, :] * KK
    w_off = ch[:, None] * (H * 9) + ch[None, :] * 9  # [co, ci] of a tap
    w_mask = hmask[:, None] & hmask[None, :]
    dw_off = dconv_w_ptr + l * (H * H * 9) + w_off
    for tap in tl.static_range(9):
        if K > 1 or tap == 4:
            acc_w = tl.zeros([HP, HP], dtype=tl.float32)
            for r0 in range(0, N, BLOCK_R):
                rs = r0 + rr
                rmask = rs < N
                p = rs % KK
                qy = p // K + (tap // 3 - 1)
                qx = p % K + (tap % 3 - 1)
                valid = rmask & (qy >= 0) & (qy < K) & (qx >= 0) & (qx < K)
                dp = tl.load(dpre_base + hn_off + r0, mask=hmask[:, None] & rmask[None, :], other=0.0)
                ash = tl.load(a_col + ((rs // KK) * HKK + qy * K + qx)[:, None],
                              mask=valid[:, None] & hmask[None, :], other=0.0)
                acc_w = tl.dot(dp, ash, acc_w, input_precision="ieee")
            tl.store(dw_off + tap, acc_w, mask=w_mask)
        else:  # taps that only ever read padding
            tl.store(dw_off + tap, tl.zeros([HP, HP], dtype=tl.float32), mask=w_mask)
    # d a[(b, q), ci] = Σ_tap Σ_co dpre[co, (b, q − d_tap)] conv_w[co, ci, tap]  (gather with the opposite shift)
    cw_off = conv_w_ptr + l * (H * H * 9) + w_off
    dpre_col = dpre_base + ch[None, :] * N
    da_base = da_ptr + l * (B * HKK)
    for r0 in range(0, N, BLOCK_R):
        rs = r0 + rr
        rmask = rs < N
        b = rs // KK
        q = rs % KK
        acc = tl.zeros([BLOCK_R, HP], dtype=tl.float32)
        for tap in tl.static_range(9):
            if K > 1 or tap == 4:
                py = q // K - (tap // 3 - 1)
                px = q % K - (tap % 3 - 1)
                valid = rmask & (py >= 0) & (py < K) & (px >= 0) & (px < K)
                dp = tl.load(dpre_col + (b * KK + py * K + px)[:, None], mask=valid[:, None] & hmask[None, :],
                             other=0.0)
                acc = tl.dot(dp, tl.load(cw_off + tap, mask=w_mask, other=0.0), acc, input_precision="ieee")
        tl.store(da_base + (b * HKK + q)[:, None] + ch[None, :] * KK, acc, mask=rmask[:, None] & hmask[None, :])
    tl.debug_barrier()
    # 2) the linear: d lin_w[e, j] = Σ_b codes[b, l, e] da[b, j]; d lin_b[j] = Σ_b da[b, j];
    #    d codes[b, l, e] = Σ_j da[b, j] lin_w[l, e, j]
    rb = tl.arange(0, BLOCK_B)
    rj = tl.arange(0, BLOCK_J)
    re = tl.arange(0, BLOCK_E)
    cdT_off = codes_ptr + l * s_cl + rb[None, :] * s_cb + re[:, None] * s_ce  # [BE, BB]
    da_off = da_base + rb[:, None] * HKK + rj[None, :]  # [BB, BJ]
    dlw_off = dlin_w_ptr + l * (E * HKK) + re[:, None] * HKK + rj[None, :]  # [BE, BJ]
    for j0 in range(0, HKK, BLOCK_J):
        jmask = (j0 + rj) < HKK
        dlb = tl.zeros([BLOCK_J], dtype=tl.float32)
        for b0 in range(0, B, BLOCK_B):
            da = tl.load(da_off + (b0 * HKK + j0), mask=((b0 + rb) < B)[:, None] & jmask[None, :], other=0.0)
            dlb += tl.sum(da, axis=0)
        tl.store(dlin_b_ptr + l * HKK + j0 + rj, dlb, mask=jmask)
        for e0 in range(0, E, BLOCK_E):
            emask = (e0 + re) < E
            acc = tl.zeros([BLOCK_E, BLOCK_J], dtype=tl.float32)
            for b0 in range(0, B, BLOCK_B):
                bmask = (b0 + rb) < B
                cdT = tl.load(cdT_off + (b0 * s_cb + e0 * s_ce), mask=emask[:, None] & bmask[None, :], other=0.0)
                da = tl.load(da_off + (b0 * HKK + j0), mask=bmask[:, None] & jmask[None, :], other=0.0)
                acc = tl.dot(cdT, da, acc, input_precision="ieee")
            tl.store(dlw_off + (e0 * HKK + j0), acc, mask=emask[:, None] & jmask[None, :])
    lwT_off = lin_w_ptr + l * (E * HKK) + re[None, :] * HKK + rj[:, None]  # [BJ, BE]
    dcd_off = dcodes_ptr + rb[:, None] * (L * E) + l * E + re[None, :]  # [BB, BE]
    for b0 in range(0, B, BLOCK_B):
        bmask = (b0 + rb) < B
        for e0 in range(0, E, BLOCK_E):
            emask = (e0 + re) < E
            acc = tl.zeros([BLOCK_B, BLOCK_E], dtype=tl.float32)
            for j0 in range(0, HKK, BLOCK_J):
                jmask = (j0 + rj) < HKK
                da = tl.load(da_off + (b0 * HKK + j0), mask=bmask[:, None] & jmask[None, :], other=0.0)
                lwT = tl.load(lwT_off + (e0 * HKK + j0), mask=jmask[:, None] & emask[None, :], other=0.0)
                acc = tl.dot(da, lwT, acc, input_precision="ieee")
            tl.store(dcd_off + (b0 * (L * E) + e0), acc, mask=bmask[:, None] & emask[None, :])


# ------------------------------------------------------------------------------------------------- launchers

# Block-size overrides, for the tests (small blocks exercise the multi-tile and masked paths).
OVERRIDE: dict = {}


def _config(n_cols: int) -> dict:
    """Block sizes. ``ROWS`` output rows per grouped-GEMM program (the tile table's unit, shared by the
    forward and the backward), walked in sub-tiles of ``BLOCK_O`` (forward) / ``BLOCK_O_BWD`` rows."""
    if interpreting():  # few, large blocks: the interpreter pays per operation, not per element
        cfg = dict(ROWS=512, BLOCK_O=128, BLOCK_O_BWD=128, BLOCK_N=min(256, max(16, next_pow2(n_cols))),
                   BLOCK_B=16, BLOCK_J=128, BLOCK_E=128, BLOCK_R=64)
    else:
        # Not timed yet (no GPU where this was written). Chosen from ahead-of-time sm_90 compiles (ptxas -v):
        # the largest tiles that compile without register spills, 8 warps, no software pipelining.
        cfg = dict(ROWS=1024, BLOCK_O=64, BLOCK_O_BWD=32, BLOCK_N=min(128, max(16, next_pow2(n_cols))),
                   BLOCK_B=16, BLOCK_J=64, BLOCK_E=32, BLOCK_R=32)
    cfg.update({k: v for k, v in OVERRIDE.items() if k in cfg})
    for key in ("BLOCK_O", "BLOCK_O_BWD"):
        if cfg["ROWS"] % cfg[key]:
            raise ValueError(f"ROWS={cfg['ROWS']} must be a multiple of {key}={cfg[key]}")
    return cfg


_LAUNCH_OPTS = dict(num_warps=8, num_stages=1)


@dataclass
class _Plan:
    """The tile table of a group's grouped GEMM (shape-dependent, cached)."""

    sizes: tuple[int, ...]  # O_l
    rows: int  # output rows per program
    tiles: int
    tile_layer: torch.Tensor  # int32 [T]
    tile_o0: torch.Tensor  # int32 [T]
    o_tab: torch.Tensor  # int32 [L]
    tile_start: torch.Tensor  # int32 [L]
    tile_count: torch.Tensor  # int32 [L]


_PLANS: dict = {}
_PTR_TABLES: dict = {}
_CACHE_MAX = 64


def _remember(cache: dict, key, value) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


def _plan(sizes: tuple[int, ...], rows_per_tile: int, device) -> _Plan:
    key = (sizes, rows_per_tile, str(device))
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    tile_layer, tile_o0, starts, counts = [], [], [], []
    for layer, o in enumerate(sizes):
        starts.append(len(tile_layer))
        for o0 in range(0, o, rows_per_tile):
            tile_layer.append(layer)
            tile_o0.append(o0)
        counts.append(len(tile_layer) - starts[-1])
    i32 = dict(dtype=torch.int32, device=device)
    plan = _Plan(sizes, rows_per_tile, len(tile_layer), torch.tensor(tile_layer, **i32), torch.tensor(tile_o0, **i32),
                 torch.tensor(sizes, **i32), torch.tensor(starts, **i32), torch.tensor(counts, **i32))
    _remember(_PLANS, key, plan)
    return plan


def _ptr_table(tensors, device) -> torch.Tensor:
    """int64 device table of the tensors' addresses, cached by those addresses (the table's whole content)."""
    ptrs = tuple(t.data_ptr() for t in tensors)
    key = (ptrs, str(device))
    table = _PTR_TABLES.get(key)
    if table is None:
        table = torch.tensor(ptrs, dtype=torch.int64)
        if device.type == "cuda":  # pinned and asynchronous: a copy from pageable memory waits for the GPU
            table = table.pin_memory().to(device, non_blocking=True)
        _remember(_PTR_TABLES, key, table)
    return table


def _hidden_size(h_cube: int) -> int:
    return max(16, next_pow2(h_cube))


def check_shapes(codes, lin_w, lin_b, conv_w, conv_b, out_w, out_b, k: int) -> None:
    """The shapes of ``hotpath.generate_eager``, with ``lin_w``/``lin_b``/``conv_w``/``conv_b`` stacked."""
    batch, layers, emb = codes.shape
    hidden, hkk = conv_w.shape[1], conv_w.shape[1] * k * k
    if len(out_w) != layers or len(out_b) != layers:
        raise ValueError(f"{layers} layers in codes but {len(out_w)} out_w and {len(out_b)} out_b")
    if tuple(lin_w.shape) != (layers, emb, hkk) or tuple(lin_b.shape) != (layers, hkk):
        raise ValueError(f"lin_w/lin_b must be [{layers}, {emb}, {hkk}] / [{layers}, {hkk}]")
    if tuple(conv_w.shape) != (layers, hidden, hidden, 3, 3) or tuple(conv_b.shape) != (layers, hidden):
        raise ValueError(f"conv_w/conv_b must be [{layers}, {hidden}, {hidden}, 3, 3] / [{layers}, {hidden}]")
    for w, b in zip(out_w, out_b):
        if w.dim() != 2 or w.shape[1] != hidden or tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"out_w[l] must be [O_l, {hidden}] and out_b[l] [O_l]")


def generate_forward(codes, lin_w, lin_b, conv_w, conv_b, out_w, out_b, k: int):
    """Two launches on float32 tensors (``codes`` of any strides, the others contiguous).

    Returns ``(raws, a, c)``: one ``[B, O_l, k, k]`` buffer per layer, and what the backward reads, ``a``
    ``[L, B, H·k·k]`` (the linear) and ``c`` ``[L, H, B·k·k]`` (after the conv and the LeakyReLU).
    """
    device = check_device(codes, lin_w, lin_b, conv_w, conv_b, *out_w, *out_b)
    batch, layers, emb = codes.shape
    hidden, kk = conv_w.shape[1], k * k
    cfg = _config(batch * kk)
    plan = _plan(tuple(int(w.shape[0]) for w in out_w), cfg["ROWS"], device)
    hp = _hidden_size(hidden)
    a = buffer((layers, batch, hidden * kk), device)
    c = buffer((layers, hidden, batch * kk), device)
    launch(_gen_hidden_fwd_kernel, (layers,), codes, *codes.stride(), lin_w, lin_b, conv_w, conv_b, a, c,
           batch, emb, hidden, K=k, HP=hp, BLOCK_B=cfg["BLOCK_B"], BLOCK_J=cfg["BLOCK_J"],
           BLOCK_E=cfg["BLOCK_E"], BLOCK_R=cfg["BLOCK_R"], **_LAUNCH_OPTS)
    raws = [buffer((batch, o, k, k), device) for o in plan.sizes]
    launch(_gen_out_fwd_kernel, (plan.tiles,), c, plan.tile_layer, plan.tile_o0, plan.o_tab,
           _ptr_table(out_w, device), _ptr_table(out_b, device), _ptr_table(raws, device), batch, hidden,
           KK=kk, HP=hp, BLOCK_O=cfg["BLOCK_O"], SUB=cfg["ROWS"] // cfg["BLOCK_O"], BLOCK_N=cfg["BLOCK_N"],
           **_LAUNCH_OPTS)
    return raws, a, c


def generate_backward(draws, codes, lin_w, conv_w, a, c, out_w, k: int):
    """Two launches; ``draws`` contiguous float32, the rest as the forward had them. Returns float32
    ``(dcodes, dlin_w, dlin_b, dconv_w, dconv_b, d_out_w list, d_out_b list)``."""
    device = codes.device
    batch, layers, emb = codes.shape
    hidden, kk = conv_w.shape[1], k * k
    n_cols = batch * kk
    cfg = _config(n_cols)
    plan = _plan(tuple(int(w.shape[0]) for w in out_w), cfg["ROWS"], device)
    hp = _hidden_size(hidden)
    d_out_w = [buffer((o, hidden), device) for o in plan.sizes]
    d_out_b = [buffer((o,), device) for o in plan.sizes]
    part = buffer((plan.tiles, hidden, n_cols), device)
    launch(_gen_out_bwd_kernel, (plan.tiles,), c, plan.tile_layer, plan.tile_o0, plan.o_tab,
           _ptr_table(out_w, device), _ptr_table(draws, device), _ptr_table(d_out_w, device),
           _ptr_table(d_out_b, device), part, batch, hidden,
           KK=kk, HP=hp, BLOCK_O=cfg["BLOCK_O_BWD"], SUB=plan.rows // cfg["BLOCK_O_BWD"],
           BLOCK_N=cfg["BLOCK_N"], **_LAUNCH_OPTS)
    dpre = buffer((layers, hidden, n_cols), device)
    da = buffer((layers, batch, hidden * kk), device)
    dcodes = buffer((batch, layers, emb), device)
    dlin_w = buffer(lin_w.shape, device)
    dlin_b = buffer((layers, hidden * kk), device)
    dconv_w = buffer(conv_w.shape, device)
    dconv_b = buffer((layers, hidden), device)
    launch(_gen_hidden_bwd_kernel, (layers,), codes, *codes.stride(), lin_w, conv_w, a, c,
           part, plan.tile_start, plan.tile_count, dpre, da, dcodes, dlin_w, dlin_b, dconv_w, dconv_b,
           batch, emb, hidden, layers, K=k, HP=hp, BLOCK_B=cfg["BLOCK_B"], BLOCK_J=cfg["BLOCK_J"],
           BLOCK_E=cfg["BLOCK_E"], BLOCK_R=cfg["BLOCK_R"], **_LAUNCH_OPTS)
    return dcodes, dlin_w, dlin_b, dconv_w, dconv_b, d_out_w, d_out_b
