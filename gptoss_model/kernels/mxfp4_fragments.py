"""Packed MXFP4 experts for a few tokens an expert (decoding): the weights decoded in registers straight into the
tensor cores' operand fragments, one `mma.sync.m16n8k16` (bf16 in, float32 sums) per 16 rows × 16 input columns.

Why a second kernel beside mxfp4_moe.py's: at one to a few tokens an expert, that kernel's products are either
float32 multiply-adds on the CUDA cores (the one-row path: 7.7 machine instructions a weight in its main loop as
the GPU's Triton 3.6 compiles it, 8.6 over the whole kernel by Nsight Compute's count on the H200) or tensor-core
tiles whose decoded weights pass through shared memory (126 registers, 25 % occupancy). Here a warp's 32 threads
each decode the 8 weights the hardware expects of them (the A fragment, PTX ISA "Matrix fragments for
mma.m16n8k16") and the multiply-adds are the tensor cores': 3.4 instructions a weight in the main loop (4.1
with two multiplies, see ONE_MULTIPLY; scripts/fragments_sass.py). One 20b layer's experts on the H200: 0.037
against 0.047 ms at 1 token, 0.218 against 0.278 ms at 8 (docs/benchmarks.md, sixth session).

The weights stay in the checkpoint's layout ([E, N, K/32, 16] bytes, byte j of a row holding input columns 2j and
2j+1). What makes that possible is the freedom of a dot product's order: the 16 "k" slots of one mma may be any 16
input columns, if the weights and x use the same ones. Thread (g, t) of a warp (g = lane / 4, t = lane % 4) loads
16 bytes (32 input columns, one scale block) of weight row a and of row b, and x's values of those 32 columns for
token slot g. Its k-step s (8 in all) takes bytes 2s and 2s+1 of each row, columns c..c+3 (c = 4s):
  A registers: {lo(a, 2s), lo(a, 2s+1)}, {lo(b, ..)}, {hi(a, ..)}, {hi(b, ..)} = columns (c, c+2) and (c+1, c+3)
  B registers: {x[c], x[c+2]}, {x[c+1], x[c+3]}
so that k slots 2t, 2t+1, 2t+8, 2t+9 are columns c, c+2, c+1, c+3 of thread t's range in both operands. The A
registers are what mxfp4_moe._e2m1_pairs already makes of 4 bytes (bytes 2s, 2s+1 of a beside those of b).
Rows a and b are the fragment's rows g and g + 8: for the gate/up projection, the gate and up rows of one output
(rows 2i and 2i + 1, docs/model.md), so the clamped SwiGLU needs no other thread; for the down projection, rows
16T + g and 16T + g + 8. The 8 columns of B (and of the sums) are 8 token slots: a tile is up to 8 rows of one
expert (batch-1 decoding: one row, the chosen expert).

The register-to-thread mapping is Triton's: the [32·W, 4] int32 tensors here are loaded 16 bytes a row, which gives
row i to thread i (warp i // 32, lane i % 32); the kernel cases check that on CUDA (one-hot x rows must give
every weight exactly, which a thread holding another's fragment would not) and tests/test_gpu_mxfp4.py the 20b
shape against dequantize-then-matmul. Under Triton's CPU interpreter (no PTX) `_fragment_products` computes the
same sums with tensor operations (tests/mxfp4_kernel_cases.py).
"""

import os

import torch
import triton
import triton.language as tl

