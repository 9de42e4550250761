"""The embedded tiny gpt-oss checkpoint (gptoss_convert/data/tiny/), in the exact official layout.

It was generated once with `python scripts/make_checkpoint.py --shape tiny --out gptoss_convert/data/tiny` and
committed: HF layout at the root (MXFP4 experts, BF16 rest, zero-based shards + index, config.json with
quantization_config, generation_config.json, a small byte-level BPE tokenizer), OpenAI's `original/` beside it.
It is read-only: open it, copy it, never write into it.
"""

from importlib import resources
from pathlib import Path

from gptoss_model.config import GPTOssConfig
from gptoss_convert.errors import InputError

# bos, pad and eos sit at the top ids, in the hub's order (<|startoftext|> < <|endoftext|>
# < <|return|>; the hub's tokenizer_config.json).
# The other harmony tokens (for the chat template) take the ids of the byte-level tokens of bytes 0xF5..0xFA, which
# never occur in UTF-8 text: every text still tokenizes to the same ids, and the vocabulary keeps its 512 rows.
TINY_SPECIAL_TOKENS = {
    "<|constrain|>": 177, "<|channel|>": 178, "<|start|>": 179, "<|end|>": 180, "<|message|>": 181, "<|call|>": 182,
    "<|startoftext|>": 509, "<|endoftext|>": 510, "<|return|>": 511,
}
UNUSED_BYTES_FOR_SPECIAL_TOKENS = bytes(range(0xF5, 0xFB))  # bytes no UTF-8 text contains (RFC 3629)

# Every structural feature of the real model at toy size: alternating sliding/full (layer 0 sliding), GQA,
# sinks, top-k MoE, YaRN with the real parameters; dims multiples of 32 for MXFP4.
TINY_CONFIG = GPTOssConfig(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    num_local_experts=4,
    num_experts_per_tok=2,
    sliding_window=16,
    max_position_embeddings=131072,
    bos_token_id=509,
    eos_token_id=511,
    pad_token_id=510,
)


def tiny_checkpoint_dir() -> Path:
    """The directory of the embedded tiny checkpoint (read-only)."""
    path = Path(str(resources.files("gptoss_convert") / "data" / "tiny"))
    if not (path / "config.json").is_file():
        raise InputError(f"the embedded tiny checkpoint is missing from {path}; reinstall gptoss-convert")
    return path
