"""The oracle: Transformers' own gpt-oss classes, one decoder layer at a time.

A thin adapter. It builds Transformers' `GptOssDecoderLayer`, rotary embedding and masks from a Transformers
`GptOssConfig` (made from the checkpoint's config), never copies or patches them, and hands them the same weight
tensors gptoss_model uses (shared, not copied: the expert matrices are transposed views), so verifying one layer
holds one copy of its weights. Eager attention and eager experts are pinned and recorded in the report.
"""

import torch

ATTENTION_IMPLEMENTATION = "eager"
EXPERTS_IMPLEMENTATION = "eager"
_EXPERT_MATRICES = ("gate_up_proj", "down_proj")  # Transformers stores [E, in, out]; we keep [E, out, in]


def transformers_version() -> str:
    import transformers

    return transformers.__version__


class Reference:
    def __init__(self, config, device):
        from transformers import GptOssConfig
        from transformers.models.gpt_oss import modeling_gpt_oss

        self._modeling = modeling_gpt_oss
        self.hf_config = GptOssConfig(**config.to_hf_config())
        self.hf_config._attn_implementation = ATTENTION_IMPLEMENTATION
        self.hf_config._experts_implementation = EXPERTS_IMPLEMENTATION
        self.device = device
        self.rotary = modeling_gpt_oss.GptOssRotaryEmbedding(self.hf_config).to(device)

    def position_embeddings(self, x: torch.Tensor, position_ids: torch.Tensor):
        return self.rotary(x, position_ids)

    def masks(self, x: torch.Tensor, position_ids: torch.Tensor) -> dict:
        """Transformers' own causal and sliding-window masks for one unpadded prompt x [1, T, H]."""
        from transformers import masking_utils

        # the 4th argument is the cache (named past_key_values before 5.2x, cache after): pass it positionally
        common = dict(position_ids=position_ids, allow_is_causal_skip=False)
        return {
            "full_attention": masking_utils.create_causal_mask(self.hf_config, x, None, None, **common),
            "sliding_attention": masking_utils.create_sliding_window_causal_mask(self.hf_config, x, None, None, **common),
        }

    def decoder_layer(self, index: int, our_layer_tensors: dict) -> torch.nn.Module:
        """Transformers' GptOssDecoderLayer `index`, its parameters set to our tensors (keys without the
        `model.layers.N.` prefix)."""
        with torch.device("meta"):
            layer = self._modeling.GptOssDecoderLayer(self.hf_config, index)
        state = {}
        for name, tensor in our_layer_tensors.items():
            state[name] = tensor.transpose(1, 2) if name.split(".")[-1] in _EXPERT_MATRICES else tensor
        layer.load_state_dict(state, strict=True, assign=True)
        return layer.eval()

    def run_layer(self, layer, x, mask, position_ids, position_embeddings) -> torch.Tensor:
        out = layer(x, attention_mask=mask, position_ids=position_ids, position_embeddings=position_embeddings)
        return out[0] if isinstance(out, tuple) else out
