"""Transformers' own gpt-oss classes behind the adapter protocol: the default reference ("transformers": eager
attention, eager experts) and two candidates, its other attention paths ("transformers:sdpa",
"transformers:flex_attention"), checked against its eager path.

A thin adapter: it builds Transformers' `GptOssDecoderLayer`, rotary embedding and masks from a Transformers
`GptOssConfig` made from the checkpoint's config, never copies or patches them, and hands them the tensors verify
gives (shared, not copied: the expert matrices are transposed views, Transformers keeps [E, in, out]).
"""

import torch
import torch.nn.functional as F

EXPERTS_IMPLEMENTATION = "eager"
_EXPERT_MATRICES = ("gate_up_proj", "down_proj")  # checkpoint [E, out, in] -> Transformers [E, in, out]


class TransformersCandidate:
    def __init__(self, attention: str = "eager"):
        import transformers
        from transformers.models.gpt_oss import modeling_gpt_oss

        self.attention = attention
        self.name = "transformers" if attention == "eager" else f"transformers:{attention}"
        self.version = transformers.__version__
        self.source = modeling_gpt_oss.__file__
        self.settings = {"attn_implementation": attention, "experts_implementation": EXPERTS_IMPLEMENTATION}
        self._modeling = modeling_gpt_oss
        self.hf_config = self.rotary = None

    def setup(self, context):
        from transformers import GptOssConfig

        self.hf_config = GptOssConfig(**context.config.to_hf_config())
        self.hf_config._attn_implementation = self.attention
        self.hf_config._experts_implementation = EXPERTS_IMPLEMENTATION
        self.rotary = self._modeling.GptOssRotaryEmbedding(self.hf_config).to(context.device)

    def build_layer(self, index, config, tensors):
        prefix = f"model.layers.{index}."
        state = {}
        for name, tensor in tensors.items():
            short = name.removeprefix(prefix)
            state[short] = tensor.transpose(1, 2) if short.split(".")[-1] in _EXPERT_MATRICES else tensor
        with torch.device("meta"):
            layer = self._modeling.GptOssDecoderLayer(self.hf_config, index)
        layer.load_state_dict(state, strict=True, assign=True)
        return TransformersLayer(layer.eval(), index, self)

    def embed(self, tensors, token_ids):
        return torch.nn.Embedding.from_pretrained(tensors["model.embed_tokens.weight"])(token_ids)

    def final_norm(self, tensors, hidden):
        weight = tensors["model.norm.weight"]
        norm = self._modeling.GptOssRMSNorm(weight.shape[0], eps=self.hf_config.rms_norm_eps)
        norm.load_state_dict({"weight": weight}, assign=True)
        return norm(hidden)

    def head(self, tensors, hidden):
        return F.linear(hidden, tensors["lm_head.weight"])  # Transformers' lm_head is a bias-free nn.Linear

    def masks(self, hidden, position_ids) -> dict:
        """Transformers' own causal and sliding-window masks for unpadded prompts hidden [B, T, H]."""
        from transformers import masking_utils

        # the 4th argument is the cache (named past_key_values before 5.2x, cache after): pass it positionally
        common = dict(position_ids=position_ids, allow_is_causal_skip=False)
        return {
            "full_attention": masking_utils.create_causal_mask(self.hf_config, hidden, None, None, **common),
            "sliding_attention": masking_utils.create_sliding_window_causal_mask(
                self.hf_config, hidden, None, None, **common),
        }


class TransformersLayer:
    def __init__(self, layer, index, owner):
        self.layer, self.index, self.owner = layer, index, owner

    def run(self, hidden, position_ids, cache=None):
        from gptoss_convert.candidates.builtin_hooks import recorded_components

        mask = self.owner.masks(hidden, position_ids)[self.owner.hf_config.layer_types[self.index]]
        position_embeddings = self.owner.rotary(hidden, position_ids)
        with recorded_components(self.layer, tuple(position_ids.shape)) as seen:
            out = self.layer(hidden, attention_mask=mask, position_ids=position_ids,
                             position_embeddings=position_embeddings)
        return {**seen, "layer_output": out[0] if isinstance(out, tuple) else out}


def eager():
    return TransformersCandidate("eager")


def sdpa():
    return TransformersCandidate("sdpa")


def flex_attention():
    return TransformersCandidate("flex_attention")
