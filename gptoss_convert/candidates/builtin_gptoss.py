"""gptoss_model as a candidate: the readable path ("gptoss_model"), the fast one ("gptoss_model:fast") and the
readable path with its experts kept packed in MXFP4 ("gptoss_model:mxfp4", gptoss_model/mxfp4_experts.py: the
fused Triton kernels on CUDA, the selected-experts loop on the CPU).

Each layer is gptoss_model's own GptOssDecoderLayer, built on the meta device and given the tensors verify hands
over (shared, not copied). For "mxfp4" the experts verify hands over (dequantized) are packed again with
gptoss_convert.mxfp4.quantize, which gives back an MXFP4 checkpoint's own codes and scales' values exactly
(tests/test_mxfp4.py round-trips them), so the candidate computes from the bytes the checkpoint holds. Components are read with forward hooks (builtin_hooks.py). The KV cache is the model's
own KVCache, so the cached-decoding column runs the same code as `generate`.
"""

import torch
import torch.nn.functional as F

import gptoss_convert


class GptossModelCandidate:
    def __init__(self, implementation: str = "eager", experts: str = "dequantized"):
        import gptoss_model.model

        self.implementation, self.experts = implementation, experts
        variant = implementation if experts == "dequantized" else experts
        self.name = "gptoss_model" if variant == "eager" else f"gptoss_model:{variant}"
        self.version = gptoss_convert.__version__
        self.source = gptoss_model.model.__file__
        self.config = self.rotary = None

    def setup(self, context):
        from gptoss_model.model import GptOssRotaryEmbedding

        self.config = context.config.replace(implementation=self.implementation)
        self.rotary = GptOssRotaryEmbedding(self.config, device=context.device)

    def build_layer(self, index, config, tensors):
        from gptoss_model.model import GptOssDecoderLayer

        from gptoss_model.extensions import use_implementation

        with torch.device("meta"):
            layer = GptOssDecoderLayer(self.config, index)
        prefix = f"model.layers.{index}."
        state = {n.removeprefix(prefix): t for n, t in tensors.items()}
        if self.experts == "mxfp4":
            state = self._packed_experts(layer, state)
        layer.load_state_dict(state, strict=True, assign=True)
        use_implementation(layer, self.implementation)  # "fast" re-classes the layer's modules (gptoss_model/fast.py)
        return GptossLayer(layer.eval(), index, self)

    def _packed_experts(self, layer, state: dict) -> dict:
        """Swap the layer's experts for MXFP4Experts and its dense expert weights for their MXFP4 blocks/scales."""
        from gptoss_convert.mxfp4 import quantize
        from gptoss_model.mxfp4_experts import PROJECTIONS, use_packed_experts

        use_packed_experts(layer, self.config)
        for projection in PROJECTIONS:
            name = f"mlp.experts.{projection}"
            weight = state.pop(name)
            state[f"{name}_blocks"], state[f"{name}_scales"] = quantize(weight.float(), name=name)
        return state

    def embed(self, tensors, token_ids):
        return F.embedding(token_ids, tensors["model.embed_tokens.weight"])

    def final_norm(self, tensors, hidden):
        from gptoss_model.model import GptOssRMSNorm

        weight = tensors["model.norm.weight"]
        with torch.device("meta"):
            norm = GptOssRMSNorm(self.config.hidden_size, self.config.rms_norm_eps)
        norm.load_state_dict({"weight": weight}, assign=True)
        return norm(hidden)

    def head(self, tensors, hidden):
        return F.linear(hidden, tensors["lm_head.weight"])  # gptoss_model's lm_head is a bias-free nn.Linear

    # The steps a layer takes from the candidate, each one method so a test mutant can override just one.

    def masks(self, shape: tuple, cache, device) -> dict:
        """Keep-masks by attention type for unpadded prompts of `shape` [B, T] (after what `cache` holds)."""
        from gptoss_model.model import attention_masks

        return attention_masks(self.config, shape, None, cache, device)[0]

    def position_embeddings(self, position_ids, dtype):
        return self.rotary(position_ids, dtype)

    def new_cache(self):
        from gptoss_model.model import KVCache

        return KVCache(self.config)


class GptossLayer:
    def __init__(self, layer, index, owner):
        self.layer, self.index, self.owner = layer, index, owner

    def new_cache(self):
        return self.owner.new_cache()

    def run(self, hidden, position_ids, cache=None):
        from gptoss_convert.candidates.builtin_hooks import recorded_components

        masks = self.owner.masks(tuple(position_ids.shape), cache, hidden.device)
        position_embeddings = self.owner.position_embeddings(position_ids, hidden.dtype)
        layer_cache = cache.layers[self.index] if cache is not None else None
        with recorded_components(self.layer, tuple(position_ids.shape)) as seen:
            out = self.layer(hidden, position_embeddings, masks[self.layer.attention_type], layer_cache)
        if cache is not None:
            cache.advance(masks["new_valid"])
        return {**seen, "layer_output": out}


def readable():
    return GptossModelCandidate("eager")


def fast():
    return GptossModelCandidate("fast")


def packed():
    return GptossModelCandidate("eager", experts="mxfp4")
