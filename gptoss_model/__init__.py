"""A minimal, readable, pure-PyTorch gpt-oss (20b, 120b and a small preset).

    from gptoss_model import GPTOss_Small, GPTOssModelFull
    model = GPTOssModelFull(GPTOss_Small())
    logits = model(input_ids=ids)            # [B, T, V]
"""

from gptoss_model.config import GPTOss_20B, GPTOss_120B, GPTOss_Small, GPTOssConfig
from gptoss_model.model import (
    GptOssAttention,
    GptOssDecoderLayer,
    GPTOssExperts,
    GptOssMLP,
    GptOssModel,
    GPTOssModelFull,
    GptOssRMSNorm,
    GptOssRotaryEmbedding,
    GPTOssTopKRouter,
    KVCache,
)

__all__ = [
    "GPTOssConfig",
    "GPTOss_20B",
    "GPTOss_120B",
    "GPTOss_Small",
    "GptOssRMSNorm",
    "GptOssRotaryEmbedding",
    "GptOssAttention",
    "GPTOssTopKRouter",
    "GPTOssExperts",
    "GptOssMLP",
    "GptOssDecoderLayer",
    "GptOssModel",
    "GPTOssModelFull",
    "KVCache",
]
