"""Fused MXFP4 dequantize-and-multiply for the selected experts (Triton), and the CUDA forward of MXFP4Experts.

One kernel, `_moe_mxfp4_kernel`, computes out[r] = x[x_row[r]] @ W[e].T + b[e] for a run of rows r that all chose
expert e, reading W[e] as packed MXFP4: each [BLOCK_N, BLOCK_K] weight tile is loaded as BLOCK_K/2 bytes and
BLOCK_K/32 scale bytes per output row, decoded in registers (`_e2m1`, `_e8m0`: bit arithmetic, exact) and fed
straight to the products; no dequantized weight ever reaches memory. Byte j of a row holds input columns 2j (low
nibble) and 2j+1 (high nibble). The one-row path multiplies the low nibbles by x's even columns and the high ones by
its odd columns; the tensor-core path interleaves the codes in registers instead, so that x's tile is loaded with
contiguous vector loads (a strided even/odd load of x measured 5x slower there: docs/benchmarks.md).
Work is cut into tiles of rows ("tiles": expert, first row, end row), so one launch serves every expert:
- prefill / larger batches: rows sorted by expert (a counting sort, fast._sort_by_expert), tiles of BLOCK_M rows
  through tl.dot;
- batch-1 decoding: each of the K chosen (token, expert) pairs is its own one-row tile, unsorted, computed as a
  matrix-vector product (ONE_ROW) that reads each chosen weight once.
The gate/up projection fuses the bias and the clamped SwiGLU (its columns interleave gate and up), the down
projection the bias; the K results of a token are then weighted and summed in PyTorch.

Tested against dequantize-then-matmul on the CPU through Triton's interpreter (TRITON_INTERPRET=1,
tests/test_mxfp4_kernels.py) and on CUDA (tests/test_gpu_mxfp4.py).
"""

import os

import torch
import triton
import triton.language as tl

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) by case: the best of scripts/bench_mxfp4_kernels.py's sweep on
# the H200 (docs/benchmarks.md, "Packed MXFP4 experts"; docs/results/mxfp4-kernels-h200-2026-12-01-sweep.json)
CONFIGS = {
    "one_row": (1, 32, 256, 4, 3),
    "small": (16, 32, 64, 4, 3),
    "large": (128, 64, 64, 8, 3),
}
SMALL_ROWS = 256  # up to this many (token, expert) rows, the "small" tiles
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (tests)


@triton.jit
def _e2m1(codes):
    """FP4 E2M1 codes (0..15, any integer type) -> float32 values, by bit arithmetic (the E2M1 table of gptoss_convert/mxfp4.py): magnitude m = 2e + b
    is 2^(e-1)·(1 + b/2) for e >= 1, which has float32 bits (m << 22) + (126 << 23); m = 1 is 0.5, m = 0 is 0."""
    c = codes.to(tl.uint32)
    m = c & 7
    bits = tl.where(m >= 2, (m << 22) + (126 << 23), tl.where(m == 1, 126 << 23, 0)) | ((c & 8) << 28)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _e8m0(scale_bytes):
    """E8M0 scale bytes -> 2^(byte - 127) as float32, exactly (byte 0 is the float32 subnormal 2^-127)."""
    s = scale_bytes.to(tl.uint32)
    return tl.where(s == 0, 0x00400000, s << 23).to(tl.float32, bitcast=True)