from gptoss_model.kernels.mxfp4_moe import (PAIR_UNIT, _e2m1, _swiglu, _tile_rows, bf16_halves, both_lanes,
                                            decode_pair_ptx)

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
WARPS = 4  # warps a program: they share a tile's 16 rows and split its input columns (row tiles: batch 1)
SORTED_WARPS = 2  # the same for tiles of sorted rows (batch 2 and more): 2 warps measured faster than 4 at 8-16
# tokens a layer (sixth session) and batch-8 decoding 0.7-1.6 % faster in two calls (seventh; docs/benchmarks.md)
PREFETCH = True  # issue a step's loads one step ahead (scripts/bench_mxfp4_kernels.py times both)
MAX_REGISTERS = None  # ptxas's register limit for the kernel (None: its own choice, 58 with Triton 3.6). At 40 (no
# spills, offline) an SM holds 12 programs of 4 warps instead of 8, and batch 1's gate/up launch (1,440 programs)
# one wave instead of 1.36: bench_decode_variants.py's "experts-one-wave", measured slower (seventh session)
MAX_ROWS = 64  # up to this many (token, expert) rows, packed_experts_forward takes this kernel
ONE_MULTIPLY = True  # where every scale byte is at most UNIT_IN_SCALE_LIMIT (all of gpt-oss's), the decoded codes
# take one bf16x2 multiply by the scale times 2^126 instead of one by 2^126 and one by the scale: the main loop's
# 262 machine instructions a step become 215 (Triton 3.6, sm_90, scripts/fragments_sass.py)
# Measured slower or flat, and removed (docs/benchmarks.md; commit 51c9f02 has the first three with their tests and
# bench_decode_variants parts, 09662a2 the fourth):
# - batch 1's input columns split over 2-3 programs, the float32 sums finished after: 438.3 against 464.0 tok/s;
# - two operand sets a warp, one step's loads in flight during the other's products: batch 1 468.6 against 467.7,
#   batch 8 1,492.8 against 1,508.3;
# - the rows' biases loaded before the loop: 463.7 against 462.7, 1,519.2 against 1,521.4;
# - the loop pipelined by Triton, every load an async copy into shared memory 2-3 steps ahead: batch 1 369 against
#   467, batch 8 1,162 against 1,517;
# - a step's weights and scales issued two steps ahead in registers, its x one (tenth session, not committed):
#   batch 1 463.1 against 467.7, batch 8 1,495.2 against 1,531.6.


def _fragments_ptx(half: int, unit_in_scale: bool) -> str:
    """PTX for 4 k-steps (the half `half` of a thread's 32 columns). Operands: $0-$3 the sums out; $4-$7 row a's
    16 bytes, $8-$11 row b's; $12-$15 and $16-$19 x's bf16 pairs of the half's 16 columns; $20/$21 the scales of
    rows a/b as bf16x2 (unit_in_scale: times 2^126, see _scale_pair); $24-$27 the sums in."""
    steps = ["mov.b32 zero, 0;", f"mov.b32 unit, {both_lanes(PAIR_UNIT)};"]
    steps += [f"mov.b32 ${i}, ${24 + i};" for i in range(4)]
    for s in range(4):
        word = 2 * half + s // 2
        first = 2 * (s % 2)  # bytes 2s, 2s+1 of the half: bytes first, first+1 of the word
        spread_bytes = first | 4 << 4 | (first + 1) << 8 | 4 << 12  # each byte alone in a 16-bit lane
        steps += [f"prmt.b32 la, ${4 + word}, zero, 0x{spread_bytes:04X};",
                  f"prmt.b32 lb, ${8 + word}, zero, 0x{spread_bytes:04X};"]
        for out, lanes, nibble, scale in (("a0", "la", 0x0F, "$20"), ("a1", "lb", 0x0F, "$21"),
                                          ("a2", "la", 0xF0, "$20"), ("a3", "lb", 0xF0, "$21")):
            steps += decode_pair_ptx(out, lanes, nibble, scale, unit_in_scale)
        x0, x1 = 12 + 2 * s, 13 + 2 * s  # x's words of columns c, c+1 and c+2, c+3
        steps += [f"prmt.b32 b0, ${x0}, ${x1}, 0x5410;", f"prmt.b32 b1, ${x0}, ${x1}, 0x7632;",
                  "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {$0, $1, $2, $3}, {a0, a1, a2, a3}, "
                  "{b0, b1}, {$0, $1, $2, $3};"]
    return "{ .reg .b32 zero, unit, la, lb, w, a0, a1, a2, a3, b0, b1; " + " ".join(steps) + " }"


FIRST_HALF_PTX = tl.constexpr(_fragments_ptx(0, unit_in_scale=False))
SECOND_HALF_PTX = tl.constexpr(_fragments_ptx(1, unit_in_scale=False))
FIRST_HALF_ONE_MULTIPLY_PTX = tl.constexpr(_fragments_ptx(0, unit_in_scale=True))
SECOND_HALF_ONE_MULTIPLY_PTX = tl.constexpr(_fragments_ptx(1, unit_in_scale=True))
CONSTRAINTS = tl.constexpr(",".join(["=f"] * 4 + ["r"] * 20 + ["f"] * 4))
UNIT_IN_SCALE_LIMIT = 128  # the largest scale byte whose 2^(byte - 127) · 2^126 a bfloat16 holds (2^127)


