"""One new token's attention over a KV cache, gpt-oss's learned sinks included, in one launch (Triton): the contract
of fast.one_token_attention (and of model.attention_with_sinks for T = 1).

In batch-1 decoding over StaticDecoder's buffers Inductor made this step four kernels a layer (scores, the softmax
max, the sink column, softmax and P·V: ~12 µs, ~26 µs at batch 8; docs/benchmarks.md, the session-4 profiles). Here
a program holds the `group` query heads that read one kv head, so K and V are read once per kv head, and walks the
keys in blocks with an online softmax in float32 (running max m, sum l, accumulator acc). Only the keys between the
first and the last one the keep row allows are walked, found by one pass over the row's bytes first: a
sliding-window layer reads ~128 keys of a long cache, a full layer none past the new token; inside that range a
masked key's K and V are not loaded either. (A branch per block would do the same but stops Triton from pipelining
the loop: scripts/attention_sass.py counts its asynchronous copies.) The sink joins the denominator only (it has no
value vector): the softmax state is merged at the end with the sink's own, m = sink, l = 1, acc = 0, so a row with
every key masked comes out 0. Long caches are split over the keys, each split writing its float32 (acc, m, l) to a
scratch that a second, tiny kernel merges with the sink.

Same roundings as the readable path where they are cheap: q·k rounded to q's dtype, times the scaling rounded again,
the probabilities rounded to v's dtype before P·V, the output once. (Each kernel stores through one output pointer,
unconditionally: torch.compile's analysis of what a user kernel writes needs plain stores.) Tested under Triton's
interpreter against model.attention_with_sinks (tests/one_token_attention_cases.py).
"""

import os

import torch
import triton
import triton.language as tl

KEYS_PER_SPLIT = 1024  # a cache longer than this is split over several programs per (batch, kv head)
# Triton's interpreter multiplies bf16 operands of tl.dot as their raw 16-bit patterns (create_dot in
# triton/runtime/interpreter.py): under it the operands go in as float32, the same exact products
DOT_IN_FLOAT32 = os.environ.get("TRITON_INTERPRET") == "1"
SCAN_KEYS = 1024  # keep bytes a step of the pass that finds the kept range


@triton.jit
def _merge(m, l, acc, m_part, l_part, acc_part):
    """Two softmax states over disjoint keys (m [R], l [R], acc [R, D]) -> the state over both."""
    m_new = tl.maximum(m, m_part)
    ours, theirs = tl.exp(m - m_new), tl.exp(m_part - m_new)
    return m_new, l * ours + l_part * theirs, acc * ours[:, None] + acc_part * theirs[:, None]


@triton.jit
def _dot(a, b, IN_FLOAT32: tl.constexpr):
    if IN_FLOAT32:
        a, b = a.to(tl.float32), b.to(tl.float32)
    return tl.dot(a, b, input_precision="ieee")  # float32 products: not TF32's


@triton.jit
def _sink(sinks_ptr, heads, head_ok, q_dtype: tl.constexpr):
    # parity: the readable path casts the sink logit to the scores' dtype (model.attention_with_sinks)
    return tl.load(sinks_ptr + heads, mask=head_ok, other=0.0).to(q_dtype).to(tl.float32)


@triton.jit
def _kept_range(keep_ptr, keep_ss, first, end, SCAN: tl.constexpr):
    """The keys [first, end) of one keep row -> (lo, hi): the first kept key and one past the last (lo >= hi: none).
    One pass over the row's bytes, so that the loop over K and V can skip what lies outside without a branch."""
    lo, hi = end, first
    for start in range(first, end, SCAN):
        keys = start + tl.arange(0, SCAN)
        keep = tl.load(keep_ptr + keys * keep_ss, mask=keys < end, other=0) != 0
        lo = tl.minimum(lo, tl.min(tl.where(keep, keys, end), axis=0))
        hi = tl.maximum(hi, tl.max(tl.where(keep, keys + 1, first), axis=0))
    return lo, hi


