"""Experts that stay packed in MXFP4, as gpt-oss is released: `MXFP4Experts` replaces `mlp.experts` from outside.

The readable `GPTOssExperts` (model.py) holds bf16/fp32 matrices: 42 GB for 20b. This module holds the checkpoint's
own bytes instead (docs/design.md, "Packed experts"): per projection, uint8 blocks [E, out, in/32, 16] (two FP4
E2M1 codes a byte, element 2j in the low nibble) and E8M0 scales [E, out, in/32] (2^(byte - 127)), 4.25 bits a
weight, and dequantizes inside the expert computation:

- on the CPU, only the experts the tokens selected, one at a time, exactly (a 65536-entry table of the two values of
  every (scale byte, data byte) pair, computed with the exact formula and rounded once), then the same matmuls, in
  the same order, as GPTOssExperts' readable loop: equal within float32 rounding;
- on CUDA, through the fused dequantize-and-multiply Triton kernels of gptoss_model/kernels/mxfp4_moe.py: a weight
  tile is decoded in registers right before its matrix product and never written to memory.

    from gptoss_model.mxfp4_experts import use_packed_experts
    use_packed_experts(model)       # every layer's experts become MXFP4Experts (on the meta device: fill them)

`gptoss_convert.load_model(source, experts="mxfp4")` builds and fills such a model from a checkpoint.
Format facts: docs/checkpoints.md and gptoss_convert/mxfp4.py (the converter's copy; this package never imports it).
"""

import functools
import math

import torch
from torch import nn

from gptoss_model.model import GptOssMLP, clamped_swiglu