@triton.jit
def _bytes_to_values(words, scale, R: tl.constexpr, ONE_MULTIPLY: tl.constexpr):
    """[R, 4] int32 holding 16 bytes of a weight row, its block's scale as bf16x2 bits [R] (ONE_MULTIPLY: times
    2^126) -> the 32 weights [R, 32] float32 in column order (the interpreter's path)."""
    shifts = tl.arange(0, 4) * 8
    packed = tl.reshape((words[:, :, None] >> shifts[None, None, :]) & 0xFF, (R, 16))  # byte j = 4·word + b
    values = tl.reshape(tl.join(_e2m1(packed & 0x0F), _e2m1(packed >> 4)), (R, 32))  # column 2j, 2j+1
    if ONE_MULTIPLY:
        values = values * 2.0 ** -126  # exact: E2M1 values times a power of two, float32 subnormals included
    return values * ((scale & 0xFFFF) << 16).to(tl.float32, bitcast=True)[:, None]


@triton.jit
def pairs_to_values(q, R: tl.constexpr):
    """[R, 4] int32 of bf16 pairs -> [R, 8] float32 in column order."""
    low, high = bf16_halves(q)
    return tl.reshape(tl.join(low, high), (R, 8))


@triton.jit
def _side_by_side(a, b, R: tl.constexpr, C: tl.constexpr):
    """[R, C] and [R, C] -> [R, 2C], a's columns first."""
    return tl.reshape(tl.permute(tl.join(a, b), (0, 2, 1)), (R, 2 * C))


@triton.jit
def fragment_sums(a, b, x, R: tl.constexpr, C: tl.constexpr):
    """What one warp's mma steps sum, as tensor operations (Triton's interpreter runs no PTX): thread i (row i of
    each [R, C] tensor; g = i % 32 // 4, t = i % 4) holds C values of rows a and b of fragment row g and x's values
    of the same C columns for token slot g; the 4 threads t of a row hold its 4C columns. -> [R, 4]: thread (g, t)'s
    sums of rows a, b for slots 2t, 2t+1, the C fragment of PTX's mma.m16n8k16."""
    W: tl.constexpr = R // 32
    x = tl.reshape(x, (W, 1, 8, 4 * C))  # [warp, -, slot, the 4 threads' columns]
    sums_a = tl.reshape(tl.sum(tl.reshape(a, (W, 8, 1, 4 * C)) * x, axis=3), (W, 8, 4, 2))  # [warp, g, t, slot % 2]
    sums_b = tl.reshape(tl.sum(tl.reshape(b, (W, 8, 1, 4 * C)) * x, axis=3), (W, 8, 4, 2))
    return tl.reshape(tl.permute(tl.join(sums_a, sums_b), (0, 1, 2, 4, 3)), (R, 4))


@triton.jit
def fragment_results(acc, WARPS: tl.constexpr):
    """The [32·WARPS, 4] sums of a program's warps (each a share of the input columns) -> (row a's, row b's), each
    [32 threads, 2 slots]: thread (g, t)'s sums for token slots 2t and 2t+1."""
    sums = tl.sum(tl.reshape(acc, (WARPS, 32, 4)), axis=0)  # [32 threads, (row a, row b) × (slot 2t, 2t+1)]
    return tl.split(tl.permute(tl.reshape(sums, (32, 2, 2)), (0, 2, 1)))  # [thread, slot, row a | row b]


