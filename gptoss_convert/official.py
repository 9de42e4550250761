"""The metadata of the official hub repositories, byte for byte: how `openai/gpt-oss-20b` / `-120b` spell
config.json, generation_config.json, tokenizer_config.json, special_tokens_map.json and the index (its order,
shard split and serialisation), and how `original/` names and orders its tensors.

Facts (docs/checkpoints.md, "Byte-faithful metadata"): pretty files are `json.dumps(indent=2, sort_keys=True)` plus a
newline; the index is one line of `json.dumps` defaults (", " and ": "), no newline, in the hub's insertion order:
layers in lexicographic order of their index (0, 1, 10, 11, ...), 19 tensors per layer in LAYER_ORDER, then
embed_tokens, norm, lm_head; shards filled greedily in that order up to 4.8 GB. Shard headers are those of the
safetensors library: no `__metadata__`, tensors sorted by dtype (BF16 before U8), then by name.
"""

import json

from gptoss_model.config import GPTOssConfig
from gptoss_convert.config_files import MXFP4_QUANTIZATION_CONFIG

HUB_SHARD_BYTES = 4_800_000_000
TRANSFORMERS_VERSION = "4.55.0.dev0"  # what the hub's config.json and generation_config.json say

# The keys of the hub's config.json, no more: no bos_token_id (generation_config.json has it), no torch_dtype.
HUB_CONFIG_KEYS = (
    "architectures", "attention_bias", "attention_dropout", "eos_token_id", "experts_per_token", "head_dim",
    "hidden_act", "hidden_size", "initial_context_length", "initializer_range", "intermediate_size", "layer_types",
    "max_position_embeddings", "model_type", "num_attention_heads", "num_experts_per_tok", "num_hidden_layers",
    "num_key_value_heads", "num_local_experts", "output_router_logits", "pad_token_id", "quantization_config",
    "rms_norm_eps", "rope_scaling", "rope_theta", "router_aux_loss_coef", "sliding_window", "swiglu_limit",
    "tie_word_embeddings", "transformers_version", "use_cache", "vocab_size",
)

# One decoder layer's tensors in the order of the hub's index.
LAYER_ORDER = (
    "input_layernorm.weight", "self_attn.o_proj.bias", "self_attn.o_proj.weight", "self_attn.q_proj.bias",
    "self_attn.k_proj.bias", "self_attn.v_proj.bias", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.sinks", "mlp.router.bias", "mlp.router.weight",
    "mlp.experts.gate_up_proj_bias", "mlp.experts.gate_up_proj_blocks", "mlp.experts.gate_up_proj_scales",
    "mlp.experts.down_proj_bias", "mlp.experts.down_proj_blocks", "mlp.experts.down_proj_scales",
    "post_attention_layernorm.weight",
)
GLOBAL_ORDER = ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")

# original/: one block's tensors in the order of the hub's dtypes.json (blocks in numeric order, embedding first,
# norm and unembedding last).
BLOCK_ORDER = (
    "attn.norm.scale", "attn.qkv.weight", "attn.qkv.bias", "attn.sinks", "attn.out.weight", "attn.out.bias",
    "mlp.norm.scale", "mlp.gate.weight", "mlp.gate.bias", "mlp.mlp1_weight.blocks", "mlp.mlp1_weight.scales",
    "mlp.mlp1_bias", "mlp.mlp2_weight.blocks", "mlp.mlp2_weight.scales", "mlp.mlp2_bias",
)

# o200k_harmony's special tokens (the hub's tokenizer_config.json); the other ids of 199998..200018 are `<|reserved_N|>`.
HARMONY_SPECIAL_TOKENS = {
    199998: "<|startoftext|>", 199999: "<|endoftext|>", 200002: "<|return|>", 200003: "<|constrain|>",
    200005: "<|channel|>", 200006: "<|start|>", 200007: "<|end|>", 200008: "<|message|>", 200012: "<|call|>",
    200018: "<|endofprompt|>",
}
HUB_MODEL_MAX_LENGTH = int(1e30)  # Transformers' "no limit" value, as the hub's tokenizer_config.json has it


def pretty_json(body: dict) -> str:
    """config.json, generation_config.json, tokenizer_config.json, special_tokens_map.json as the hub writes them."""
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