@triton.jit
def _matvec_step(x_ptr, x_row, blocks_ptr, scales_ptr, w_row, col_ok, k0, K,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One row: Σ over input columns k0..k0+BLOCK_K of W[w_row, k] · x[k] -> float32 [BLOCK_N]. The tile is read as
    [BLOCK_N, groups, 16] bytes (16-byte loads), each code pair multiplies the even and the odd input column, and
    the scale (a power of two: exact) multiplies each group's sum rather than each weight."""
    G: tl.constexpr = BLOCK_K // 32
    group = k0 // 32 + tl.arange(0, G)  # [G]
    byte = tl.arange(0, 16)  # [16]
    group_ok = group < K // 32
    at = (w_row[:, None, None] * (K // 2) + group[None, :, None] * 16 + byte[None, None, :])  # [BN, G, 16]
    ok = col_ok[:, None, None] & group_ok[None, :, None]
    packed = tl.load(blocks_ptr + at, mask=ok, other=0)
    column = group[:, None] * 32 + 2 * byte[None, :]  # [G, 16] the even input column of each byte
    x_ok = group_ok[:, None]
    x_even = tl.load(x_ptr + x_row * K + column, mask=x_ok, other=0.0).to(tl.float32)
    x_odd = tl.load(x_ptr + x_row * K + column + 1, mask=x_ok, other=0.0).to(tl.float32)
    partial = tl.sum(_e2m1(packed & 0x0F) * x_even[None] + _e2m1(packed >> 4) * x_odd[None], axis=2)  # [BN, G]
    scale = _e8m0(tl.load(scales_ptr + w_row[:, None] * (K // 32) + group[None, :],
                          mask=col_ok[:, None] & group_ok[None, :], other=127))
    return tl.sum(partial * scale, axis=1)


@triton.jit
def _weight_tile(blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Rows w_row [BLOCK_N] (of the [E·out] weight rows), input columns k0..k0+BLOCK_K -> float32 [BN, BLOCK_K],
    for the tensor-core path: x's tile stays contiguous (vector loads), the codes are interleaved in registers."""
    byte = k0 // 2 + tl.arange(0, BLOCK_K // 2)
    group = k0 // 32 + tl.arange(0, BLOCK_K // 32)
    packed = tl.load(blocks_ptr + w_row[:, None] * (K // 2) + byte[None, :],
                     mask=col_ok[:, None] & (byte < K // 2)[None, :], other=0)  # [BN, BK/2]
    scale = tl.load(scales_ptr + w_row[:, None] * (K // 32) + group[None, :],
                    mask=col_ok[:, None] & (group < K // 32)[None, :], other=127)  # [BN, BK/32]
    codes = tl.interleave(packed & 0x0F, packed >> 4)  # [BN, BK]: element 2j is byte j's low nibble
    values = tl.reshape(_e2m1(codes), (BLOCK_N, BLOCK_K // 32, 32)) * _e8m0(scale)[:, :, None]
    return tl.reshape(values, (BLOCK_N, BLOCK_K))


@triton.jit
def _moe_mxfp4_kernel(
    x_ptr, x_row_ptr, blocks_ptr, scales_ptr, bias_ptr, out_ptr,
    tile_expert_ptr, tile_start_ptr, tile_end_ptr,
    N, K, alpha, limit,
    GATHER: tl.constexpr, SWIGLU: tl.constexpr, ONE_ROW: tl.constexpr, DOT_FLOAT32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """x [X, K] (rows picked by x_row [R] when GATHER, else x row = r), blocks [E, N, K/32, 16], scales [E, N, K/32],
    bias [E, N] -> out [R, N] (or [R, N/2] after the SwiGLU). Tile t covers rows tile_start[t]..tile_end[t]-1, all
    of expert tile_expert[t]; an empty tile does nothing. ONE_ROW tiles hold one row each (BLOCK_M = 1)."""
    tile = tl.program_id(0)
    expert = tl.load(tile_expert_ptr + tile).to(tl.int64)
    start = tl.load(tile_start_ptr + tile)
    end = tl.load(tile_end_ptr + tile)
    if start >= end:
        return
    rows = start + tl.arange(0, BLOCK_M)
    row_ok = rows < end
    if GATHER:
        x_rows = tl.load(x_row_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    else:
        x_rows = rows.to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    w_row = expert * N + cols
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if ONE_ROW:  # a matrix-vector product: memory-bound, no tensor cores needed
            x_row = tl.sum(x_rows)  # the one row
            acc += _matvec_step(x_ptr, x_row, blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N, BLOCK_K)[None, :]
        else:
            k = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + x_rows[:, None] * K + k[None, :], mask=row_ok[:, None] & (k < K)[None, :], other=0.0)
            w = _weight_tile(blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N, BLOCK_K)
            if DOT_FLOAT32:  # float32 models, and bf16 under the interpreter (which multiplies bf16 bit patterns)
                acc += tl.dot(x.to(tl.float32), w.T, input_precision="ieee")
            else:
                acc += tl.dot(x, w.to(x.dtype).T)
    out_dtype = out_ptr.dtype.element_ty
    bias = tl.load(bias_ptr + w_row, mask=col_ok, other=0.0).to(tl.float32)
    h = (acc.to(out_dtype).to(tl.float32) + bias[None, :]).to(out_dtype).to(tl.float32)  # parity: matmul, then bias
    if SWIGLU:  # columns interleave gate and up (docs/model.md); same steps as model.clamped_swiglu
        gate, up = tl.split(tl.reshape(h, (BLOCK_M, BLOCK_N // 2, 2)))
        gate = tl.minimum(gate, limit)
        up = tl.minimum(tl.maximum(up, -limit), limit)
        h = (up + 1.0) * (gate * tl.sigmoid(gate * alpha))
        cols = tl.program_id(1) * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
        col_ok = cols < N // 2
        width = N // 2
    else:
        width = N
    tl.store(out_ptr + rows[:, None].to(tl.int64) * width + cols[None, :], h.to(out_dtype),
             mask=row_ok[:, None] & col_ok[None, :])


def moe_mxfp4_linear(x, blocks, scales, bias, tiles, x_rows=None, swiglu=None, config="small"):
    """out[r] = x[x_rows[r]] @ dequantize(blocks, scales)[e].T + bias[e] for every row r of every tile.

    x [X, K] contiguous, blocks [E, N, K/32, 16] / scales [E, N, K/32] uint8, bias [E, N], tiles = (expert,
    start, end) int32 [T] each, covering rows 0..R-1 (R = len(x_rows), or X); swiglu = (alpha, limit) fuses the
    clamped SwiGLU (out [R, N/2]). Returns out in x's dtype."""
    E, N, G, _ = blocks.shape
    K = G * 32
    rows = x_rows.shape[0] if x_rows is not None else x.shape[0]
    out = torch.empty(rows, N // 2 if swiglu else N, dtype=x.dtype, device=x.device)
    block_m, block_n, block_k, warps, stages = CONFIGS[config]
    one_row = config == "one_row"
    if one_row:
        block_m = 1
    expert, start, end = tiles
    grid = (expert.shape[0], triton.cdiv(N, block_n))
    alpha, limit = swiglu if swiglu else (0.0, 0.0)
    _moe_mxfp4_kernel[grid](
        x, x_rows if x_rows is not None else x, blocks, scales, bias, out, expert, start, end, N, K, alpha, limit,
        GATHER=x_rows is not None, SWIGLU=swiglu is not None, ONE_ROW=one_row,
        DOT_FLOAT32=x.dtype == torch.float32 or INTERPRETED,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps, num_stages=stages,
    )
    return out


def tiles_by_expert(ends: torch.Tensor, rows: int, block_m: int):
    """Cut rows sorted by expert (ends [E] int32: cumulative row counts) into tiles of at most block_m rows of one
    expert -> (expert, start, end) int32 [T] with T = a bound known on the host (no sync); unused tiles are empty."""
    E = ends.shape[0]
    ends = ends.long()
    starts = ends - torch.diff(ends, prepend=ends.new_zeros(1))
    tiles = (ends - starts + block_m - 1) // block_m  # [E]
    tile_ends = tiles.cumsum(0)
    count = min(rows, triton.cdiv(rows, block_m) + E)
    t = torch.arange(count, device=ends.device)
    expert = torch.searchsorted(tile_ends, t, right=True).clamp(max=E - 1)  # [T]
    start = starts[expert] + (t - (tile_ends[expert] - tiles[expert])) * block_m
    end = torch.minimum(start + block_m, ends[expert])
    end = torch.where(t < tile_ends[-1], end, start)  # past the last tile: empty
    return expert.int(), start.int(), end.int()


def packed_experts_forward(experts, x, weights, indices):
    """MXFP4Experts.forward on CUDA: x [N, H], weights/indices [N, K] -> [N, H]."""
    N, K = indices.shape
    swiglu = (experts.alpha, experts.limit)
    x = x.contiguous()
    if N == 1:  # batch-1 decoding: K one-row tiles, no sorting
        expert = indices.reshape(-1).int()
        start = torch.arange(K, device=x.device, dtype=torch.int32)
        tiles = (expert, start, start + 1)
        x_rows = torch.zeros(K, device=x.device, dtype=torch.int32)
        a = moe_mxfp4_linear(x, experts.gate_up_proj_blocks, experts.gate_up_proj_scales, experts.gate_up_proj_bias,
                             tiles, x_rows, swiglu, "one_row")
        y = moe_mxfp4_linear(a, experts.down_proj_blocks, experts.down_proj_scales, experts.down_proj_bias,
                             tiles, None, None, "one_row")  # [K, H]
        return (y * weights[0, :, None].to(y.dtype)).sum(dim=0, keepdim=True).to(x.dtype)
    from gptoss_model.fast import _sort_by_expert

    E = experts.gate_up_proj_blocks.shape[0]
    row_of_pair, pair_of_row, ends = _sort_by_expert(indices, E)
    config = "small" if N * K <= SMALL_ROWS else "large"
    tiles = tiles_by_expert(ends, N * K, CONFIGS[config][0])
    x_rows = (pair_of_row // K).int()  # token of each sorted row
    a = moe_mxfp4_linear(x, experts.gate_up_proj_blocks, experts.gate_up_proj_scales, experts.gate_up_proj_bias,
                         tiles, x_rows, swiglu, config)  # [N·K, I]
    y = moe_mxfp4_linear(a, experts.down_proj_blocks, experts.down_proj_scales, experts.down_proj_bias,
                         tiles, None, None, config)  # [N·K, H]
    y = y[row_of_pair].view(N, K, -1) * weights[..., None].to(y.dtype)
    return y.sum(dim=1).to(x.dtype)
