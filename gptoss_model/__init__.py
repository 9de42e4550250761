"""A minimal, readable, pure-PyTorch gpt-oss (20b, 120b and a small preset).

    from gptoss_model import GPTOss_Small, GPTOssModelFull
    model = GPTOssModelFull(GPTOss_Small())
    logits = model(input_ids=ids)            # [B, T, V]

Names: modules that mirror a Transformers class are spelled as Transformers spells it (GptOssAttention,
GptOssExperts, ...); the config, the presets and the full model keep the original design's names (GPTOssConfig,
GPTOss_Small, GPTOssModelFull), which differ from Transformers' GptOssConfig / GptOssForCausalLM on purpose since
verify holds both side by side. GPTOssExperts and GPTOssTopKRouter stay as aliases of the original design.
Importing this package imports the eager model only: fast.py, generate.py and offload.py load when used.
"""

from gptoss_model.config import GPTOss_20B, GPTOss_120B, GPTOss_Small, GPTOssConfig
from gptoss_model.model import (
    GptOssAttention,
    GptOssDecoderLayer,
    GptOssExperts,
    GptOssMLP,
    GptOssModel,
    GPTOssModelFull,
    GptOssRMSNorm,
    GptOssRotaryEmbedding,
    GptOssTopKRouter,
    KVCache,
)

GPTOssExperts = GptOssExperts  # the original design's spelling
GPTOssTopKRouter = GptOssTopKRouter

__all__ = [
    "GPTOssConfig",
    "GPTOss_20B",
    "GPTOss_120B",
    "GPTOss_Small",
    "GptOssRMSNorm",
    "GptOssRotaryEmbedding",
    "GptOssAttention",
    "GptOssTopKRouter",
    "GPTOssTopKRouter",
    "GptOssExperts",
    "GPTOssExperts",
    "GptOssMLP",
    "GptOssDecoderLayer",
    "GptOssModel",
    "GPTOssModelFull",
    "KVCache",
]
