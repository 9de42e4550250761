"""A few rows' RMSNorm and the projections that read it, in one launch (Triton): out_i = W_i · norm(x) + b_i for up
to three weights, e.g. an attention's q, k and v; or without the norm, e.g. o_proj.

In batch-1 decoding the compiled step computes q, k and v as Inductor reductions: three kernels, each with the
RMSNorm folded in, the q one at ~1.6 TB/s where o_proj, the same size, reaches ~2.5 (docs/benchmarks.md, fourth
session). Here the three weights are one grid: a program takes BLOCK_N rows of one of them, normalises x itself
(x and the norm's weight are 2 × 5.8 kB, read from L1/L2 by every program) and multiplies in float32, summing
once at the end. Same roundings as the readable path: the normalised x is rounded to the model's dtype as
GptOssRMSNorm does, each output once after its bias as `fast.linear`.

Several rows (2 to MAX_ROWS, batch-8 decoding) take `_norm_linear_rows_kernel`: the same grid over the weights'
rows, the rows of x as one tensor-core tile, so each weight is read once for all of them; cuBLAS ran these as
split-K kernels plus a reduce kernel each (0.96 ms of a 7.4 ms batch-8 step, docs/benchmarks.md).
The fast path takes the one-row launch for q/k/v (fast._attention_inputs). The rows kernel for batch 8 and o_proj
without the norm measured slower than cuBLAS and Inductor's reduction (docs/benchmarks.md, fifth session): they
stay off (fast.NORM_LINEAR_ROWS, fast.NORM_LINEAR_O_PROJ), measurable as variants.
A third kernel, `_norm_linear_fragments_kernel`, takes 1 to FRAGMENT_ROWS bf16 rows on the tensor cores through
register fragments, kernels/mxfp4_fragments.py's scheme without its decoding: a thread's 16-byte load of a weight
row is its operand. It measured slower in the sixth session (each load sat right before its mma); it now loads the
next two steps ahead, unmeasured, and stays off (FRAGMENTS; fast.FRAGMENT_PROJECTIONS).
Tested under Triton's interpreter against the RMSNorm then F.linear (tests/norm_linear_cases.py).
"""

import os

import torch
import triton
import triton.language as tl

from gptoss_model.kernels.mxfp4_fragments import fragment_results, fragment_sums, pairs_to_values
from gptoss_model.kernels.mxfp4_moe import bf16_halves


MAX_ROWS = 16  # rows of x a launch takes (one tensor-core tile)
FRAGMENTS = False  # bf16, up to FRAGMENT_ROWS rows: _norm_linear_fragments_kernel; off: it lost to the kernels
# before it and to cuBLAS (docs/benchmarks.md, sixth session; bench_decode_variants.py's "fragment-projections")
FRAGMENT_ROWS = 8  # token slots of an mma fragment
FRAGMENT_WARPS = 4  # warps a program (they split the input columns, 32 a step each)
MAX_ROWS_C = tl.constexpr(MAX_ROWS)
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter multiplies bf16 bit patterns in
# tl.dot, so there the rows kernel multiplies in float32 (as mxfp4_moe does)


@triton.jit
def _share(program, N0, N1, N2, BLOCK_N: tl.constexpr):
    """Program p's share of the three projections, rows of W0 first, then of W1, then of W2 -> (which projection,
    its row count, first row, where its outputs start). No pointers pass through here, and so none through the
    output's address: torch.compile's analysis of what a user kernel writes traces a store's address back through
    helper calls to every pointer they were given, and would count those as written (then the compiled step copies
    them before every launch)."""
    programs0 = tl.cdiv(N0, BLOCK_N)
    programs1 = tl.cdiv(N1, BLOCK_N)
    if program < programs0:
        projection, N, first, offset = 0, N0, program * BLOCK_N, 0
    elif program < programs0 + programs1:
        projection, N, first, offset = 1, N1, (program - programs0) * BLOCK_N, N0
    else:
        projection, N, first, offset = 2, N2, (program - programs0 - programs1) * BLOCK_N, N0 + N1
    return projection, N, first, offset


@triton.jit
def _pick(projection, pointer0, pointer1, pointer2):
    """The pointer of projection 0, 1 or 2 (for loads only: see _share)."""
    if projection == 0:
        pointer = pointer0
    elif projection == 1:
        pointer = pointer1
    else:
        pointer = pointer2
    return pointer


