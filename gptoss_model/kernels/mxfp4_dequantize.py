"""Packed MXFP4 experts at prefill sizes: a share of a layer's expert weights at a time dequantized into a bf16
scratch buffer (a Triton kernel, exact), then the dequantized path's grouped matmul (torch._grouped_mm: CUTLASS's
grouped kernel on Hopper) over the rows sorted by expert.

Why, beside mxfp4_moe.py's fused kernel: at a few thousand (token, expert) rows a layer the work is the products,
not the weight reads. The fused kernel decodes each weight tile once per tile of rows and reaches ~210 TFLOP/s on
the H200 at 2048 tokens, the bf16 grouped matmul ~390 (docs/benchmarks.md). Dequantizing a 20b layer reads its
0.42 GB of packed experts and writes 1.6 GB of bf16 (0.65 ms measured, ~3.1 TB/s); from DEQUANTIZE_ROWS rows on
(~1,800 tokens) the faster products pay that back.

Memory: the scratch holds SCRATCH_ROWS output rows of every expert at once (20b: [32, 1440, 2880] bf16, 0.27 GB;
the gate/up projection in four shares, the down projection in two), so that the model stays within goal 4's 16 GB
with a 4k-token prompt (15.02 GB peak measured). The gate/up rows interleave gate and up (docs/model.md): an even
share keeps each pair together, so every share goes through the clamped SwiGLU on its own.

Same arithmetic as the dequantized model's fast path (fast.grouped_experts): bf16 weights equal to the checkpoint's
values exactly, bf16 products with float32 sums, the bias added in bf16, the SwiGLU of model.py.
"""

import os

import torch
import triton
import triton.language as tl

from gptoss_model.kernels.mxfp4_moe import _e2m1
from gptoss_model.model import clamped_swiglu

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEQUANTIZE_ROWS = 7168  # from this many (token, expert) rows a layer (1,792 tokens at top-4), prefill takes this
# path (None: never). Measured on the H200 against the tiles (eighth session): 23.8k against 28.4k tok/s at 1,024
# tokens, 37.2k against 34.4k at 2,048, 47.5k against 36.3k at 4,096; the difference crosses zero near 1,650 tokens
SCRATCH_ROWS = 1440  # output rows of every expert dequantized at once (even: gate/up pairs stay together)
GROUPS_A_PROGRAM = 128  # scale blocks (32 weights each) a program of 4 warps decodes: 16-byte loads and stores
# (offline, sm_90: LDG.E.128 and STG.E.128; 64 a program loads 8 bytes at a time)


@triton.jit
def _half_scale(scale_bytes):
    """E8M0 scale bytes -> 2^(byte - 128) as float32, exactly (bytes 1 and 0: the subnormals 2^-127 and 2^-128).
    Half the scale, so that byte 255 stays finite: value · 2^127 · 2 then overflows only where the value itself
    is above float32's range, as the table's one rounding from float64 does."""
    s = scale_bytes.to(tl.uint32)
    return tl.where(s >= 2, (s - 1) << 23, tl.where(s == 1, 0x00400000, 0x00200000)).to(tl.float32, bitcast=True)


