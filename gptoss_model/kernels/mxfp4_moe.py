"""Fused MXFP4 dequantize-and-multiply for the selected experts (Triton), and the CUDA forward of MXFP4Experts.

One kernel, `_moe_mxfp4_kernel`, computes out[r] = x[x_row[r]] @ W[e].T + b[e] for a run of rows r that all chose
expert e, reading W[e] as packed MXFP4: each [BLOCK_N, BLOCK_K] weight tile is loaded as BLOCK_K/2 bytes and
BLOCK_K/32 scale bytes per output row (16-byte vector loads), decoded in registers (`_e2m1`, `_e8m0`: bit
arithmetic, exact; in a bf16 model `_e2m1_pairs`, inline PTX, two weights an instruction) and fed straight to the
products; no dequantized weight ever reaches memory. Byte j of a row holds input columns 2j (low
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

import json
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl


class TileConfig(NamedTuple):
    """How a launch cuts its work: rows, output columns and input columns a program takes per step, warps and
    pipeline stages. split_k > 1 also shares a tile's input columns among split_k programs, which write float32
    partial sums that `_splitk_finish_kernel` adds up in a fixed order (deterministic). decode:
    "bits" builds each weight's float32 bits by arithmetic (`_e2m1`), "f16" places the code's bits in a float16
    that the hardware converts (`_e2m1_f16`: fewer instructions), "pairs" decodes two weights per 32-bit
    instruction in inline PTX (`_e2m1_pairs`: bf16 models on CUDA), "scaled" hands the packed tile and its scales
    to Triton's tl.dot_scaled (tensor-core tiles of a bf16 model). "pairs" and "scaled" multiply in bf16, so a
    float32 model uses "bits" instead; under Triton's interpreter, which runs no PTX, "pairs" runs as "f16".
    block_m = 1 is the matrix-vector path (no tensor cores); one-row tiles may also take block_m = 16 tiles."""
    block_m: int
    block_n: int
    block_k: int
    warps: int
    stages: int
    split_k: int = 1
    decode: str = "bits"


# the best of scripts/bench_mxfp4_kernels.py's sweeps on the H200 (docs/benchmarks.md, "Packed MXFP4 experts";
# docs/results/mxfp4-kernels-h200-2026-12-01-session3-*.json)
CONFIGS = {
    "one_row": TileConfig(1, 16, 512, 4, 3, 1, "pairs"),
    "small": TileConfig(16, 128, 64, 4, 3, 1, "pairs"),
    "large": TileConfig(128, 128, 64, 8, 3, 1, "pairs"),
}
DECODES = ("bits", "f16", "pairs", "scaled")
TILES_ENV = "GPTOSS_MXFP4_TILES"  # a JSON file {kind: [block_m, block_n, ...]} that replaces these tiles, e.g. the
# fastest on another GPU (scripts/bench_mxfp4_kernels.py --save-best FILE)


def tiles_from_file(path: str) -> dict:
    """The tiles of a TILES_ENV file -> {kind: TileConfig}; anything else raises ValueError, in one line naming the
    file and what was expected."""
    expected = (f"{TILES_ENV}={path}: expected a JSON object {{kind: [block_m, block_n, block_k, warps, stages, "
                f"split_k, decode]}} with kinds among {sorted(CONFIGS)} and decode among {list(DECODES)}")
    try:
        with open(path) as tiles_file:
            tiles = {kind: TileConfig(*tile) for kind, tile in json.load(tiles_file).items()}
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{expected}; {type(error).__name__}: {error}") from None
    for kind, tile in tiles.items():
        if (kind not in CONFIGS or tile.decode not in DECODES
                or not all(type(n) is int and n > 0 for n in tile[:6])):
            raise ValueError(f"{expected}; got {kind!r}: {list(tile)}")
    return tiles


if os.environ.get(TILES_ENV):
    CONFIGS.update(tiles_from_file(os.environ[TILES_ENV]))
SMALL_ROWS = 256  # up to this many (token, expert) rows, the "small" tiles
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter (tests)
F16_DECODE_SCALE = tl.constexpr(16384.0)  # _e2m1_f16's values are the E2M1 values times 2^-14


@triton.jit
def _e2m1(codes):
    """FP4 E2M1 codes (0..15, any integer type) -> float32 values, by bit arithmetic (the E2M1 table of gptoss_convert/mxfp4.py): magnitude m = 2e + b
    is 2^(e-1)·(1 + b/2) for e >= 1, which has float32 bits (m << 22) + (126 << 23); m = 1 is 0.5, m = 0 is 0."""
    c = codes.to(tl.uint32)
    m = c & 7
    bits = tl.where(m >= 2, (m << 22) + (126 << 23), tl.where(m == 1, 126 << 23, 0)) | ((c & 8) << 28)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _e2m1_f16(codes):
    """FP4 E2M1 codes -> their values times 2^-14, as float32: the code's exponent and mantissa bits land on a
    float16's lowest exponent bits and top mantissa bit, so that float16 (bias 15, subnormals for exponent 0)
    holds exactly value · 2^-14 for all 16 codes; the caller multiplies by F16_DECODE_SCALE (exact)."""
    c = codes.to(tl.uint16)
    return (((c & 7) << 9) | ((c & 8) << 12)).to(tl.float16, bitcast=True).to(tl.float32)


# _e2m1_pairs' recipe, checked for all 256 bytes on the CPU (tests/test_mxfp4_kernels.py): a code n alone in a
# 16-bit lane (the low nibble n, or the high one as n << 4), times PAIR_SPREAD (0x1040 = 2^6 + 2^12, or 0x104 for
# n << 4), is n << 6 | n << 12 without carries; PAIR_KEEP (0x81C0) keeps bits 6..8 (n's magnitude bits) and 15 (its
# sign bit), which is the bfloat16 of value(n) · 2^-126 (exponent field 0 makes code 1 the subnormal 2^-127: exact);
# a bfloat16 multiply by 2^126 (PAIR_UNIT) then gives value(n), and one by the block's scale the weight. Each step
# works on a 32-bit register holding two lanes, so two weights cost one instruction.
PAIR_SPREAD_LOW, PAIR_SPREAD_HIGH, PAIR_KEEP, PAIR_UNIT = 0x1040, 0x104, 0x81C0, 0x7E80


def both_lanes(lane: int) -> str:
    """A 16-bit constant in both lanes of a 32-bit PTX register."""
    return f"0x{lane * 0x10001:08X}"


def decode_pair_ptx(out: str, lanes: str, nibble: int, scale: str | None, unit_in_scale: bool = False) -> list[str]:
    """PTX steps turning `lanes` (a 32-bit register holding two bytes, each alone in a 16-bit lane) into the bf16x2
    `out` of their low (nibble 0x0F) or high (0xF0) codes, times the bf16x2 register `scale` (None: unscaled).
    Needs registers w and unit (PAIR_UNIT in both lanes). unit_in_scale: `scale` already holds the factor 2^126
    (the block's scale times PAIR_UNIT, one multiply instead of two: mxfp4_fragments' scales up to 2^1)."""
    spread = PAIR_SPREAD_LOW if nibble == 0x0F else PAIR_SPREAD_HIGH
    steps = [f"and.b32 w, {lanes}, {both_lanes(nibble)};", f"mul.lo.u32 w, w, {spread};",
             f"and.b32 w, w, {both_lanes(PAIR_KEEP)};"]
    if scale is None:
        return steps + [f"mul.rn.bf16x2 {out}, w, unit;"]
    if unit_in_scale:
        return steps + [f"mul.rn.bf16x2 {out}, w, {scale};"]
    return steps + ["mul.rn.bf16x2 w, w, unit;", f"mul.rn.bf16x2 {out}, w, {scale};"]


def _pairs_ptx(scaled: bool = True) -> str:
    """The PTX of _e2m1_pairs: $4 holds four bytes, $5/$6 the scales of bytes 0-1/2-3 (bf16x2); $0/$1 get the
    low-nibble weights of bytes 0-1/2-3, $2/$3 the high-nibble ones. Unscaled (_e2m1_pairs_unscaled): no scale
    registers, the weights come out as the E2M1 values themselves."""
    steps = ["mov.b32 zero, 0;", f"mov.b32 unit, {both_lanes(PAIR_UNIT)};",
             "prmt.b32 lanes01, $4, zero, 0x4140;",  # bytes 0 and 1, each alone in a 16-bit lane
             "prmt.b32 lanes23, $4, zero, 0x4342;"]  # bytes 2 and 3
    for out, lanes, nibble, scale in (("$0", "lanes01", 0x0F, "$5"), ("$1", "lanes23", 0x0F, "$6"),
                                      ("$2", "lanes01", 0xF0, "$5"), ("$3", "lanes23", 0xF0, "$6")):
        steps += decode_pair_ptx(out, lanes, nibble, scale if scaled else None)
    return "{ .reg .b32 zero, unit, lanes01, lanes23, w; " + " ".join(steps) + " }"


PAIRS_PTX = tl.constexpr(_pairs_ptx())
PAIRS_UNSCALED_PTX = tl.constexpr(_pairs_ptx(scaled=False))


@triton.jit
def _e2m1_pairs(packed, scale):
    """Bytes of FP4 codes [...] (uint8) and their blocks' scales as bfloat16 [...] -> (low-nibble weights,
    high-nibble weights) as bfloat16 [...], in inline PTX, four bytes a call: 22 instructions for 8 weights
    (sm_90: bf16x2 multiplies; what the loops compile to: scripts/kernel_sass.py)."""
    return tl.inline_asm_elementwise(asm=PAIRS_PTX, constraints="=r,=r,=r,=r,r,r,r", args=[packed, scale],
                                     dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)


@triton.jit
def _e2m1_pairs_unscaled(packed):
    """_e2m1_pairs without the scale: the E2M1 values (18 instructions for 8 weights), for the one-row path, which
    scales each group's sum instead."""
    return tl.inline_asm_elementwise(asm=PAIRS_UNSCALED_PTX, constraints="=r,=r,=r,=r,r", args=[packed],
                                     dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)