@triton.jit
def _rms_normed(x, norm_weight, inverse_rms, dtype):
    """GptOssRMSNorm's recipe on float32 x and weight values: weight · (x · 1/rms), rounded to `dtype`."""
    return (norm_weight * (x * inverse_rms)).to(dtype)


@triton.jit
def _normed(x, norm_weight_ptr, k, K, inverse_rms, dtype, NORM: tl.constexpr):
    """A tile of x's input columns k (float32) -> GptOssRMSNorm's output in `dtype`, as float32 (or x itself)."""
    if NORM:
        norm_weight = tl.load(norm_weight_ptr + k, mask=k < K, other=0.0).to(tl.float32)
        return _rms_normed(x, norm_weight, inverse_rms, dtype).to(tl.float32)
    return x


@triton.jit
def _inverse_rms_of_rows(x_ptr, M, K, eps, ROWS: tl.constexpr, BLOCK_K: tl.constexpr):
    """x [M, K] (M <= ROWS) -> 1/rms of each row [ROWS] (rows past M: of zeros, unused)."""
    m = tl.arange(0, ROWS)
    squares = tl.zeros((ROWS, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + m[:, None] * K + k[None, :], mask=(m < M)[:, None] & (k < K)[None, :], other=0.0)
        squares += x.to(tl.float32) * x.to(tl.float32)
    return tl.math.rsqrt(tl.sum(squares, axis=1) / K + eps)


@triton.jit
def _norm_linear_kernel(x_ptr, norm_weight_ptr, eps, w0_ptr, b0_ptr, N0, w1_ptr, b1_ptr, N1, w2_ptr, b2_ptr, N2,
                        out_ptr, K, NORM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """x [K], norm weight [K] -> out [N0 + N1 + N2], the concatenation of W_i [N_i, K] · norm(x) + b_i [N_i]
    (x itself without NORM), products in float32 registers: one row has nothing for tensor cores to do."""
    projection, N, first, offset = _share(tl.program_id(0), N0, N1, N2, BLOCK_N)
    w_ptr, b_ptr = _pick(projection, w0_ptr, w1_ptr, w2_ptr), _pick(projection, b0_ptr, b1_ptr, b2_ptr)
    rows = first + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    inverse_rms = 1.0
    if NORM:
        squares = tl.zeros((BLOCK_K,), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + k, mask=k < K, other=0.0).to(tl.float32)
            squares += x * x
        inverse_rms = tl.math.rsqrt(tl.sum(squares) / K + eps)
    products = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + k, mask=k < K, other=0.0).to(tl.float32)
        normed = _normed(x, norm_weight_ptr, k, K, inverse_rms, x_ptr.dtype.element_ty, NORM)
        w = tl.load(w_ptr + rows[:, None].to(tl.int64) * K + k[None, :], mask=row_ok[:, None] & (k < K)[None, :],
                    other=0.0)
        products += w.to(tl.float32) * normed[None, :]
    y = tl.sum(products, axis=1) + tl.load(b_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + offset + rows, y.to(out_ptr.dtype.element_ty), mask=row_ok)


@triton.jit
def _norm_linear_rows_kernel(x_ptr, M, norm_weight_ptr, eps, w0_ptr, b0_ptr, N0, w1_ptr, b1_ptr, N1, w2_ptr, b2_ptr,
                             N2, out_ptr, K, NORM: tl.constexpr, DOT_FLOAT32: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_K: tl.constexpr):
    """x [M, K] (M <= MAX_ROWS) -> out [M, N0 + N1 + N2], as _norm_linear_kernel for each row; the rows are one
    tensor-core tile, so each weight tile is read once for all of them."""
    projection, N, first, offset = _share(tl.program_id(0), N0, N1, N2, BLOCK_N)
    w_ptr, b_ptr = _pick(projection, w0_ptr, w1_ptr, w2_ptr), _pick(projection, b0_ptr, b1_ptr, b2_ptr)
    rows = first + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    m = tl.arange(0, MAX_ROWS_C)
    m_ok = m < M
    dtype = x_ptr.dtype.element_ty
    inverse_rms = tl.full((MAX_ROWS_C,), 1.0, dtype=tl.float32)
    if NORM:
        inverse_rms = _inverse_rms_of_rows(x_ptr, M, K, eps, MAX_ROWS_C, BLOCK_K)
    acc = tl.zeros((MAX_ROWS_C, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + m[:, None] * K + k[None, :], mask=m_ok[:, None] & (k < K)[None, :], other=0.0)
        normed = _normed(x.to(tl.float32), norm_weight_ptr, k[None, :], K, inverse_rms[:, None], dtype, NORM)
        w = tl.load(w_ptr + rows[:, None].to(tl.int64) * K + k[None, :], mask=row_ok[:, None] & (k < K)[None, :],
                    other=0.0)
        if DOT_FLOAT32:
            acc += tl.dot(normed, w.to(tl.float32).T, input_precision="ieee")
        else:
            acc += tl.dot(normed.to(dtype), w.T)
    y = acc + tl.load(b_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)[None, :]
    width = N0 + N1 + N2
    tl.store(out_ptr + m[:, None] * width + offset + rows[None, :], y.to(out_ptr.dtype.element_ty),
             mask=m_ok[:, None] & row_ok[None, :])


def _bf16_fragments_ptx() -> str:
    """PTX for 2 k-steps of bf16 weights (mxfp4_fragments' scheme without the decoding): $4-$7 hold 8 bf16 of row
    a, $8-$11 of row b, $12-$15 x's pairs of the same 8 columns, $16-$19 the sums in; $0-$3 the sums out. k-step s
    takes words 2s and 2s+1: k slots 2t, 2t+1 are word 2s's columns, 2t+8, 2t+9 word 2s+1's, in both operands."""
    steps = [f"mov.b32 ${i}, ${16 + i};" for i in range(4)]
    for s in range(2):
        a, b, x = 4 + 2 * s, 8 + 2 * s, 12 + 2 * s
        steps.append("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {$0, $1, $2, $3}, "
                     f"{{${a}, ${b}, ${a + 1}, ${b + 1}}}, {{${x}, ${x + 1}}}, {{$0, $1, $2, $3}};")
    return "{ " + " ".join(steps) + " }"


BF16_FRAGMENTS_PTX = tl.constexpr(_bf16_fragments_ptx())
FRAGMENT_CONSTRAINTS = tl.constexpr(",".join(["=f"] * 4 + ["r"] * 12 + ["f"] * 4))


@triton.jit
def _normed_pairs(pairs, norm_weight_ptr, column, inverse_rms, dtype):
    """x's bf16 pairs [R, 4] int32 (8 columns from `column` [R]) -> GptOssRMSNorm's output, as bf16 pairs."""
    norm_pairs = tl.load(norm_weight_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + column[:, None] // 2
                         + tl.arange(0, 4)[None, :])
    x_low, x_high = bf16_halves(pairs)
    weight_low, weight_high = bf16_halves(norm_pairs)
    low = _rms_normed(x_low, weight_low, inverse_rms[:, None], dtype)
    high = _rms_normed(x_high, weight_high, inverse_rms[:, None], dtype)
    return (low.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF) | (high.to(tl.int16, bitcast=True).to(tl.int32) << 16)


@triton.jit
def _fragment_operands(weights, x_words, norm_weight_ptr, row_a, row_b, N, g, slot_ok, thread, inverse_rms, k0, K,
                       dtype, NORM: tl.constexpr):
    """One step's loads from input column k0: thread (g, t)'s 16 bytes (8 bf16) of rows a and b and x's row g
    (normalised if NORM) at the same 8 columns, each [R, 4] int32 of bf16 pairs; zeros past K."""
    word = tl.arange(0, 4)[None, :]
    column = k0 + (thread // 32) * 32 + (thread % 4) * 8  # the thread's first column
    ok = column < K
    wa = tl.load(weights + (row_a.to(tl.int64) * (K // 2) + column // 2)[:, None] + word,
                 mask=(ok & (row_a < N))[:, None], other=0)
    wb = tl.load(weights + (row_b.to(tl.int64) * (K // 2) + column // 2)[:, None] + word,
                 mask=(ok & (row_b < N))[:, None], other=0)
    x_ok = (ok & slot_ok)[:, None]
    xq = tl.load(x_words + (g * (K // 2) + column // 2)[:, None] + word, mask=x_ok, other=0)
    if NORM:
        xq = tl.where(x_ok, _normed_pairs(xq, norm_weight_ptr, column, inverse_rms, dtype), 0)
    return wa, wb, xq


@triton.jit
def _bf16_fragment_products(wa, wb, xq, acc, R: tl.constexpr, EMULATE: tl.constexpr):
    """acc [R, 4] += the mma sums of one step (fragment_sums under the interpreter)."""
    if EMULATE:
        return acc + fragment_sums(pairs_to_values(wa, R), pairs_to_values(wb, R), pairs_to_values(xq, R), R, 8)
    return tl.inline_asm_elementwise(BF16_FRAGMENTS_PTX, FRAGMENT_CONSTRAINTS, [wa, wb, xq, acc], dtype=tl.float32,
                                     is_pure=True, pack=4)


@triton.jit
def _norm_linear_fragments_kernel(x_ptr, M, norm_weight_ptr, eps, w0_ptr, b0_ptr, N0, w1_ptr, b1_ptr, N1, w2_ptr,
                                  b2_ptr, N2, out_ptr, K, NORM: tl.constexpr, WARPS: tl.constexpr,
                                  EMULATE: tl.constexpr):
    """x [M, K] bf16 (M <= FRAGMENT_ROWS) -> out [M, N0 + N1 + N2] as _norm_linear_rows_kernel, on the tensor cores
    through register fragments (kernels/mxfp4_fragments.py's scheme; bf16 weights need no decoding, a thread's
    16-byte load of a row is its operand): program p takes 16 weight rows, rows a = first + g and b = a + 8 of
    thread (g, t), x's row g as token slot g; its WARPS warps split the input columns, 32 a step each."""
    projection, N, first, offset = _share(tl.program_id(0), N0, N1, N2, 16)
    w_ptr, b_ptr = _pick(projection, w0_ptr, w1_ptr, w2_ptr), _pick(projection, b0_ptr, b1_ptr, b2_ptr)
    R: tl.constexpr = 32 * WARPS
    thread = tl.arange(0, R)
    g = (thread % 32) // 4
    row_a = first + g
    row_b = row_a + 8
    slot_ok = g < M
    dtype = x_ptr.dtype.element_ty
    inverse_rms = tl.full((R,), 1.0, dtype=tl.float32)
    if NORM:  # each of x's rows' 1/rms, then thread (g, t)'s: slot g's
        of_rows = _inverse_rms_of_rows(x_ptr, M, K, eps, 8, 512)
        inverse_rms = tl.sum(tl.where(g[:, None] == tl.arange(0, 8)[None, :], of_rows[None, :], 0.0), axis=1)
    weights = w_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    x_words = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    acc = tl.zeros((R, 4), dtype=tl.float32)
    STEP: tl.constexpr = 32 * WARPS  # input columns a step: 8 a thread, 4 threads a row, WARPS warps
    # two steps an iteration, whose loads the iteration before issued: with each step's loads in the step itself,
    # ptxas placed every load right before its mma (scripts/fragments_sass.py), one load in flight at a time
    wa0, wb0, x0 = _fragment_operands(weights, x_words, norm_weight_ptr, row_a, row_b, N, g, slot_ok, thread,
                                      inverse_rms, 0, K, dtype, NORM)
    wa1, wb1, x1 = _fragment_operands(weights, x_words, norm_weight_ptr, row_a, row_b, N, g, slot_ok, thread,
                                      inverse_rms, STEP, K, dtype, NORM)
    for k0 in range(0, K, 2 * STEP):
        wa2, wb2, x2 = _fragment_operands(weights, x_words, norm_weight_ptr, row_a, row_b, N, g, slot_ok, thread,
                                          inverse_rms, k0 + 2 * STEP, K, dtype, NORM)
        wa3, wb3, x3 = _fragment_operands(weights, x_words, norm_weight_ptr, row_a, row_b, N, g, slot_ok, thread,
                                          inverse_rms, k0 + 3 * STEP, K, dtype, NORM)
        acc = _bf16_fragment_products(wa0, wb0, x0, acc, R, EMULATE)
        acc = _bf16_fragment_products(wa1, wb1, x1, acc, R, EMULATE)
        wa0, wb0, x0, wa1, wb1, x1 = wa2, wb2, x2, wa3, wb3, x3
    first_rows, second_rows = fragment_results(acc, WARPS)  # rows a, b: [32, 2]
    lane = tl.arange(0, 32)
    row_a = first + lane // 4
    slot = 2 * (lane % 4)[:, None] + tl.arange(0, 2)[None, :]  # [32, 2]
    width = N0 + N1 + N2
    y_a = first_rows + tl.load(b_ptr + row_a, mask=row_a < N, other=0.0).to(tl.float32)[:, None]
    y_b = second_rows + tl.load(b_ptr + row_a + 8, mask=row_a + 8 < N, other=0.0).to(tl.float32)[:, None]
    tl.store(out_ptr + slot * width + offset + row_a[:, None], y_a.to(out_ptr.dtype.element_ty),
             mask=(slot < M) & (row_a < N)[:, None])
    tl.store(out_ptr + slot * width + offset + row_a[:, None] + 8, y_b.to(out_ptr.dtype.element_ty),
             mask=(slot < M) & (row_a + 8 < N)[:, None])


def takes_fragments(x) -> bool:
    """Whether norm_linear runs x through the fragments kernel: bf16, 1 to FRAGMENT_ROWS rows, whole 16-byte
    runs of input columns, on CUDA or under the interpreter."""
    K = x.shape[-1]
    return (FRAGMENTS and x.dtype == torch.bfloat16 and x.numel() // K <= FRAGMENT_ROWS and K % 8 == 0
            and (x.is_cuda or INTERPRETED))


def norm_linear(x, norm, linears, block_n: int | None = None, block_k: int | None = None, warps: int = 4):
    """x [..., K] holding 1 to MAX_ROWS rows, norm a GptOssRMSNorm (or None: x as it is), linears up to three
    nn.Linear with biases -> [linear(norm(x)) for each linear], each [..., N_i] in x's dtype."""
    K = x.shape[-1]
    rows = x.numel() // K
    if not 1 <= rows <= MAX_ROWS or not 1 <= len(linears) <= 3 or any(layer.bias is None for layer in linears):
        raise ValueError(f"norm_linear: expected x holding 1 to {MAX_ROWS} rows (got {tuple(x.shape)}) and 1-3 "
                         f"linears with biases (got {len(linears)}, biases {[layer.bias is not None for layer in linears]})")
    x = x.contiguous()
    sizes = [layer.out_features for layer in linears]
    out = torch.empty(*x.shape[:-1], sum(sizes), dtype=x.dtype, device=x.device)
    arguments = []
    for layer, size in zip(linears + [linears[0]] * (3 - len(linears)), sizes + [0] * (3 - len(linears))):
        arguments += [layer.weight, layer.bias, size]  # a missing projection: zero rows, no programs
    norm_weight, eps = (norm.weight, norm.eps) if norm is not None else (x, 0.0)  # no norm: never read
    block_n, block_k = block_n or 16, block_k or (512 if rows == 1 else 256)
    if takes_fragments(x):
        _norm_linear_fragments_kernel[(sum(triton.cdiv(size, 16) for size in sizes),)](
            x, rows, norm_weight, eps, *arguments, out, K, NORM=norm is not None, WARPS=FRAGMENT_WARPS,
            EMULATE=INTERPRETED, num_warps=FRAGMENT_WARPS)
        return list(out.split(sizes, dim=-1))
    grid = (sum(triton.cdiv(size, block_n) for size in sizes),)
    if rows == 1:
        _norm_linear_kernel[grid](x, norm_weight, eps, *arguments, out, K, NORM=norm is not None, BLOCK_N=block_n,
                                  BLOCK_K=block_k, num_warps=warps)
    else:
        _norm_linear_rows_kernel[grid](x, rows, norm_weight, eps, *arguments, out, K, NORM=norm is not None,
                                       DOT_FLOAT32=x.dtype == torch.float32 or INTERPRETED, BLOCK_N=block_n,
                                       BLOCK_K=block_k, num_warps=warps, num_stages=3)
    return list(out.split(sizes, dim=-1))