# FP4 E2M1 code -> value (bit 3 sign, bits 2..1 exponent with bias 1, bit 0 mantissa; code 1 is the subnormal 0.5)
FP4_VALUES = (+0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
VALUES_PER_BLOCK, BYTES_PER_BLOCK, SCALE_BIAS = 32, 16, 127
PROJECTIONS = ("gate_up_proj", "down_proj")


class MXFP4Experts(nn.Module):
    """Same contract as GPTOssExperts: forward(x [N, H], weights [N, K], indices [N, K]) -> [N, H]. Buffers
    `{gate_up_proj,down_proj}_{blocks,scales}` (uint8, the hub's names), parameters `*_bias` in the model dtype."""

    def __init__(self, config, device=None, dtype=None):
        super().__init__()
        E, H, I = config.num_local_experts, config.hidden_size, config.intermediate_size
        if H % VALUES_PER_BLOCK or I % VALUES_PER_BLOCK:
            raise ValueError(f"MXFP4 experts need hidden_size and intermediate_size divisible by 32, got {H}, {I}")
        self.alpha, self.limit = config.swiglu_alpha, config.swiglu_limit
        for name, (rows, cols) in zip(PROJECTIONS, ((2 * I, H), (H, I))):
            groups = cols // VALUES_PER_BLOCK
            self.register_buffer(f"{name}_blocks", torch.zeros(E, rows, groups, BYTES_PER_BLOCK, dtype=torch.uint8,
                                                               device=device))
            self.register_buffer(f"{name}_scales", torch.zeros(E, rows, groups, dtype=torch.uint8, device=device))
        self.gate_up_proj_bias = nn.Parameter(torch.zeros(E, 2 * I, device=device, dtype=dtype))
        self.down_proj_bias = nn.Parameter(torch.zeros(E, H, device=device, dtype=dtype))
        self.largest_scale = None  # the largest scale byte of both projections, once note_scales has run
        self._noted_scales = None  # (data pointer, version) of each scale buffer then
        self.register_load_state_dict_post_hook(lambda module, _keys: module.note_scales())

    def forward(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            from gptoss_model.kernels.mxfp4_moe import packed_experts_forward

            return packed_experts_forward(self, x, weights, indices)
        return self.forward_selected(x, weights, indices)

    def note_scales(self) -> None:
        """Record the largest scale byte of both projections (one GPU sync; nothing on the meta device). The CUDA
        kernels decode with one multiply a weight pair where it is at most 128 (kernels/mxfp4_fragments.py), with
        two otherwise or while it is unknown. Whatever fills the buffers calls this: load_state_dict,
        gptoss_convert's loading, fill_random_ (offloaded slots, refilled every layer, never do: two multiplies)."""
        scales = (self.gate_up_proj_scales, self.down_proj_scales)
        if any(s.is_meta for s in scales):
            return
        self.largest_scale = max(int(s.max()) if s.numel() else 0 for s in scales)
        self._noted_scales = self._scales_identity()

    def largest_scale_byte(self) -> int | None:
        """The recorded largest scale byte, or None. Outside compiled code a change to the scale buffers since it was
        recorded (a new tensor, or one written in place) is noticed and the byte recorded again; compiled code and
        CUDA-graph captures (no sync allowed) take the value recorded before (torch.compile guards on it)."""
        if self.largest_scale is not None and not torch.compiler.is_compiling() and not _capturing():
            if self._noted_scales != self._scales_identity():
                self.note_scales()
        return self.largest_scale

    def _scales_identity(self) -> tuple:
        """(data pointer, version) of each scale buffer: changes with a new tensor or a write in place."""
        return tuple((s.data_ptr(), s._version) for s in (self.gate_up_proj_scales, self.down_proj_scales))

    def forward_selected(self, x, weights, indices) -> torch.Tensor:
        """GPTOssExperts' readable loop, each selected expert dequantized just before use (CPU path)."""
        out = torch.zeros_like(x)
        for e in indices.unique().tolist():  # ascending expert id, the order Transformers adds them in
            token, slot = torch.where(indices == e)
            gate_up, down = self.dequantized(e, x.dtype)  # [2I, H], [H, I]
            h = x[token] @ gate_up.T + self.gate_up_proj_bias[e]  # [n, 2I]  parity: matmul, then bias
            y = clamped_swiglu(h, self.alpha, self.limit) @ down.T + self.down_proj_bias[e]  # [n, H]
            out.index_add_(0, token, (y * weights[token, slot, None]).to(x.dtype))
        return out

    def dequantized(self, expert: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert `expert`'s (gate_up [2I, H], down [H, I]) in `dtype`, exactly."""
        return tuple(dequantize(getattr(self, f"{p}_blocks")[expert], getattr(self, f"{p}_scales")[expert], dtype)
                     for p in PROJECTIONS)


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def dequantize(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """blocks [..., G, 16] uint8 + scales [..., G] uint8 -> [..., G*32] in `dtype`: one table lookup per byte."""
    *lead, groups, _ = blocks.shape
    index = blocks.to(torch.int32) + scales.to(torch.int32)[..., None] * 256  # [..., G, 16]
    table = _pair_table(dtype, blocks.device)
    pairs = torch.index_select(table, 0, index.reshape(-1))  # [..., G*16] words of two values (or [.., 2] rows for 8-byte dtypes)
    return pairs.view(dtype).reshape(*lead, groups * VALUES_PER_BLOCK)


_PAIR_INT = {2: torch.int32, 4: torch.int64}  # an integer that holds two values of that byte size


@functools.lru_cache(maxsize=8)
def _pair_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[65536] (scale byte · 256 + data byte) -> that byte's two values, low nibble first, computed in float64 and
    rounded once to `dtype` (a scale of 2^127 times 6 overflows to inf, as the spec's formula does)."""
    codes = torch.tensor(FP4_VALUES, dtype=torch.float64)
    byte = torch.arange(256)
    pairs = torch.stack([codes[byte & 0x0F], codes[byte >> 4]], dim=-1)  # [256, 2]
    powers = torch.tensor([math.ldexp(1.0, s - SCALE_BIAS) for s in range(256)], dtype=torch.float64)
    table = (powers[:, None, None] * pairs[None]).to(dtype).reshape(256 * 256, 2)
    pair_int = _PAIR_INT.get(dtype.itemsize)
    return (table.view(pair_int).reshape(-1) if pair_int else table).to(device)


def use_packed_experts(model, config=None) -> nn.Module:
    """Replace every `mlp.experts` inside `model` (a whole model, or a decoder layer with `config` given) by an
    MXFP4Experts of the same shape, dtype and device (its buffers are zeros, or empty on the meta device: fill
    them, e.g. with load_state_dict). Returns the model."""
    config = config or model.config
    for module in model.modules():
        if isinstance(module, GptOssMLP):
            bias = module.experts.gate_up_proj_bias
            module.experts = MXFP4Experts(config, device=bias.device, dtype=bias.dtype)
    return model


@torch.no_grad()
def fill_random_(experts: MXFP4Experts, generator: torch.Generator | None = None) -> MXFP4Experts:
    """Random FP4 codes with scale bytes 118..122 (weights of ~1/sqrt(2880), like scripts/make_checkpoint.py's big
    shapes), for benchmarks and tests that need a packed model without a checkpoint."""
    for p in PROJECTIONS:
        for kind, low, high in (("blocks", 0, 256), ("scales", 118, 123)):
            t = getattr(experts, f"{p}_{kind}")
            t.copy_(torch.randint(low, high, t.shape, dtype=torch.uint8, device=t.device, generator=generator))
    experts.note_scales()
    return experts


def packed_bytes(model) -> int:
    """Bytes of every parameter and buffer: what the model holds on its device."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