@triton.jit
def _dequantize_kernel(blocks_ptr, scales_ptr, out_ptr, groups, groups_an_expert, groups_a_share, first_group,
                       BLOCK: tl.constexpr):
    """blocks [E, N, G, 16], scales [E, N, G] -> out [E, R, G·32] for the R rows from `first` on of each expert:
    out group i (of E·R·G) is expert i // (R·G)'s group first·G + i % (R·G)."""
    group = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = group < groups
    source = (group // groups_a_share) * groups_an_expert + first_group + group % groups_a_share
    packed = tl.load(blocks_ptr + source[:, None] * 16 + tl.arange(0, 16)[None, :], mask=ok[:, None], other=0)
    half = _half_scale(tl.load(scales_ptr + source, mask=ok, other=128))[:, None]
    # value · 2^(byte - 128) · 2 is exact in float32 (two significant bits, down to 2^-129; inf from 2^128 on), so
    # the one rounding is to the output dtype, as mxfp4_experts.dequantize's table rounds once from float64
    low = _e2m1(packed & 0x0F) * half * 2.0  # column 2j
    high = _e2m1(packed >> 4) * half * 2.0  # column 2j + 1
    values = tl.reshape(tl.join(low, high), (BLOCK, 32))
    tl.store(out_ptr + group[:, None] * 32 + tl.arange(0, 32)[None, :], values.to(out_ptr.dtype.element_ty),
             mask=ok[:, None])


def dequantize_rows(blocks: torch.Tensor, scales: torch.Tensor, first: int, end: int,
                    dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Rows first..end-1 of every expert: blocks [E, N, G, 16] uint8, scales [E, N, G] uint8 -> [E, end - first,
    G·32] in `dtype`, equal to mxfp4_experts.dequantize(blocks, scales, dtype)[:, first:end]."""
    E, N, G, _ = blocks.shape
    if not 0 <= first < end <= N:
        raise ValueError(f"dequantize_rows: rows {first}..{end} outside the experts' {N} rows")
    out = torch.empty(E, end - first, G * 32, dtype=dtype, device=blocks.device)
    groups = out.numel() // 32
    _dequantize_kernel[(triton.cdiv(groups, GROUPS_A_PROGRAM),)](
        blocks.contiguous(), scales.contiguous(), out, groups, N * G, (end - first) * G, first * G,
        BLOCK=GROUPS_A_PROGRAM, num_warps=4)
    return out


def takes_prefill_path(x: torch.Tensor, rows: int) -> bool:
    """Whether packed experts with these inputs dequantize a share at a time: bf16 (CUTLASS's grouped matmul),
    enough rows, on CUDA (or under the interpreter, for the tests)."""
    return (DEQUANTIZE_ROWS is not None and rows >= DEQUANTIZE_ROWS and x.dtype == torch.bfloat16
            and hasattr(torch, "_grouped_mm") and (x.is_cuda or INTERPRETED))


def prefill_experts_forward(experts, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """MXFP4Experts.forward at prefill sizes: x [N, H], weights/indices [N, K] -> [N, H], the rows sorted by expert
    and multiplied share by share of dequantized weights, as fast.grouped_experts multiplies the dequantized
    model's."""
    from gptoss_model.fast import by_sorted_rows

    return by_sorted_rows(experts, x, weights, indices, _mlp_in_shares)


def _mlp_in_shares(experts, rows, expert_of_row, ends):
    """Sorted rows [N·K, H] through both projections, share by share -> [N·K, H]."""
    activated = _in_shares(experts, "gate_up_proj", rows, expert_of_row, ends, swiglu=True)  # [N·K, I]
    return _in_shares(experts, "down_proj", activated, expert_of_row, ends)


def _in_shares(experts, projection: str, rows, expert_of_row, ends, swiglu: bool = False) -> torch.Tensor:
    """rows [N·K, in] through the projection, SCRATCH_ROWS output rows at a time: each share's weights dequantized
    just before its grouped matmul and dropped after it (then the clamped SwiGLU of the share, with swiglu)."""
    from gptoss_model.fast import _grouped_linear

    if swiglu and SCRATCH_ROWS % 2:
        raise ValueError(f"mxfp4_dequantize.SCRATCH_ROWS = {SCRATCH_ROWS}: expected an even number of rows (a share "
                         f"of gate/up rows must keep each gate row beside its up row)")
    blocks, scales = getattr(experts, f"{projection}_blocks"), getattr(experts, f"{projection}_scales")
    bias = getattr(experts, f"{projection}_bias")
    outputs, shares = blocks.shape[1], []
    for first in range(0, outputs, SCRATCH_ROWS):
        end = min(first + SCRATCH_ROWS, outputs)
        weight = dequantize_rows(blocks, scales, first, end, rows.dtype)  # [E, share, in]
        h = _grouped_linear(rows, weight, bias[:, first:end], expert_of_row, ends)  # [N·K, share]
        shares.append(clamped_swiglu(h, experts.alpha, experts.limit) if swiglu else h)
    return torch.cat(shares, dim=1)