@triton.jit
def _e8m0(scale_bytes):
    """E8M0 scale bytes -> 2^(byte - 127) as float32, exactly (byte 0 is the float32 subnormal 2^-127)."""
    s = scale_bytes.to(tl.uint32)
    return tl.where(s == 0, 0x00400000, s << 23).to(tl.float32, bitcast=True)


@triton.jit
def _e8m0_bf16(scale_bytes):
    """E8M0 scale bytes -> 2^(byte - 127) as bfloat16, exactly, built as bits: the byte is bf16's exponent field
    (byte << 7); byte 0, 2^-127, is the subnormal 0x0040, which max() gives too (every other byte's bits are larger).
    The cast back to 16 bits: Triton 3.6 widens the max with a constant to 32 bits (3.9 does not)."""
    bits = tl.maximum(scale_bytes.to(tl.uint16) << 7, 0x40).to(tl.uint16)
    return bits.to(tl.bfloat16, bitcast=True)


@triton.jit
def _matvec_step(x_ptr, x_row, blocks_ptr, scales_ptr, w_row, col_ok, k0, K,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DECODE: tl.constexpr):
    """One row: W[w_row, k] · x[k] for input columns k0..k0+BLOCK_K, summed over each group of 32 -> float32
    [BLOCK_N, BLOCK_K/32]. The tile is read as [BLOCK_N, groups, 16] bytes (16-byte loads), each code pair
    multiplies the even and the odd input column, and the scale (a power of two: exact) multiplies each group's
    sum rather than each weight."""
    G: tl.constexpr = BLOCK_K // 32
    group = k0 // 32 + tl.arange(0, G)  # [G]
    byte = tl.arange(0, 16)  # [16]
    group_ok = group < K // 32
    # a block's 16 bytes start at (row · K/32 + group) · 16: written so, Triton sees 16-byte aligned runs and loads
    # each block with one vector load (from row · K/2 it cannot tell, and loaded 8 bytes at a time;
    # tests/test_kernel_sass.py)
    at = (w_row[:, None, None] * (K // 32) + group[None, :, None]) * 16 + byte[None, None, :]  # [BN, G, 16]
    ok = col_ok[:, None, None] & group_ok[None, :, None]
    packed = tl.load(blocks_ptr + at, mask=ok, other=0)
    x_even, x_odd = _x_pairs(x_ptr, x_row, group, group_ok, K, BLOCK_N, G)
    scale = _e8m0(tl.load(scales_ptr + w_row[:, None] * (K // 32) + group[None, :],
                          mask=col_ok[:, None] & group_ok[None, :], other=127))  # [BN, G]
    if DECODE == "pairs":
        low, high = _e2m1_pairs_unscaled(packed)
        return tl.sum(low.to(tl.float32) * x_even + high.to(tl.float32) * x_odd, axis=2) * scale
    if DECODE == "f16":
        low, high = _e2m1_f16(packed & 0x0F), _e2m1_f16(packed >> 4)
    else:
        low, high = _e2m1(packed & 0x0F), _e2m1(packed >> 4)
    partial = tl.sum(low * x_even + high * x_odd, axis=2)  # [BN, G]
    if DECODE == "f16":
        partial = partial * F16_DECODE_SCALE
    return partial * scale


@triton.jit
def bf16_halves(words):
    """int32 words each holding a bf16 pair (columns 2j, 2j+1) -> (the low halves, the high halves) as float32."""
    return (words << 16).to(tl.float32, bitcast=True), (words & -65536).to(tl.float32, bitcast=True)


@triton.jit
def _x_pairs(x_ptr, x_row, group, group_ok, K, BLOCK_N: tl.constexpr, G: tl.constexpr):
    """x's even and odd input columns for the bytes of _matvec_step's tile, as float32 [BN, G, 16], loaded in the
    tile's own layout (the addresses broadcast over its rows): each thread reads the x values its bytes need (from
    L1), so that x never passes through shared memory between the threads (scripts/kernel_sass.py). A bf16 pair
    (columns 2j, 2j+1) is one 32-bit word, read 16 bytes at a time; its halves are the two bf16s."""
    pair = (x_row * (K // 32) + group[None, :, None]) * 16 + tl.arange(0, 16)[None, None, :]  # [1, G, 16]
    pair = tl.broadcast_to(pair, (BLOCK_N, G, 16))
    ok = tl.broadcast_to(group_ok[None, :, None], (BLOCK_N, G, 16))
    if x_ptr.dtype.element_ty == tl.bfloat16:
        return bf16_halves(tl.load(x_ptr.to(tl.pointer_type(tl.int32), bitcast=True) + pair, mask=ok, other=0))
    x_even = tl.load(x_ptr + 2 * pair, mask=ok, other=0.0).to(tl.float32)
    return x_even, tl.load(x_ptr + 2 * pair + 1, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _load_tile(blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Rows w_row [BLOCK_N] (of the [E·out] weight rows), input columns k0..k0+BLOCK_K -> (packed bytes
    [BN, BK/2] uint8, scale bytes [BN, BK/32] uint8), addressed in whole 16-byte blocks (see _matvec_step)."""
    byte = tl.arange(0, BLOCK_K // 2)
    group = k0 // 32 + tl.arange(0, BLOCK_K // 32)
    block_of_byte = k0 // 32 + byte // 16
    packed = tl.load(blocks_ptr + (w_row[:, None] * (K // 32) + k0 // 32) * 16 + byte[None, :],
                     mask=col_ok[:, None] & (block_of_byte < K // 32)[None, :], other=0)  # [BN, BK/2]
    scale = tl.load(scales_ptr + w_row[:, None] * (K // 32) + group[None, :],
                    mask=col_ok[:, None] & (group < K // 32)[None, :], other=127)  # [BN, BK/32]
    return packed, scale


@triton.jit
def _weight_tile(blocks_ptr, scales_ptr, w_row, col_ok, k0, K,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DECODE: tl.constexpr):
    """The weight tile of _load_tile -> float32 [BN, BLOCK_K], for the tensor-core path: x's tile stays contiguous
    (vector loads), the codes are interleaved in registers."""
    packed, scale = _load_tile(blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N, BLOCK_K)
    codes = tl.interleave(packed & 0x0F, packed >> 4)  # [BN, BK]: element 2j is byte j's low nibble
    if DECODE == "f16":
        values = _e2m1_f16(codes) * F16_DECODE_SCALE
    else:
        values = _e2m1(codes)
    values = tl.reshape(values, (BLOCK_N, BLOCK_K // 32, 32)) * _e8m0(scale)[:, :, None]
    return tl.reshape(values, (BLOCK_N, BLOCK_K))


@triton.jit
def _weight_tile_pairs(blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """_weight_tile through _e2m1_pairs: the weights come out in bf16, scaled."""
    packed, scale = _load_tile(blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N, BLOCK_K)
    scale = tl.broadcast_to(_e8m0_bf16(scale)[:, :, None], (BLOCK_N, BLOCK_K // 32, 16))
    low, high = _e2m1_pairs(packed, tl.reshape(scale, (BLOCK_N, BLOCK_K // 2)))
    return tl.interleave(low, high)  # [BN, BK]: element 2j is byte j's low nibble


@triton.jit
def _tile_product(acc, x, blocks_ptr, scales_ptr, w_row, col_ok, k0, K,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DECODE: tl.constexpr, DOT_FLOAT32: tl.constexpr):
    """acc [BM, BN] += x [BM, BK] @ W[w_row, k0:k0+BK].T on the tensor cores."""
    if DECODE == "scaled":  # Triton decodes: the packed tile [BK/2, BN] (packed along K) and its scales [BN, BK/32]
        byte = k0 // 2 + tl.arange(0, BLOCK_K // 2)
        group = k0 // 32 + tl.arange(0, BLOCK_K // 32)
        packed = tl.load(blocks_ptr + w_row[None, :] * (K // 2) + byte[:, None],
                         mask=col_ok[None, :] & (byte < K // 2)[:, None], other=0)
        scale = tl.load(scales_ptr + w_row[:, None] * (K // 32) + group[None, :],
                        mask=col_ok[:, None] & (group < K // 32)[None, :], other=127)
        return tl.dot_scaled(x.to(tl.bfloat16), None, "bf16", packed, scale, "e2m1", acc)
    if DECODE == "pairs":  # bf16 models only (moe_mxfp4_linear)
        return acc + tl.dot(x, _weight_tile_pairs(blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N, BLOCK_K).T)
    w = _weight_tile(blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N, BLOCK_K, DECODE)
    if DOT_FLOAT32:  # float32 models, and bf16 under the interpreter (which multiplies bf16 bit patterns)
        return acc + tl.dot(x.to(tl.float32), w.T, input_precision="ieee")
    return acc + tl.dot(x, w.to(x.dtype).T)


@triton.jit
def _swiglu(gate, up, alpha, limit):
    """The clamped SwiGLU of model.clamped_swiglu, on float32 gate and up values."""
    gate = tl.minimum(gate, limit)
    up = tl.minimum(tl.maximum(up, -limit), limit)
    return (up + 1.0) * (gate * tl.sigmoid(gate * alpha))


@triton.jit
def _finish(acc, rows, row_ok, w_row, cols, col_ok, bias_ptr, out_ptr, N, alpha, limit,
            SWIGLU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, COL_BLOCK):
    """Round the float32 sums to the output dtype, add the bias (then round: parity with matmul-then-bias), apply
    the clamped SwiGLU if asked (columns interleave gate and up, docs/model.md; the steps of
    model.clamped_swiglu), and store rows × columns."""
    out_dtype = out_ptr.dtype.element_ty
    bias = tl.load(bias_ptr + w_row, mask=col_ok, other=0.0).to(tl.float32)
    h = (acc.to(out_dtype).to(tl.float32) + bias[None, :]).to(out_dtype).to(tl.float32)
    if SWIGLU:
        gate, up = tl.split(tl.reshape(h, (BLOCK_M, BLOCK_N // 2, 2)))
        h = _swiglu(gate, up, alpha, limit)
        cols = COL_BLOCK * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
        col_ok = cols < N // 2
        width = N // 2
    else:
        width = N
    tl.store(out_ptr + rows[:, None].to(tl.int64) * width + cols[None, :], h.to(out_dtype),
             mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _tile_rows(tile, first, end, ROW_TILES: tl.constexpr):
    """A program's rows: first..end-1 as loaded from its tile arrays, or, with ROW_TILES (tile t is row t), tile
    alone (the loads then unused, compiled away). It takes the loaded values, not the arrays' pointers:
    torch.compile's analysis of what a user kernel writes traces a store's address back through helper calls to
    every pointer they were given, so pointers passed here would count as written and be copied before every
    launch (the seventh session's profile). One return: Triton would otherwise require both branches' types alike,
    and row tiles are int32 program ids beside int64 or int32 arrays."""
    if ROW_TILES:
        first = tile
        end = tile + 1
    return first, end


@triton.jit
def _moe_mxfp4_kernel(
    x_ptr, x_row_ptr, blocks_ptr, scales_ptr, bias_ptr, out_ptr, partial_ptr,
    tile_expert_ptr, tile_start_ptr, tile_end_ptr,
    N, K, R, alpha, limit,
    GATHER: tl.constexpr, SWIGLU: tl.constexpr, ONE_ROW: tl.constexpr, DOT_FLOAT32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    DECODE: tl.constexpr, ROW_TILES: tl.constexpr = False, SHARED_X: tl.constexpr = False,
):
    """x [X, K] (rows picked by x_row [R] when GATHER, else x row = r), blocks [E, N, K/32, 16], scales [E, N, K/32],
    bias [E, N] -> out [R, N] (or [R, N/2] after the SwiGLU). Tile t covers rows tile_start[t]..tile_end[t]-1, all
    of expert tile_expert[t]; an empty tile does nothing. ONE_ROW tiles hold one row each (BLOCK_M = 1); with
    SPLIT_K > 1 program (t, n, s) sums its share s of the input columns into partial [SPLIT_K, R, N] instead.
    ROW_TILES: tile t is row t (no start/end arrays: batch-1 decoding, tile_expert = the chosen experts); SHARED_X:
    every row reads x's row 0 (the token's input, shared by its chosen experts)."""
    tile = tl.program_id(0)  # the tile's loads here, not in a helper: see _tile_rows
    expert = tl.load(tile_expert_ptr + tile).to(tl.int64)
    start, end = _tile_rows(tile, tl.load(tile_start_ptr + tile), tl.load(tile_end_ptr + tile), ROW_TILES)
    if start >= end:
        return
    rows = start + tl.arange(0, BLOCK_M)
    row_ok = rows < end
    if GATHER:
        x_rows = tl.load(x_row_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    elif SHARED_X:
        x_rows = tl.zeros((BLOCK_M,), dtype=tl.int64)
    else:
        x_rows = rows.to(tl.int64)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    w_row = expert * N + cols
    share = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K  # input columns per split
    k_first = tl.program_id(2) * share
    k_last = tl.minimum(k_first + share, K)
    if ONE_ROW:  # a matrix-vector product: memory-bound, no tensor cores needed; groups summed once at the end
        x_row = tl.sum(x_rows)  # the one row
        groups = tl.zeros((BLOCK_N, BLOCK_K // 32), dtype=tl.float32)
        for k0 in range(k_first, k_last, BLOCK_K):
            groups += _matvec_step(x_ptr, x_row, blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N, BLOCK_K,
                                   DECODE)
        acc = tl.sum(groups, axis=1)[None, :]
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(k_first, k_last, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_ptr + x_rows[:, None] * K + k[None, :], mask=row_ok[:, None] & (k < K)[None, :], other=0.0)
            acc = _tile_product(acc, x, blocks_ptr, scales_ptr, w_row, col_ok, k0, K, BLOCK_N, BLOCK_K, DECODE,
                                DOT_FLOAT32)
    if SPLIT_K > 1:
        at = (tl.program_id(2) * R + rows[:, None].to(tl.int64)) * N + cols[None, :]
        tl.store(partial_ptr + at, acc, mask=row_ok[:, None] & col_ok[None, :])
    else:
        _finish(acc, rows, row_ok, w_row, cols, col_ok, bias_ptr, out_ptr, N, alpha, limit,
                SWIGLU, BLOCK_M, BLOCK_N, tl.program_id(1))


@triton.jit
def _splitk_finish_kernel(partial_ptr, row_expert_ptr, bias_ptr, out_ptr, N, R, alpha, limit,
                          SWIGLU: tl.constexpr, SPLIT_K: tl.constexpr, BLOCK_N: tl.constexpr):
    """Row r, a block of columns: add the SPLIT_K partial sums in order, then _finish (bias, SwiGLU, store)."""
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    acc = tl.zeros((1, BLOCK_N), dtype=tl.float32)
    for s in range(SPLIT_K):
        acc += tl.load(partial_ptr + (s * R + row) * N + cols, mask=col_ok, other=0.0)[None, :]
    w_row = tl.load(row_expert_ptr + row).to(tl.int64) * N + cols
    rows = row + tl.arange(0, 1)
    _finish(acc, rows, rows < R, w_row, cols, col_ok, bias_ptr, out_ptr, N, alpha, limit,
            SWIGLU, 1, BLOCK_N, tl.program_id(1))


def moe_mxfp4_linear(x, blocks, scales, bias, tiles, x_rows=None, swiglu=None, config="small", row_experts=None):
    """out[r] = x[x_rows[r]] @ dequantize(blocks, scales)[e].T + bias[e] for every row r of every tile.

    x [X, K] contiguous, blocks [E, N, K/32, 16] / scales [E, N, K/32] uint8, bias [E, N], tiles = (expert,
    start, end) int32 [T] each, covering rows 0..R-1 (R = len(x_rows), or X); or tiles = the experts [R] (any
    integer dtype) of rows 0..R-1, a row a tile, each reading x's row r, or row 0 if x has one row (batch-1
    decoding: no tile arrays to build); swiglu = (alpha, limit) fuses the clamped SwiGLU (out [R, N/2]); config: a
    CONFIGS key or a TileConfig; row_experts [R]: each row's expert, needed by a split_k tile over sorted rows.
    Returns out in x's dtype."""
    E, N, G, _ = blocks.shape
    K = G * 32
    row_tiles = isinstance(tiles, torch.Tensor)
    if row_tiles:
        tiles = (tiles, tiles, tiles)  # start and end are the tile's number: never read
        rows = tiles[0].shape[0]
    else:
        rows = x_rows.shape[0] if x_rows is not None else x.shape[0]
    out = torch.empty(rows, N // 2 if swiglu else N, dtype=x.dtype, device=x.device)
    tile = CONFIGS[config] if isinstance(config, str) else config
    one_row = tile.block_m == 1
    split_k = tile.split_k
    if split_k > 1 and not row_tiles and row_experts is None:
        raise ValueError(f"moe_mxfp4_linear: a split_k tile ({list(tile)}) over tiles of sorted rows needs "
                         "row_experts, the expert of each row, for the partial sums' finish")
    decode = tile.decode
    if decode in ("scaled", "pairs") and x.dtype == torch.float32 or decode == "scaled" and one_row:
        decode = "bits"  # bf16 multiplies; tl.dot_scaled needs tensor-core tiles
    if decode == "pairs" and INTERPRETED:
        decode = "f16"  # the interpreter runs no PTX
    partial = torch.empty(split_k, rows, N, dtype=torch.float32, device=x.device) if split_k > 1 else out
    expert, start, end = tiles
    grid = (expert.shape[0], triton.cdiv(N, tile.block_n), split_k)
    alpha, limit = swiglu if swiglu else (0.0, 0.0)
    _moe_mxfp4_kernel[grid](
        x, x_rows if x_rows is not None else x, blocks, scales, bias, out, partial, expert, start, end,
        N, K, rows, alpha, limit,
        GATHER=x_rows is not None, SWIGLU=swiglu is not None, ONE_ROW=one_row,
        DOT_FLOAT32=x.dtype == torch.float32 or INTERPRETED,
        BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=tile.block_k, SPLIT_K=split_k, DECODE=decode,
        ROW_TILES=row_tiles, SHARED_X=row_tiles and x.shape[0] == 1 and rows > 1,
        num_warps=tile.warps, num_stages=tile.stages,
    )
    if split_k > 1:  # the partial sums added up per row (one-row tiles: row r is tile r, of expert expert[r])
        _splitk_finish_kernel[(rows, triton.cdiv(N, 64))](
            partial, expert if row_tiles else row_experts, bias, out, N, rows, alpha, limit,
            SWIGLU=swiglu is not None, SPLIT_K=split_k, BLOCK_N=64, num_warps=2)
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


FRAGMENTS = True  # up to mxfp4_fragments.MAX_ROWS rows of a bf16 model: that module's kernel (False: this one's)


def packed_experts_forward(experts, x, weights, indices):
    """MXFP4Experts.forward on CUDA: x [N, H], weights/indices [N, K] -> [N, H]. Up to a few tokens (decoding) the
    products go through mxfp4_fragments' kernel (tensor-core fragments decoded in registers), beyond through this
    module's tiles, and from mxfp4_dequantize.DEQUANTIZE_ROWS rows on (prefill) through bf16 shares of the
    weights and the grouped matmul (mxfp4_dequantize.py)."""
    from gptoss_model.kernels import mxfp4_dequantize, mxfp4_fragments

    N, K = indices.shape
    if mxfp4_dequantize.takes_prefill_path(x, N * K):  # prefill sizes: shares of bf16 weights, grouped matmuls
        return mxfp4_dequantize.prefill_experts_forward(experts, x, weights, indices)
    swiglu = (experts.alpha, experts.limit)
    x = x.contiguous()
    fragments = (FRAGMENTS and N * K <= mxfp4_fragments.MAX_ROWS
                 and mxfp4_fragments.fits(x, experts.gate_up_proj_blocks)
                 and mxfp4_fragments.fits(x, experts.down_proj_blocks))
    linear = mxfp4_fragments.moe_mxfp4_fragments if fragments else moe_mxfp4_linear
    largest = experts.largest_scale_byte()
    largest = 255 if largest is None else largest  # unknown: the fragments' decoding right for any scale byte
    if N == 1:  # batch-1 decoding: K one-row tiles, no sorting, no tile arrays
        chosen = indices.reshape(-1)
        options = {"largest_scale": largest} if fragments else {"config": "one_row"}
        a = linear(x, experts.gate_up_proj_blocks, experts.gate_up_proj_scales, experts.gate_up_proj_bias,
                   chosen, None, swiglu, **options)  # [K, I]
        y = linear(a, experts.down_proj_blocks, experts.down_proj_scales, experts.down_proj_bias,
                   chosen, None, None, **options)  # [K, H]
        return (y * weights[0, :, None].to(y.dtype)).sum(dim=0, keepdim=True).to(x.dtype)
    from gptoss_model.fast import _sort_by_expert

    E = experts.gate_up_proj_blocks.shape[0]
    row_of_pair, pair_of_row, ends = _sort_by_expert(indices, E)
    x_rows = (pair_of_row // K).int()  # token of each sorted row
    if fragments:
        tiles = tiles_by_expert(ends, N * K, 8)
        a = linear(x, experts.gate_up_proj_blocks, experts.gate_up_proj_scales, experts.gate_up_proj_bias,
                   tiles, x_rows, swiglu, largest_scale=largest)  # [N·K, I]
        y = linear(a, experts.down_proj_blocks, experts.down_proj_scales, experts.down_proj_bias, tiles,
                   largest_scale=largest)  # [N·K, H]
    else:
        config = "small" if N * K <= SMALL_ROWS else "large"
        tiles = tiles_by_expert(ends, N * K, CONFIGS[config][0])
        row_experts = indices.reshape(-1)[pair_of_row]  # [N·K] ascending: for split_k tiles' finish
        a = linear(x, experts.gate_up_proj_blocks, experts.gate_up_proj_scales, experts.gate_up_proj_bias,
                   tiles, x_rows, swiglu, config, row_experts)  # [N·K, I]
        y = linear(a, experts.down_proj_blocks, experts.down_proj_scales, experts.down_proj_bias,
                   tiles, None, None, config, row_experts)  # [N·K, H]
    y = y[row_of_pair].view(N, K, -1) * weights[..., None].to(y.dtype)
    return y.sum(dim=1).to(x.dtype)