@triton.jit
def _fragment_products(wa, wb, q0, q1, q2, q3, scales, acc, R: tl.constexpr, EMULATE: tl.constexpr,
                       ONE_MULTIPLY: tl.constexpr):
    """acc [R, 4] += what the tensor cores make of the fragments: thread (g, t)'s sums of rows a and b (of its
    slot g) for token slots 2t and 2t+1, over the 32 columns of every thread t of its row."""
    if EMULATE:  # the same sums with tensor operations
        sa = tl.sum(tl.where(tl.arange(0, 4)[None, :] == 0, scales, 0), axis=1)
        sb = tl.sum(tl.where(tl.arange(0, 4)[None, :] == 1, scales, 0), axis=1)
        x = _side_by_side(_side_by_side(pairs_to_values(q0, R), pairs_to_values(q1, R), R, 8),
                          _side_by_side(pairs_to_values(q2, R), pairs_to_values(q3, R), R, 8), R, 16)
        a = _bytes_to_values(wa, sa, R, ONE_MULTIPLY)
        b = _bytes_to_values(wb, sb, R, ONE_MULTIPLY)
        return acc + fragment_sums(a, b, x, R, 32)
    if ONE_MULTIPLY:
        acc = tl.inline_asm_elementwise(FIRST_HALF_ONE_MULTIPLY_PTX, CONSTRAINTS,
                                        [wa, wb, q0, q1, scales, acc], dtype=tl.float32, is_pure=True, pack=4)
        return tl.inline_asm_elementwise(SECOND_HALF_ONE_MULTIPLY_PTX, CONSTRAINTS,
                                         [wa, wb, q2, q3, scales, acc], dtype=tl.float32, is_pure=True, pack=4)
    acc = tl.inline_asm_elementwise(FIRST_HALF_PTX, CONSTRAINTS,
                                    [wa, wb, q0, q1, scales, acc], dtype=tl.float32, is_pure=True, pack=4)
    return tl.inline_asm_elementwise(SECOND_HALF_PTX, CONSTRAINTS,
                                     [wa, wb, q2, q3, scales, acc], dtype=tl.float32, is_pure=True, pack=4)


@triton.jit
def _scale_pair(scale_bytes, ONE_MULTIPLY: tl.constexpr):
    """E8M0 scale bytes -> 2^(byte - 127) as bf16 bits in both 16-bit lanes (byte 0: the subnormal 0x0040);
    ONE_MULTIPLY: 2^(byte - 127) · 2^126 = 2^(byte - 1) instead (bytes up to UNIT_IN_SCALE_LIMIT), so that the
    decoded codes take one multiply, not one by 2^126 and one by the scale."""
    if ONE_MULTIPLY:
        bits = (scale_bytes.to(tl.int32) + 126) << 7
    else:
        bits = tl.maximum(scale_bytes.to(tl.int32) << 7, 0x40)
    return bits | (bits << 16)