def index_text(index: dict) -> str:
    """model.safetensors.index.json as the hub writes it: one line, insertion order, no newline."""
    return json.dumps(index)


def hf_config_json(config: GPTOssConfig) -> dict:
    """config.json as on the hub: its keys exactly, with quantization_config."""
    body = config.to_hf_config()
    body["quantization_config"] = MXFP4_QUANTIZATION_CONFIG
    body["transformers_version"] = TRANSFORMERS_VERSION
    if float(body["rope_theta"]).is_integer():
        body["rope_theta"] = int(body["rope_theta"])  # the hub writes 150000
    return {key: body[key] for key in HUB_CONFIG_KEYS}


def generation_config_json(config: GPTOssConfig) -> dict:
    eos = [config.eos_token_id, config.pad_token_id] + ([200012] if config.vocab_size > 200012 else [])  # <|call|>
    return {"bos_token_id": config.bos_token_id, "do_sample": True, "eos_token_id": eos,
            "pad_token_id": config.pad_token_id, "transformers_version": TRANSFORMERS_VERSION}


def harmony_added_tokens() -> dict[int, str]:
    """The 21 added tokens of the hub's tokenizer (ids 199998..200018)."""
    return {i: HARMONY_SPECIAL_TOKENS.get(i, f"<|reserved_{i}|>") for i in range(199998, 200019)}


def tokenizer_config_json(added_tokens: dict[int, str], config: GPTOssConfig, model_max_length: int) -> dict:
    """tokenizer_config.json in the hub's spelling, for the given added tokens (id -> text)."""
    decoder = {str(i): {"content": text, "lstrip": False, "normalized": False, "rstrip": False,
                        "single_word": False, "special": True} for i, text in sorted(added_tokens.items())}
    return {"added_tokens_decoder": decoder, **special_tokens_map_json(added_tokens, config),
            "clean_up_tokenization_spaces": False, "extra_special_tokens": {},
            "model_input_names": ["input_ids", "attention_mask"], "model_max_length": model_max_length,
            "tokenizer_class": "PreTrainedTokenizerFast"}


def special_tokens_map_json(added_tokens: dict[int, str], config: GPTOssConfig) -> dict:
    return {"bos_token": added_tokens[config.bos_token_id], "eos_token": added_tokens[config.eos_token_id],
            "pad_token": added_tokens[config.pad_token_id]}


def hf_tensor_order(config: GPTOssConfig) -> list[str]:
    """The HF layout's tensor names in the order of the hub's index."""
    layers = sorted(str(i) for i in range(config.num_hidden_layers))
    return [f"model.layers.{i}.{name}" for i in layers for name in LAYER_ORDER] + list(GLOBAL_ORDER)


def original_tensor_order(config: GPTOssConfig) -> list[str]:
    """original/'s tensor names in the order of the hub's dtypes.json."""
    blocks = [f"block.{i}.{name}" for i in range(config.num_hidden_layers) for name in BLOCK_ORDER]
    return ["embedding.weight", *blocks, "norm.scale", "unembedding.weight"]


def original_shard_names(count: int) -> list[str]:
    """120b's original/ shards: model--00001-of-00007.safetensors ... (one-based, with a double dash)."""
    return [f"model--{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def original_config_json(body: dict) -> dict:
    """original/config.json values in the hub's spelling: rope_theta and the NTK alpha/beta as integers, the
    scaling factor and swiglu_limit as floats (key order as given)."""
    body = dict(body)
    for key in ("rope_theta", "rope_ntk_alpha", "rope_ntk_beta"):
        if float(body[key]).is_integer():
            body[key] = int(body[key])
    return body


def dtypes_json(names) -> dict:
    """original/dtypes.json: BF16, except FP4 blocks and UE8 scales (stored as U8 in the headers)."""
    return {n: "FP4" if n.endswith(".blocks") else "UE8" if n.endswith(".scales") else "BF16" for n in names}


_DTYPE_RANK = {"F64": 0, "I64": 0, "F32": 1, "I32": 1, "BF16": 2, "F16": 2, "I16": 2, "U8": 3, "I8": 3, "BOOL": 3}


def safetensors_data_order(specs) -> list:
    """Tensors in the order the safetensors library writes a file: larger dtypes first, then by name."""
    return sorted(specs, key=lambda spec: (_DTYPE_RANK[spec.dtype], spec.name))
