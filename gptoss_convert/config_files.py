"""A checkpoint's config.json -> GPTOssConfig, for each layout (docs/checkpoints.md, "Layouts we read"): the
Transformers one (with its quantization_config), OpenAI's original/ one, and ours; every problem an InputError
naming the file."""

import json
from pathlib import Path

from gptoss_model.config import GPTOssConfig, check_positive_sizes
from gptoss_model.config import config_from_original as _config_from_original
from gptoss_model.io import check_format
from gptoss_convert.errors import InputError

# What the hub's config.json carries for the MXFP4 checkpoints (as in openai/gpt-oss-20b's config.json).
MXFP4_QUANTIZATION_CONFIG = {
    "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"],
    "quant_method": "mxfp4",
}


def config_from_original(original: dict, source: str = "original/config.json") -> GPTOssConfig:
    """gptoss_model.config.config_from_original, with a bad config reported as an InputError (exit 2)."""
    try:
        return _config_from_original(original, source)
    except ValueError as error:
        raise InputError(str(error)) from None


def read_json(path: Path, error=InputError) -> dict:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: cannot read JSON ({exc})") from None
    if not isinstance(value, dict):
        raise error(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


# Config keys that size tensors: each must be a positive integer, or the audit would blame the weights for the config.
HF_SIZE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "num_local_experts", "num_experts_per_tok", "sliding_window")


def _check_sizes(config: dict, keys, source) -> None:
    try:
        check_positive_sizes(config, keys, source)
    except ValueError as error:
        raise InputError(str(error)) from None


def hf_config(directory: Path) -> GPTOssConfig:
    path = directory / "config.json"
    hf = read_json(path)
    _check_sizes(hf, HF_SIZE_KEYS, path)
    quant = hf.get("quantization_config")
    if quant is not None and (not isinstance(quant, dict) or quant.get("quant_method") != "mxfp4"):
        found = quant.get("quant_method") if isinstance(quant, dict) else quant
        raise InputError(f"{path}: quantization_config.quant_method must be 'mxfp4', found {found!r}")
    generation = directory / "generation_config.json"
    if "bos_token_id" not in hf and generation.is_file():
        bos = read_json(generation).get("bos_token_id")
        if isinstance(bos, int):
            hf["bos_token_id"] = bos
    try:
        return GPTOssConfig.from_hf_config(hf)
    except (TypeError, ValueError, KeyError) as error:
        raise InputError(f"{path}: not a usable gpt-oss config ({error})") from None


def own_config(directory: Path) -> GPTOssConfig:
    path = directory / "config.json"
    try:
        body = check_format(read_json(path), path)
    except ValueError as error:
        raise InputError(str(error)) from None
    _check_sizes(body, HF_SIZE_KEYS, path)
    try:
        return GPTOssConfig.from_dict(body)
    except (TypeError, ValueError) as error:
        raise InputError(f"{path}: {error}") from None
