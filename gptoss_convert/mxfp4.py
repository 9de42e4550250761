"""MXFP4 (OCP microscaling FP4) dequantization and quantization for gpt-oss expert weights.

Format facts as OpenAI's gpt_oss/torch/weights.py (FP4_VALUES) and Transformers' integrations/mxfp4.py read them.
Each row of a weight is split along its last (input) dimension into blocks of 32 values; a block is 16 bytes of FP4 E2M1 codes (two per byte, element 2j in the low nibble) and one
E8M0 scale byte, the block multiplier being 2^(scale - 127).

Shape legend: `...` = leading dims (E, out for expert weights), G = in/32 blocks per row, R = prod(...)·G blocks in
all, K = in = G·32 values per row. Checkpoint layout: blocks [..., G, 16] uint8, scales [..., G] uint8.

Two dequantizers sit side by side: `dequantize_reference`, the spec's formula in ten lines, and `dequantize`, the
fast one used everywhere else; tests check them equal bit for bit, and both equal to Transformers'.
"""

import functools
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from gptoss_convert.errors import InputError, IntegrityError

# FP4 E2M1 code -> value. Bit 3 is the sign, bits 2..1 the exponent (bias 1), bit 0 the mantissa; code 1 (0.5) is
# the only subnormal. Codes 0 and 8 are +0.0 and -0.0 (OpenAI's gpt_oss/torch/weights.py, FP4_VALUES).
FP4_VALUES = (+0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
VALUES_PER_BLOCK = 32  # values sharing one scale, consecutive along the last (input) dimension
BYTES_PER_BLOCK = 16  # 32 four-bit codes, two per byte: byte j = code[2j] | code[2j+1] << 4
SCALE_BIAS = 127  # E8M0 scale byte s means 2^(s - 127); byte 0xFF is NaN in the MX spec and never valid here
SCALE_NAN = 0xFF

# Blocks per chunk (each = 32 output values). On CPU a chunk's temporary int32 index is 4 MiB at 65536 blocks
# (measured on 2 cores: 8k..128k within noise of each other, 1M slower); on CUDA fewer, larger chunks keep the
# kernel-launch count low (1M: 2.2 ms for a 20b gate_up_proj on an H100, 256k: 2.9 ms).
CPU_CHUNK_ROWS = 65536
CUDA_CHUNK_ROWS = 1 << 20

# Integer dtype whose one element holds two output values of the given byte size (little-endian: the first value,
# element 2j, in the low half). 8-byte dtypes have no 16-byte integer and gather [2]-rows instead.
_PAIR_INT = {1: torch.int16, 2: torch.int32, 4: torch.int64}


def _default_chunk_rows(device: torch.device) -> int:
    return CUDA_CHUNK_ROWS if device.type == "cuda" else CPU_CHUNK_ROWS


def dequantize_reference(blocks: torch.Tensor, scales: torch.Tensor, dtype=torch.bfloat16) -> torch.Tensor:
    """The format's formula, written to be read: [..., G, 16] uint8 + [..., G] uint8 -> [..., G*32] in `dtype`.
    value = FP4_VALUES[code] * 2^(scale - 127), computed exactly in float64, rounded once to `dtype`."""
    lut = torch.tensor(FP4_VALUES, dtype=torch.float64, device=blocks.device)
    low = lut[(blocks & 0x0F).long()]  # [..., G, 16]  elements 0, 2, 4, ...
    high = lut[(blocks >> 4).long()]  # [..., G, 16]  elements 1, 3, 5, ...
    values = torch.stack([low, high], dim=-1).flatten(-2)  # [..., G, 32]
    powers = torch.tensor([math.ldexp(1.0, s - SCALE_BIAS) for s in range(256)], dtype=torch.float64)
    multiplier = powers.to(blocks.device)[scales.long()]  # [..., G]
    return (values * multiplier[..., None]).flatten(-2).to(dtype)  # [..., G*32]


def dequantize(
    blocks: torch.Tensor,
    scales: torch.Tensor,
    dtype: torch.dtype = torch.bfloat16,
    name: str = "tensor",
    chunk_rows: int | None = None,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dequantize MXFP4: blocks [..., G, 16] uint8 + scales [..., G] uint8 -> [..., G*32] in `dtype`, on the
    inputs' device. Bit-identical to `dequantize_reference` (and to Transformers' `convert_moe_packed_tensors`,
    up to its transpose), for every scale byte 0..254.

    How: every (scale byte, data byte) pair has exactly two output values, so a 65536-entry table of value pairs
    (`_pair_table`, built once per dtype and device with the exact formula) turns dequantization into one index
    add and one gather per byte, two values at a time. Blocks are processed in chunks of `chunk_rows` into a
    preallocated output, so temporaries stay small; on CPU, torch.get_num_threads() threads share the chunks.
    `out` (optional: contiguous, of the output's shape, dtype and device) lets a caller reuse one buffer across
    tensors; fresh memory costs page faults, which on a small VM can take longer than the dequantization itself.

    Raises IntegrityError (exit 3) naming `name` for a non-uint8 input, a last dim other than 16, mismatched
    blocks/scales shapes, or a 0xFF (NaN) scale byte.
    """
    _check_inputs(blocks, scales, name)
    if not dtype.is_floating_point:
        raise InputError(f"{name}: dequantize dtype must be a floating-point dtype, got {dtype}")
    *lead, num_groups, _ = blocks.shape
    out = _output_buffer(out, (*lead, num_groups * VALUES_PER_BLOCK), dtype, blocks.device, name)
    rows = blocks.numel() // BYTES_PER_BLOCK
    if rows == 0:
        return out
    table = _pair_table(dtype, blocks.device)  # [65536] pair words, or [65536, 2] values for 8-byte dtypes
    pair_dtype = _PAIR_INT.get(dtype.itemsize)
    if pair_dtype is not None:
        flat_out = out.view(pair_dtype).view(rows * BYTES_PER_BLOCK)  # [R*16] one word = (element 2j, 2j+1)
    else:
        flat_out = out.view(rows * BYTES_PER_BLOCK, 2)  # [R*16, 2]
    chunk_rows = max(1, int(chunk_rows or _default_chunk_rows(blocks.device)))
    _gather_rows(blocks.reshape(rows, BYTES_PER_BLOCK), scales.reshape(rows), table, flat_out, chunk_rows)
    return out


def _output_buffer(out, shape: tuple, dtype: torch.dtype, device: torch.device, name: str) -> torch.Tensor:
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if tuple(out.shape) != shape or out.dtype != dtype or out.device != device or not out.is_contiguous():
        raise InputError(
            f"{name}: out= must be a contiguous {dtype} tensor of shape {list(shape)} on {device}, "
            f"got {out.dtype} {list(out.shape)} on {out.device} (contiguous={out.is_contiguous()})"
        )
    return out


def _gather_rows(flat_blocks, flat_scales, table, flat_out, chunk_rows: int) -> None:
    """flat_blocks [R, 16], flat_scales [R] -> flat_out, chunk by chunk (on CPU, spans on several threads)."""
    rows, device = flat_blocks.shape[0], flat_blocks.device

    def dequantize_span(start: int, stop: int) -> None:  # blocks start..stop-1, chunk by chunk
        index = torch.empty(min(chunk_rows, stop - start), BYTES_PER_BLOCK, dtype=torch.int32, device=device)
        for first in range(start, stop, chunk_rows):
            last = min(first + chunk_rows, stop)
            idx = _table_index(flat_blocks[first:last], flat_scales[first:last], out=index[: last - first])  # [n, 16]
            torch.index_select(table, 0, idx.view(-1),
                               out=flat_out[first * BYTES_PER_BLOCK : last * BYTES_PER_BLOCK])

    # CPU: one Python thread per torch thread, each on its own span. Every op in the loop runs single-threaded
    # (index_select on a 1-D table, numpy's add), so no OpenMP region is opened per chunk: those stall whenever
    # another process holds a core (docs/benchmarks.md, "MXFP4 dequantization (CPU)").
    workers = min(torch.get_num_threads(), -(-rows // chunk_rows)) if device.type == "cpu" else 1
    if workers <= 1:
        dequantize_span(0, rows)
        return
    bounds = [rows * worker // workers for worker in range(workers + 1)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(dequantize_span, bounds[:-1], bounds[1:]))  # list(): re-raises a worker's exception


@functools.lru_cache(maxsize=16)
def _pair_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[65536] table indexed by scale_byte*256 + data_byte, holding that byte's two values (low nibble first) at
    that scale, computed exactly in float64 and rounded once to `dtype` (so overflow gives ±inf, exactly as the
    spec's formula does). Scale byte 0xFF rows hold NaN; `dequantize` rejects such scales before looking up."""
    lut = torch.tensor(FP4_VALUES, dtype=torch.float64)
    byte = torch.arange(256)
    pairs = torch.stack([lut[byte & 0x0F], lut[byte >> 4]], dim=-1)  # [256 bytes, 2]
    powers = torch.tensor([math.ldexp(1.0, s - SCALE_BIAS) for s in range(SCALE_NAN)] + [math.nan],
                          dtype=torch.float64)  # [256 scales]
    table = (powers[:, None, None] * pairs[None]).to(dtype).reshape(256 * 256, 2)  # [65536, 2]
    pair_dtype = _PAIR_INT.get(dtype.itemsize)
    if pair_dtype is not None:
        table = table.view(pair_dtype).reshape(256 * 256)  # [65536]
    return table.to(device)


def _table_index(blocks: torch.Tensor, scales: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out[r, j] = scales[r] * 256 + blocks[r, j], the `_pair_table` entry of byte j of block r: [n, 16] int32."""
    if blocks.device.type == "cpu":  # numpy: single-threaded by design (see dequantize)
        np.add(blocks.numpy(), (scales.numpy().astype(np.int32) << 8)[:, None], out=out.numpy())
    else:
        torch.add(blocks, scales.to(torch.int32).mul_(256)[:, None], out=out)
    return out


def _check_inputs(blocks: torch.Tensor, scales: torch.Tensor, name: str) -> None:
    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise IntegrityError(
            f"{name}: MXFP4 blocks and scales must be uint8, got blocks {blocks.dtype} and scales {scales.dtype}"
        )
    if blocks.dim() < 1 or blocks.shape[-1] != BYTES_PER_BLOCK:
        raise IntegrityError(
            f"{name}: MXFP4 blocks must end in a dim of {BYTES_PER_BLOCK} bytes (32 values), "
            f"got blocks.shape={list(blocks.shape)}"
        )
    if blocks.shape[:-1] != scales.shape:
        raise IntegrityError(
            f"{name}: blocks.shape[:-1] must equal scales.shape, got blocks.shape={list(blocks.shape)} "
            f"vs scales.shape={list(scales.shape)}"
        )
    if blocks.device != scales.device:
        raise InputError(f"{name}: blocks on {blocks.device} but scales on {scales.device}")
    if scales.numel() and int(scales.max()) == SCALE_NAN:
        nan_mask = scales == SCALE_NAN
        count = int(nan_mask.sum())
        first = int(nan_mask.reshape(-1).nonzero()[0])
        where = [int(i) for i in torch.unravel_index(torch.tensor(first), tuple(scales.shape))]
        raise IntegrityError(
            f"{name}: {count} of {scales.numel()} MXFP4 scale bytes are 0xFF (NaN in the MX spec), "
            f"first at scales index {where}"
        )


def quantize(
    weight: torch.Tensor,
    rounding: str = "nearest_even",
    name: str = "tensor",
    chunk_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize to MXFP4 (for building checkpoints): weight [..., K] (K a multiple of 32, any float dtype) ->
    (blocks [..., K/32, 16] uint8, scales [..., K/32] uint8), on the weight's device.

    Per block of 32 (triton_kernels' numerics_details/mxfp.py, ROUND_UP): scale = 2^ceil(log2(amax / 6)), so no value exceeds 6 after dividing;
    an all-zero block gets scale byte 0. Each value / scale is rounded to the nearest E2M1 value, ties to the even
    code (`rounding="nearest_even"`, the current triton kernel) or away from zero (`"away"`, the older torch
    reference). The sign is kept, -0.0 included, so re-quantizing dequantized MXFP4 is lossless.
    Deviation from triton's fp32 bit trick: blocks with amax < 6·2^-126 get the exact ceil (down to byte 0), not
    byte 1, which is what keeps that round trip lossless at the bottom of the range.
    """
    if rounding not in _ROUNDING_BOUNDARIES:
        raise InputError(f"{name}: rounding must be one of {sorted(_ROUNDING_BOUNDARIES)}, got {rounding!r}")
    if not weight.dtype.is_floating_point:
        raise InputError(f"{name}: quantize needs a floating-point weight, got {weight.dtype}")
    if weight.dim() < 1 or weight.shape[-1] % VALUES_PER_BLOCK:
        raise InputError(
            f"{name}: the last dim must be a multiple of {VALUES_PER_BLOCK}, got weight.shape={list(weight.shape)}"
        )
    *lead, k = weight.shape
    groups = k // VALUES_PER_BLOCK
    rows = weight.numel() // VALUES_PER_BLOCK
    blocks = torch.empty(rows, BYTES_PER_BLOCK, dtype=torch.uint8, device=weight.device)  # [R, 16]
    scales = torch.empty(rows, dtype=torch.uint8, device=weight.device)  # [R]
    boundaries = _ROUNDING_BOUNDARIES[rounding].to(weight.device)
    flat = weight.reshape(rows, VALUES_PER_BLOCK)  # [R, 32]
    chunk_rows = max(1, int(chunk_rows or _default_chunk_rows(weight.device)))
    for r0 in range(0, rows, chunk_rows):
        r1 = min(r0 + chunk_rows, rows)
        x = flat[r0:r1].float()  # [n, 32]
        if not torch.isfinite(x).all():
            bad = r0 + int((~torch.isfinite(x)).any(dim=1).nonzero()[0])
            raise InputError(f"{name}: cannot quantize non-finite values (inf/nan, or beyond float32), first in "
                             f"block {bad} (values {bad * VALUES_PER_BLOCK}..{(bad + 1) * VALUES_PER_BLOCK - 1})")
        scale_byte = _round_up_scale_byte(x.abs().amax(dim=1))  # [n]
        scales[r0:r1] = scale_byte
        q = x / _scale_value(scale_byte)[:, None]  # [n, 32]  exact: a division by a power of two
        codes = torch.bucketize(q.abs(), boundaries).to(torch.uint8)  # [n, 32]  magnitude codes 0..7
        codes |= torch.signbit(q).to(torch.uint8) << 3  # sign bit, -0.0 kept
        blocks[r0:r1] = codes[:, 0::2] | (codes[:, 1::2] << 4)  # [n, 16]  even element in the low nibble
    return blocks.reshape(*lead, groups, BYTES_PER_BLOCK), scales.reshape(*lead, groups)


def _round_up_scale_byte(amax: torch.Tensor) -> torch.Tensor:
    """Biased exponent of 2^ceil(log2(amax / 6)), clamped to 0..254. amax/6 is formed in float64, where it is
    never subnormal, and rounding its bit pattern up to the next power of two is an exact ceil(log2)."""
    bits = (amax.double() / 6.0).view(torch.int64)
    exponent = ((bits + (1 << 52) - 1) >> 52) - 1023  # ceil(log2); amax == 0 gives -1023
    return (exponent + SCALE_BIAS).clamp(0, SCALE_NAN - 1).to(torch.uint8)


def _scale_value(scale_byte: torch.Tensor) -> torch.Tensor:
    """2^(byte - 127) as float32, exactly (byte 0 is the float32 subnormal 2^-127)."""
    normal = (scale_byte.to(torch.int32) << 23).view(torch.float32)
    return torch.where(scale_byte == 0, math.ldexp(1.0, -SCALE_BIAS), normal)


def _below(x: float) -> float:
    """The float32 just below x: with bucketize(right=False) a value equal to x then lands above the boundary."""
    as32 = torch.tensor(x, dtype=torch.float32)
    return torch.nextafter(as32, torch.tensor(-math.inf, dtype=torch.float32)).item()


# Boundaries between the E2M1 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 (midpoints), for torch.bucketize(right=False),
# which counts the boundaries strictly below a value. A value exactly on a midpoint stays on the lower code, unless
# the boundary is moved just below the midpoint: for ties to even that is done where the upper code is even
# (0.75 -> 1.0, 1.75 -> 2.0, 3.5 -> 4.0), for ties away from zero everywhere.
_ROUNDING_BOUNDARIES = {
    "nearest_even": torch.tensor([0.25, _below(0.75), 1.25, _below(1.75), 2.5, _below(3.5), 5.0], dtype=torch.float32),
    "away": torch.tensor([_below(m) for m in (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)], dtype=torch.float32),
}