@triton.jit
def _attention_kernel(q_ptr, k_ptr, v_ptr, sinks_ptr, keep_ptr, out_ptr, scaling, S, keys_per_split, nkv,
                      q_sb, q_sh, k_sb, k_sh, k_ss, v_sb, v_sh, v_ss, keep_sb, keep_ss,
                      GROUP: tl.constexpr, ROWS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                      BLOCK_S: tl.constexpr, SCAN: tl.constexpr, SPLIT: tl.constexpr, FLOAT32_DOT: tl.constexpr):
    """Program (b · nkv + kv head, split): the GROUP query heads of that kv head (ROWS >= 16 rows, the rest masked)
    over keys [split · keys_per_split, +keys_per_split). SPLIT: out is the float32 scratch [programs, splits, ROWS,
    BLOCK_D + 2] of (acc, m, l); else out [B, 1, nq, d] in q's dtype, the sink merged in."""
    batch, kv_head, split = tl.program_id(0) // nkv, tl.program_id(0) % nkv, tl.program_id(1)
    rows, cols = tl.arange(0, ROWS), tl.arange(0, BLOCK_D)
    heads = kv_head * GROUP + rows
    row_ok, col_ok = rows < GROUP, cols < HEAD_DIM
    q = tl.load(q_ptr + batch * q_sb + heads[:, None] * q_sh + cols[None, :], mask=row_ok[:, None] & col_ok[None, :],
                other=0.0)  # [ROWS, BLOCK_D]
    k_base, v_base = k_ptr + batch * k_sb + kv_head * k_sh, v_ptr + batch * v_sb + kv_head * v_sh
    m = tl.full((ROWS,), -1e30, tl.float32)  # finite: exp(m - m_new) stays 0, never NaN
    l = tl.zeros((ROWS,), tl.float32)
    acc = tl.zeros((ROWS, BLOCK_D), tl.float32)
    first = split * keys_per_split
    lo, hi = _kept_range(keep_ptr + batch * keep_sb, keep_ss, first, tl.minimum(first + keys_per_split, S), SCAN)
    for start in range(lo, hi, BLOCK_S):  # a sliding window's ~128 keys, a causal prefix's up to the new token
        keys = start + tl.arange(0, BLOCK_S)
        keep = tl.load(keep_ptr + batch * keep_sb + keys * keep_ss, mask=keys < hi, other=0) != 0  # [BLOCK_S]
        kv_mask = keep[:, None] & col_ok[None, :]  # a masked key's K and V are not loaded
        k = tl.load(k_base + keys[:, None] * k_ss + cols[None, :], mask=kv_mask, other=0.0)  # [BLOCK_S, BLOCK_D]
        v = tl.load(v_base + keys[:, None] * v_ss + cols[None, :], mask=kv_mask, other=0.0)  # [BLOCK_S, BLOCK_D]
        scores = _dot(q, tl.trans(k), FLOAT32_DOT).to(q.dtype).to(tl.float32)  # [ROWS, BLOCK_S]
        scores = (scores * scaling).to(q.dtype).to(tl.float32)
        scores = tl.where(keep[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        p = tl.exp(scores - m_new[:, None])  # [ROWS, BLOCK_S]
        ours = tl.exp(m - m_new)
        acc = acc * ours[:, None] + _dot(p.to(v.dtype), v, FLOAT32_DOT)
        l = l * ours + tl.sum(p, axis=1)
        m = m_new
    if SPLIT:
        width = BLOCK_D + 2
        base = out_ptr + (tl.program_id(0) * tl.num_programs(1) + split) * ROWS * width + rows * width
        tl.store(base[:, None] + cols[None, :], acc)
        tl.store(base + BLOCK_D, m)
        tl.store(base + BLOCK_D + 1, l)
    else:
        sink = _sink(sinks_ptr, heads, row_ok, q.dtype)
        m, l, acc = _merge(sink, tl.full((ROWS,), 1.0, tl.float32), tl.zeros((ROWS, BLOCK_D), tl.float32), m, l, acc)
        out = acc / l[:, None]
        tl.store(out_ptr + (batch * nkv * GROUP + heads[:, None]) * HEAD_DIM + cols[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _merge_splits_kernel(partials_ptr, sinks_ptr, out_ptr, splits, nkv,
                         GROUP: tl.constexpr, ROWS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """Program b · nkv + kv head: its `splits` float32 states from the scratch and the sink -> out [B, 1, nq, d]."""
    batch, kv_head = tl.program_id(0) // nkv, tl.program_id(0) % nkv
    rows, cols = tl.arange(0, ROWS), tl.arange(0, BLOCK_D)
    heads = kv_head * GROUP + rows
    row_ok, col_ok = rows < GROUP, cols < HEAD_DIM
    m = _sink(sinks_ptr, heads, row_ok, out_ptr.dtype.element_ty)  # the sink alone: m = sink, l = 1, acc = 0
    l = tl.full((ROWS,), 1.0, tl.float32)
    acc = tl.zeros((ROWS, BLOCK_D), tl.float32)
    width = BLOCK_D + 2
    for split in range(0, splits):
        base = partials_ptr + (tl.program_id(0) * splits + split) * ROWS * width + rows * width
        m, l, acc = _merge(m, l, acc, tl.load(base + BLOCK_D), tl.load(base + BLOCK_D + 1),
                           tl.load(base[:, None] + cols[None, :]))
    out = acc / l[:, None]
    tl.store(out_ptr + (batch * nkv * GROUP + heads[:, None]) * HEAD_DIM + cols[None, :],
             out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def one_token_attention(q, k, v, sinks, keep, scaling: float, block_s: int = 64,
                        keys_per_split: int = KEYS_PER_SPLIT, warps: int = 4):
    """q [B, nq, 1, d] (rotated), k/v [B, nkv, S, d], sinks [nq], keep [B, 1, 1, S] bool (True: may attend)
    -> [B, 1, nq, d] in q's dtype. keys_per_split is rounded up to a multiple of block_s
    (64 keys a step: no register spills on sm_90 in bf16 or float32, scripts/attention_sass.py)."""
    B, nq, T, d = q.shape
    nkv, S = k.shape[1], k.shape[2]
    if (T != 1 or nkv == 0 or nq % nkv or k.shape != (B, nkv, S, d) or v.shape != k.shape
            or sinks.shape != (nq,) or keep.shape != (B, 1, 1, S) or keep.dtype != torch.bool):
        raise ValueError(f"one_token_attention: expected q [B, nq, 1, d], k and v [B, nkv, S, d] with nq a multiple "
                         f"of nkv, sinks [nq], keep [B, 1, 1, S] bool; got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}, sinks {tuple(sinks.shape)}, keep {tuple(keep.shape)} {keep.dtype}")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    group = nq // nkv
    rows, block_d = max(16, triton.next_power_of_2(group)), max(16, triton.next_power_of_2(d))
    keys_per_split = triton.cdiv(keys_per_split, block_s) * block_s
    splits = max(1, triton.cdiv(S, keys_per_split))
    out = torch.empty(B, 1, nq, d, dtype=q.dtype, device=q.device)
    target = out if splits == 1 else torch.empty(B * nkv, splits, rows, block_d + 2, dtype=torch.float32,
                                                 device=q.device)
    _attention_kernel[(B * nkv, splits)](
        q, k, v, sinks, keep, target, scaling, S, keys_per_split, nkv, q.stride(0), q.stride(1),
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2), keep.stride(0), keep.stride(3),
        GROUP=group, ROWS=rows, HEAD_DIM=d, BLOCK_D=block_d, BLOCK_S=block_s, SCAN=SCAN_KEYS, SPLIT=splits > 1,
        FLOAT32_DOT=DOT_IN_FLOAT32, num_warps=warps)
    if splits > 1:
        _merge_splits_kernel[(B * nkv,)](target, sinks, out, splits, nkv, GROUP=group, ROWS=rows, HEAD_DIM=d,
                                        BLOCK_D=block_d, num_warps=warps)
    return out
