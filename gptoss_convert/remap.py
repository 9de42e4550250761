"""Checkpoint names -> gptoss_model parameter names, as data, plus the strict coverage audit.

One table per layout, keyed by our parameter name with a `{layer}` slot (docs/design.md lists our names). A value is:
- a str: the checkpoint tensor with that name, copied (cast to the requested dtype);
- a tuple (blocks, scales): an MXFP4 pair, dequantized (mxfp4.py), already in our [E, out, in] orientation;
- `Transposed(name)`: a dense expert weight stored [E, in, out] (Transformers' dequantized `GptOssExperts`);
- `Part(name, "q" | "k" | "v")`: rows of OpenAI's fused qkv projection (q first, then k, then v: OpenAI's gpt_oss/torch/model.py, AttentionBlock).
A name absent from a table maps to itself.

`audit(checkpoint)` checks, from the headers alone, that every parameter is filled and every checkpoint tensor
is used exactly once, with the shape and dtype the config implies; tensor values (NaN/Inf, 0xFF scales) are
checked as each one is read. `iter_tensors`, `layer_tensors` and `global_tensors` then read one tensor at a time.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from gptoss_model.config import GPTOssConfig
from gptoss_convert import mxfp4
from gptoss_convert.checkpoint import Checkpoint
from gptoss_convert.errors import IntegrityError
from gptoss_model.io import TensorSpec


@dataclass(frozen=True)
class Transposed:
    """A dense expert weight stored [E, in, out]; ours is [E, out, in]."""

    name: str


@dataclass(frozen=True)
class Part:
    """Rows of a fused [q; k; v] projection (weight or bias)."""

    name: str
    part: str  # "q" | "k" | "v"


# ---- our parameters, in model order (docs/design.md) ---------------------------------------------------------------

LAYER = "model.layers.{layer}."  # our names, {layer} filled in by sources()
GLOBAL_BEFORE = ("model.embed_tokens.weight",)
LAYER_PARAMS = tuple(LAYER + p for p in (
    "input_layernorm.weight",
    "self_attn.q_proj.weight", "self_attn.q_proj.bias",
    "self_attn.k_proj.weight", "self_attn.k_proj.bias",
    "self_attn.v_proj.weight", "self_attn.v_proj.bias",
    "self_attn.o_proj.weight", "self_attn.o_proj.bias",
    "self_attn.sinks",
    "post_attention_layernorm.weight",
    "mlp.router.weight", "mlp.router.bias",
    "mlp.experts.gate_up_proj", "mlp.experts.gate_up_proj_bias",
    "mlp.experts.down_proj", "mlp.experts.down_proj_bias",
))
GLOBAL_AFTER = ("model.norm.weight", "lm_head.weight")


def param_shape(template: str, config: GPTOssConfig) -> tuple[int, ...]:
    """Shape of one of our parameters (template with or without `{layer}`), in the legend's letters."""
    H, V, E, I = config.hidden_size, config.vocab_size, config.num_local_experts, config.intermediate_size
    q, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    suffix = template.rsplit("}.", 1)[-1]
    return {
        "model.embed_tokens.weight": (V, H), "model.norm.weight": (H,), "lm_head.weight": (V, H),
        "input_layernorm.weight": (H,), "post_attention_layernorm.weight": (H,),
        "self_attn.q_proj.weight": (q, H), "self_attn.q_proj.bias": (q,),
        "self_attn.k_proj.weight": (kv, H), "self_attn.k_proj.bias": (kv,),
        "self_attn.v_proj.weight": (kv, H), "self_attn.v_proj.bias": (kv,),
        "self_attn.o_proj.weight": (H, q), "self_attn.o_proj.bias": (H,),
        "self_attn.sinks": (config.num_attention_heads,),
        "mlp.router.weight": (E, H), "mlp.router.bias": (E,),
        "mlp.experts.gate_up_proj": (E, 2 * I, H), "mlp.experts.gate_up_proj_bias": (E, 2 * I),
        "mlp.experts.down_proj": (E, H, I), "mlp.experts.down_proj_bias": (E, H),
    }[suffix]