@triton.jit
def _step_operands(blocks, x_words, scales_ptr, row_a_at, row_b_at, x_row, slot_ok, thread, k0, K,
                   ONE_MULTIPLY: tl.constexpr):
    """The loads of one step from input column k0 (columns from K on: masked): each thread's 16 bytes of rows a
    and b ([R, 4] int32 each), x's 32 values as 4 × [R, 4] int32 of bf16 pairs, and the two rows' scales as bf16x2
    ([R, 4]: words 0 and 1; ONE_MULTIPLY: see _scale_pair)."""
    word = tl.arange(0, 4)[None, :]
    column = k0 + (thread // 32) * 128 + (thread % 4) * 32  # the thread's first column
    ok = column < K
    wa = tl.load(blocks + (row_a_at * (K // 8) + column // 8)[:, None] + word, mask=ok[:, None], other=0)
    wb = tl.load(blocks + (row_b_at * (K // 8) + column // 8)[:, None] + word, mask=ok[:, None], other=0)
    xs = x_words + (x_row * (K // 2) + column // 2)[:, None] + word
    x_ok = (ok & slot_ok)[:, None]
    q0 = tl.load(xs, mask=x_ok, other=0)
    q1 = tl.load(xs + 4, mask=x_ok, other=0)
    q2 = tl.load(xs + 8, mask=x_ok, other=0)
    q3 = tl.load(xs + 12, mask=x_ok, other=0)
    sa = _scale_pair(tl.load(scales_ptr + row_a_at * (K // 32) + column // 32, mask=ok, other=127), ONE_MULTIPLY)
    sb = _scale_pair(tl.load(scales_ptr + row_b_at * (K // 32) + column // 32, mask=ok, other=127), ONE_MULTIPLY)
    scales = tl.where(word == 0, sa[:, None], tl.where(word == 1, sb[:, None], 0))
    return wa, wb, q0, q1, q2, q3, scales


@triton.jit
def _fragment_rows(block, g, SWIGLU: tl.constexpr):
    """The weight rows a and b of fragment row g in row block `block`: for the gate/up projection the gate and up
    rows of output 8·block + g (rows 2i and 2i + 1), else rows 16·block + g and + 8. (Pointer-free: see
    mxfp4_moe._tile_rows.)"""
    if SWIGLU:
        row_a = block * 16 + 2 * g
        row_b = row_a + 1
    else:
        row_a = block * 16 + g
        row_b = row_a + 8
    return row_a, row_b


@triton.jit
def _fragments_kernel(
    x_ptr, x_row_ptr, blocks_ptr, scales_ptr, bias_ptr, out_ptr, tile_expert_ptr, tile_start_ptr, tile_end_ptr,
    N, K, alpha, limit,
    GATHER: tl.constexpr, SWIGLU: tl.constexpr, ROW_TILES: tl.constexpr, SHARED_X: tl.constexpr,
    WARPS: tl.constexpr, PREFETCH: tl.constexpr, EMULATE: tl.constexpr, ONE_MULTIPLY: tl.constexpr,
):
    """x [X, K] bf16 (rows picked by x_row [R] when GATHER), blocks [E, N, K/32, 16], scales [E, N, K/32], bias
    [E, N] -> out [R, N] (or [R, N/2] after the SwiGLU). Program (tile, T) computes rows 16T..16T+15 of the tile's
    expert for the tile's rows tile_start..tile_end-1 (at most 8); its WARPS warps split the input columns, 128 a
    step each. ROW_TILES: tile t is row t; SHARED_X: every row reads x's row 0; ONE_MULTIPLY: every scale byte is at
    most UNIT_IN_SCALE_LIMIT (see _scale_pair)."""
    tile = tl.program_id(0)  # the tile's loads here, not in a helper: see mxfp4_moe._tile_rows
    expert = tl.load(tile_expert_ptr + tile).to(tl.int64)
    start, end = _tile_rows(tile, tl.load(tile_start_ptr + tile), tl.load(tile_end_ptr + tile), ROW_TILES)
    if start >= end:
        return
    THREADS: tl.constexpr = 32 * WARPS
    thread = tl.arange(0, THREADS)
    g = (thread % 32) // 4
    block = tl.program_id(1)
    row_a, row_b = _fragment_rows(block, g, SWIGLU)
    slot_ok = start + g < end
    if GATHER:
        x_row = tl.load(x_row_ptr + start + g, mask=slot_ok, other=0).to(tl.int64)
    elif SHARED_X:
        x_row = tl.zeros((THREADS,), dtype=tl.int64)
    else:
        x_row = (start + g).to(tl.int64)
    blocks = blocks_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    x_words = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    row_a_at = expert * N + row_a
    row_b_at = expert * N + row_b
    acc = tl.zeros((THREADS, 4), dtype=tl.float32)
    STEP: tl.constexpr = 128 * WARPS  # input columns a step: 32 a thread, 4 threads a row, WARPS warps
    if PREFETCH:  # the next step's loads are issued before this step's products (past K: masked, nothing read)
        wa, wb, q0, q1, q2, q3, scales = _step_operands(blocks, x_words, scales_ptr, row_a_at, row_b_at, x_row,
                                                        slot_ok, thread, 0, K, ONE_MULTIPLY)
        for k0 in range(0, K, STEP):
            wa2, wb2, q02, q12, q22, q32, scales2 = _step_operands(blocks, x_words, scales_ptr, row_a_at, row_b_at,
                                                                   x_row, slot_ok, thread, k0 + STEP, K,
                                                                   ONE_MULTIPLY)
            acc = _fragment_products(wa, wb, q0, q1, q2, q3, scales, acc, THREADS, EMULATE, ONE_MULTIPLY)
            wa, wb, q0, q1, q2, q3, scales = wa2, wb2, q02, q12, q22, q32, scales2
    else:
        for k0 in range(0, K, STEP):
            wa, wb, q0, q1, q2, q3, scales = _step_operands(blocks, x_words, scales_ptr, row_a_at, row_b_at, x_row,
                                                            slot_ok, thread, k0, K, ONE_MULTIPLY)
            acc = _fragment_products(wa, wb, q0, q1, q2, q3, scales, acc, THREADS, EMULATE, ONE_MULTIPLY)
    first, second = fragment_results(acc, WARPS)  # [32, 2] each: rows a and b
    lane = tl.arange(0, 32)
    g = lane // 4
    slot = 2 * (lane % 4)[:, None] + tl.arange(0, 2)[None, :]  # [32, 2]
    out_row = (start + slot).to(tl.int64)
    row_ok = start + slot < end
    out_dtype = out_ptr.dtype.element_ty
    row_a, row_b = _fragment_rows(block, g, SWIGLU)  # lane (g, t)'s rows, for the biases and the stores
    h_a = first.to(out_dtype).to(tl.float32) + tl.load(bias_ptr + expert * N + row_a).to(tl.float32)[:, None]
    h_b = second.to(out_dtype).to(tl.float32) + tl.load(bias_ptr + expert * N + row_b).to(tl.float32)[:, None]
    if SWIGLU:  # gate and up of output 8·block + g: the sums rounded, the bias added, both rounded again
        h = _swiglu(h_a.to(out_dtype).to(tl.float32), h_b.to(out_dtype).to(tl.float32), alpha, limit)
        tl.store(out_ptr + out_row * (N // 2) + (block * 8 + g)[:, None], h.to(out_dtype), mask=row_ok)
    else:
        tl.store(out_ptr + out_row * N + row_a[:, None], h_a.to(out_dtype), mask=row_ok)
        tl.store(out_ptr + out_row * N + row_b[:, None], h_b.to(out_dtype), mask=row_ok)


def fits(x: torch.Tensor, blocks: torch.Tensor) -> bool:
    """Whether this kernel serves these experts: bf16 activations (the tensor cores' bf16 products), whole
    16-row fragments, on CUDA or under the interpreter."""
    return x.dtype == torch.bfloat16 and blocks.shape[1] % 16 == 0 and (x.is_cuda or INTERPRETED)


def moe_mxfp4_fragments(x, blocks, scales, bias, tiles, x_rows=None, swiglu=None, warps=None, largest_scale=None):
    """What mxfp4_moe.moe_mxfp4_linear computes, for tiles of at most 8 rows of one expert: out[r] =
    x[x_rows[r]] @ dequantize(blocks, scales)[e].T + bias[e]. tiles = (expert, start, end) int32 [T] each, or the
    experts [R] of rows 0..R-1, a row a tile, reading x's row 0 if x has one row (batch-1 decoding). warps: a
    program's (default WARPS for row tiles, SORTED_WARPS for the others). largest_scale: the largest byte of
    `scales` if known (MXFP4Experts.largest_scale_byte), else found here (a GPU sync)."""
    E, N, G, _ = blocks.shape
    K = G * 32
    if not fits(x, blocks):
        raise ValueError(f"moe_mxfp4_fragments: expected bf16 x on CUDA and N % 16 == 0; got {x.dtype} on "
                         f"{x.device}, N = {N}")
    x = x.contiguous()  # rows of K values one after the other
    row_tiles = isinstance(tiles, torch.Tensor)
    warps = warps or (WARPS if row_tiles else SORTED_WARPS)
    if row_tiles:
        tiles = (tiles, tiles, tiles)
        rows = tiles[0].shape[0]
    else:
        rows = x_rows.shape[0] if x_rows is not None else x.shape[0]
    out = torch.empty(rows, N // 2 if swiglu else N, dtype=x.dtype, device=x.device)
    expert, start, end = tiles
    alpha, limit = swiglu if swiglu else (0.0, 0.0)
    if largest_scale is None:
        largest_scale = int(scales.max())
    one_multiply = ONE_MULTIPLY and largest_scale <= UNIT_IN_SCALE_LIMIT
    _fragments_kernel[(expert.shape[0], N // 16)](
        x, x_rows if x_rows is not None else x, blocks, scales, bias, out, expert, start, end, N, K, alpha, limit,
        GATHER=x_rows is not None, SWIGLU=swiglu is not None, ROW_TILES=row_tiles,
        SHARED_X=row_tiles and x.shape[0] == 1 and rows > 1, WARPS=warps, PREFETCH=PREFETCH, EMULATE=INTERPRETED,
        ONE_MULTIPLY=one_multiply,
        num_warps=warps, **({"maxnreg": MAX_REGISTERS} if MAX_REGISTERS else {}))
    return out