def our_shapes(config: GPTOssConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of GPTOssModelFull(config) with its shape, in model order."""
    names = [*GLOBAL_BEFORE]
    for layer in range(config.num_hidden_layers):
        names += [t.format(layer=layer) for t in LAYER_PARAMS]
    names += GLOBAL_AFTER
    return {name: param_shape(name_template(name), config) for name in names}


def name_template(name: str) -> str:
    parts = name.split(".")
    if len(parts) > 2 and parts[1] == "layers" and parts[2].isdigit():
        parts[2] = "{layer}"
    return ".".join(parts)


# ---- the tables ----------------------------------------------------------------------------------------------------

EXPERTS = LAYER + "mlp.experts."
HF_MXFP4 = {
    EXPERTS + "gate_up_proj": (EXPERTS + "gate_up_proj_blocks", EXPERTS + "gate_up_proj_scales"),
    EXPERTS + "down_proj": (EXPERTS + "down_proj_blocks", EXPERTS + "down_proj_scales"),
}
HF_DENSE = {
    EXPERTS + "gate_up_proj": Transposed(EXPERTS + "gate_up_proj"),  # [E, H, 2I] -> [E, 2I, H]
    EXPERTS + "down_proj": Transposed(EXPERTS + "down_proj"),  # [E, I, H] -> [E, H, I]
}
BLOCK = "block.{layer}."  # OpenAI's original/ names
ORIGINAL = {
    "model.embed_tokens.weight": "embedding.weight",
    LAYER + "input_layernorm.weight": BLOCK + "attn.norm.scale",
    LAYER + "self_attn.q_proj.weight": Part(BLOCK + "attn.qkv.weight", "q"),
    LAYER + "self_attn.q_proj.bias": Part(BLOCK + "attn.qkv.bias", "q"),
    LAYER + "self_attn.k_proj.weight": Part(BLOCK + "attn.qkv.weight", "k"),
    LAYER + "self_attn.k_proj.bias": Part(BLOCK + "attn.qkv.bias", "k"),
    LAYER + "self_attn.v_proj.weight": Part(BLOCK + "attn.qkv.weight", "v"),
    LAYER + "self_attn.v_proj.bias": Part(BLOCK + "attn.qkv.bias", "v"),
    LAYER + "self_attn.o_proj.weight": BLOCK + "attn.out.weight",
    LAYER + "self_attn.o_proj.bias": BLOCK + "attn.out.bias",
    LAYER + "self_attn.sinks": BLOCK + "attn.sinks",
    LAYER + "post_attention_layernorm.weight": BLOCK + "mlp.norm.scale",
    LAYER + "mlp.router.weight": BLOCK + "mlp.gate.weight",
    LAYER + "mlp.router.bias": BLOCK + "mlp.gate.bias",
    EXPERTS + "gate_up_proj": (BLOCK + "mlp.mlp1_weight.blocks", BLOCK + "mlp.mlp1_weight.scales"),
    EXPERTS + "gate_up_proj_bias": BLOCK + "mlp.mlp1_bias",
    EXPERTS + "down_proj": (BLOCK + "mlp.mlp2_weight.blocks", BLOCK + "mlp.mlp2_weight.scales"),
    EXPERTS + "down_proj_bias": BLOCK + "mlp.mlp2_bias",
    "model.norm.weight": "norm.scale",
    "lm_head.weight": "unembedding.weight",
}
GPTOSS_MODEL: dict = {}  # our own format: every name maps to itself

TABLES = {("hf", "mxfp4"): HF_MXFP4, ("hf", "dense"): HF_DENSE, ("original", "mxfp4"): ORIGINAL,
          ("original", "dense"): ORIGINAL, ("gptoss_model", "dense"): GPTOSS_MODEL,
          ("gptoss_model", "mxfp4"): GPTOSS_MODEL}
FLOAT_DTYPES = ("BF16", "F32", "F16")


def sources(config: GPTOssConfig, layout: str, experts: str) -> dict[str, object]:
    """Our name -> its source in a checkpoint of this layout (templates filled in), in model order."""
    table = TABLES[(layout, experts)]
    filled = {}
    for name in our_shapes(config):
        template = name_template(name)
        layer = name.split(".")[2] if template != name else None
        filled[name] = _fill(table.get(template, template), layer)
    return filled


def _fill(source, layer):
    match source:
        case str():
            return source.format(layer=layer)
        case (blocks, scales):
            return (blocks.format(layer=layer), scales.format(layer=layer))
        case Transposed(name):
            return Transposed(name.format(layer=layer))
        case Part(name, part):
            return Part(name.format(layer=layer), part)
    raise TypeError(f"bad remap table entry {source!r}")


def _qkv_rows(config: GPTOssConfig) -> dict[str, slice]:
    q, kv = config.num_attention_heads * config.head_dim, config.num_key_value_heads * config.head_dim
    return {"q": slice(0, q), "k": slice(q, q + kv), "v": slice(q + kv, q + 2 * kv)}


def expected_tensors(config: GPTOssConfig, layout: str, experts: str, float_dtype: str = "BF16") -> dict[str, TensorSpec]:
    """Every tensor a checkpoint of this layout must hold, with dtype and shape, in model order.
    (Also the plan `scripts/make_checkpoint.py` writes.)"""
    rows = _qkv_rows(config)
    specs: dict[str, TensorSpec] = {}
    for name, source in sources(config, layout, experts).items():
        shape = param_shape(name_template(name), config)
        match source:
            case str():
                specs[source] = TensorSpec(source, float_dtype, shape)
            case (blocks, scales):
                *lead, k = shape
                if k % mxfp4.VALUES_PER_BLOCK:
                    raise IntegrityError(f"{name}: input dim {k} is not a multiple of {mxfp4.VALUES_PER_BLOCK}, "
                                         "so it cannot be stored as MXFP4")
                groups = k // mxfp4.VALUES_PER_BLOCK
                specs[blocks] = TensorSpec(blocks, "U8", (*lead, groups, mxfp4.BYTES_PER_BLOCK))
                specs[scales] = TensorSpec(scales, "U8", (*lead, groups))
            case Transposed(source_name):
                specs[source_name] = TensorSpec(source_name, float_dtype, (shape[0], shape[2], shape[1]))
            case Part(source_name, _):
                fused = rows["v"].stop
                specs[source_name] = TensorSpec(source_name, float_dtype, (fused, *shape[1:]))
    return specs


# ---- the coverage audit --------------------------------------------------------------------------------------------

def float_dtype_of(ckpt: Checkpoint) -> str:
    """The dtype every non-MXFP4 tensor must have: BF16 for the official layouts; for our format and dense HF
    checkpoints, whatever float dtype the embedding has (one dtype for all)."""
    if ckpt.layout == "original" or (ckpt.layout == "hf" and ckpt.experts == "mxfp4"):
        return "BF16"
    first = next((t for n, t in ckpt.tensors.items() if n in ("model.embed_tokens.weight", "embedding.weight")), None)
    return first.dtype if first is not None and first.dtype in FLOAT_DTYPES else "BF16"


def audit(ckpt: Checkpoint) -> dict[str, object]:
    """Check from the headers that the checkpoint holds exactly the tensors its config implies; return our name ->
    source. Raises one IntegrityError (exit 3) listing the problems: wrong shape or dtype, blocks/scales that do not
    pair up, missing tensors, unexpected extra tensors."""
    config = ckpt.config
    expected = expected_tensors(config, ckpt.layout, ckpt.experts, float_dtype_of(ckpt))
    found = ckpt.tensors
    problems = []
    paired = set()
    pairs = (source for source in sources(config, ckpt.layout, ckpt.experts).values() if isinstance(source, tuple))
    for blocks, scales in pairs:
        blocks_info, scales_info = found.get(blocks), found.get(scales)
        if blocks_info is not None and scales_info is not None and blocks_info.shape[:-1] != scales_info.shape:
            problems.append(f"{blocks} {list(blocks_info.shape)} and {scales} {list(scales_info.shape)} do not pair up "
                            f"(expected {list(expected[blocks].shape)} and {list(expected[scales].shape)})")
            paired |= {blocks, scales}
    for name, spec in expected.items():
        info = found.get(name)
        if info is None or name in paired:
            continue
        if info.shape != spec.shape:
            problems.append(f"{name}: expected shape {list(spec.shape)}, found {list(info.shape)} (in {info.file.name})")
        elif info.dtype != spec.dtype:
            problems.append(f"{name}: expected dtype {spec.dtype}, found {info.dtype} (in {info.file.name})")
    problems += [f"missing tensor {n}: expected {s.dtype} {list(s.shape)}, found none" for n, s in expected.items()
                 if n not in found]
    problems += [f"unexpected tensor {n} ({t.dtype} {list(t.shape)} in {t.file.name}): not used by a "
                 f"{config.num_hidden_layers}-layer, {config.num_local_experts}-expert gpt-oss" for n, t in found.items()
                 if n not in expected]
    if problems:
        more = f" (and {len(problems) - 3} more problems)" if len(problems) > 3 else ""
        raise IntegrityError(f"{ckpt.root} ({ckpt.layout} layout): " + "; ".join(problems[:3]) + more)
    return sources(config, ckpt.layout, ckpt.experts)


# ---- reading, one tensor at a time ---------------------------------------------------------------------------------

class _Reader:
    """Reads our tensors from an audited checkpoint; keeps the last fused qkv tensor so q, k and v read it once."""

    def __init__(self, ckpt: Checkpoint, dtype: torch.dtype | None, owned: bool = False, device=None):
        self.ckpt, self.dtype, self.owned = ckpt, dtype, owned
        self.device = device  # where MXFP4 experts are dequantized (a GPU does it far faster than the CPU)
        self.rows = _qkv_rows(ckpt.config)
        self._fused: tuple[str, torch.Tensor] | None = None

    def read(self, our_name: str, source) -> torch.Tensor:
        ckpt = self.ckpt
        match source:
            case str():
                tensor = self._checked(source)
            case (blocks, scales):
                dtype = self.dtype or torch.bfloat16
                # the audit already paired the shapes; what dequantize can still find is a 0xFF (NaN) scale byte
                packed = [ckpt.get(n).to(self.device) if self.device else ckpt.get(n) for n in (blocks, scales)]
                tensor = mxfp4.dequantize(*packed, dtype=dtype, name=f"{ckpt.tensors[scales].file}: {scales}")
                _check_finite(tensor, f"{blocks} (dequantized with {scales})", ckpt.tensors[blocks].file)
            case Transposed(name):
                tensor = self._checked(name).transpose(1, 2).contiguous()
            case Part(name, part):
                if self._fused is None or self._fused[0] != name:
                    self._fused = (name, self._checked(name))
                tensor = self._fused[1][self.rows[part]].clone()
        return tensor if self.dtype is None else tensor.to(self.dtype)

    def _checked(self, name: str) -> torch.Tensor:
        # get(): safe_open, possibly backed by the file's memory map (fine to stream out); read(): fresh memory
        tensor = self.ckpt.read(name) if self.owned else self.ckpt.get(name)
        _check_finite(tensor, name, self.ckpt.tensors[name].file)
        return tensor


def _check_finite(tensor: torch.Tensor, name: str, file) -> None:
    """Raise IntegrityError naming the tensor if it holds NaN or Inf. Fast path: min and max propagate NaN and
    show ±Inf, with no temporary the size of the tensor; the slow, chunked scan only runs to describe a failure."""
    if not tensor.dtype.is_floating_point or tensor.numel() == 0:
        return
    low, high = torch.aminmax(tensor.reshape(-1))
    if bool(torch.isfinite(low)) and bool(torch.isfinite(high)):
        return
    flat, step = tensor.reshape(-1), 1 << 24
    count, first = 0, None
    for start in range(0, flat.numel(), step):
        bad = ~torch.isfinite(flat[start:start + step])
        count += int(bad.sum())
        if first is None and count:
            first = start + int(bad.nonzero()[0])
    where = [int(i) for i in torch.unravel_index(torch.tensor(first), tuple(tensor.shape))]
    raise IntegrityError(f"{file}: {name} holds {count} NaN/Inf value(s), first at index {where}; expected finite weights")


def iter_tensors(ckpt: Checkpoint, dtype: torch.dtype | None = torch.float32,
                 source_map: dict[str, object] | None = None, owned: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """Audit, then yield (our name, tensor) in model order, one at a time. `dtype` None keeps the checkpoint's
    dtype (MXFP4 experts then dequantize to bfloat16). A tensor copied unchanged from the file may share its
    memory map (fine for streaming it out); `owned=True` guarantees every tensor owns its memory."""
    source_map = audit(ckpt) if source_map is None else source_map
    reader = _Reader(ckpt, dtype, owned)
    for name, source in source_map.items():
        yield name, reader.read(name, source)


def layer_tensors(ckpt: Checkpoint, layer: int, dtype: torch.dtype | None = torch.float32,
                  source_map: dict[str, object] | None = None, device=None) -> dict[str, torch.Tensor]:
    """The tensors of decoder layer `layer`, keyed by our full names (`model.layers.{layer}.…`). With `device`,
    MXFP4 experts are moved there packed and dequantized there (other tensors stay on the CPU)."""
    if not 0 <= layer < ckpt.config.num_hidden_layers:
        raise IndexError(f"layer {layer} out of range 0..{ckpt.config.num_hidden_layers - 1}")
    source_map = audit(ckpt) if source_map is None else source_map
    prefix = f"model.layers.{layer}."
    reader = _Reader(ckpt, dtype, device=device)
    return {name: reader.read(name, src) for name, src in source_map.items() if name.startswith(prefix)}


def global_tensors(ckpt: Checkpoint, dtype: torch.dtype | None = torch.float32,
                   source_map: dict[str, object] | None = None, names: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """The tensors outside the decoder layers: embedding, final norm, lm_head (or only `names` of them; the
    20b embedding and lm_head are 1.2 GB each in bf16)."""
    source_map = audit(ckpt) if source_map is None else source_map
    names = (*GLOBAL_BEFORE, *GLOBAL_AFTER) if names is None else names
    unknown = [n for n in names if n not in (*GLOBAL_BEFORE, *GLOBAL_AFTER)]
    if unknown:
        raise KeyError(f"not a global tensor: {unknown[0]}; expected one of {(*GLOBAL_BEFORE, *GLOBAL_AFTER)}")
    reader = _Reader(ckpt, dtype)
    return {name: reader.read(name, source_map[name]) for name in names}
