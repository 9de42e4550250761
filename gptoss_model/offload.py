"""Layer offloading: run a gpt-oss whose weights do not fit on the GPU.

The decoder layers stay in pinned host memory; the GPU holds the embedding, final norm and LM head, plus two layer
"slots". While slot A computes layer i, a side CUDA stream copies layer i+1 into slot B, so transfers overlap
compute. A layer's host copy may keep its expert weights packed (e.g. MXFP4 blocks and scales, four times smaller
than bf16): `unpack` turns such a packed tuple into the dense tensor on the GPU, right after the copy.

    model = OffloadedModel(config, resident, host_layers, unpack=mxfp4_unpack)
    logits = model(input_ids=ids)          # same contract as GPTOssModelFull.forward
    tokens = model.generate(ids, 32)

The forward is model.py's own skeleton (`decoder_forward`); the per-layer hook is `_streamed_layers`, a generator
that yields each slot once its layer's weights have arrived. `gptoss_convert.load.load_offloaded(source)` builds one
from a checkpoint.
"""

import torch
from torch import nn

from gptoss_model import extensions
from gptoss_model.generate import generate
from gptoss_model.model import GptOssDecoderLayer, GPTOssModelFull, GptOssRMSNorm, GptOssRotaryEmbedding, KVCache
from gptoss_model.model import decoder_forward

RESIDENT = ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")


class OffloadedModel(nn.Module):
    def __init__(self, config, resident: dict, host_layers: list, device="cuda", dtype=torch.bfloat16, unpack=None):
        """resident: {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} tensors;
        host_layers[i]: {name inside the layer: pinned CPU tensor, or a tuple of them that `unpack` densifies}."""
        super().__init__()
        self.config, self.device, self.dtype, self.unpack = config, torch.device(device), dtype, unpack
        self.embed_tokens = nn.Embedding.from_pretrained(resident["model.embed_tokens.weight"].to(self.device, dtype))
        self.norm = GptOssRMSNorm(config.hidden_size, config.rms_norm_eps, device=self.device, dtype=dtype)
        self.norm.weight.data.copy_(resident["model.norm.weight"])
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False, device="meta")
        self.lm_head.weight = nn.Parameter(resident["lm_head.weight"].to(self.device, dtype), requires_grad=False)
        self.rotary_emb = GptOssRotaryEmbedding(config, device=self.device)
        self.host_layers = host_layers
        self.slots = [GptOssDecoderLayer(config, j, device=self.device, dtype=dtype) for j in range(2)]
        for slot in self.slots:  # a plain list, not submodules: the weights are filled per layer, never saved
            extensions.use_implementation(slot, config.implementation)
        self.copy_stream = torch.cuda.Stream(self.device)
        self.loaded = [torch.cuda.Event() for _ in self.slots]  # slot holds its layer's weights
        self.released = [torch.cuda.Event() for _ in self.slots]  # compute on the slot has finished

    def _load(self, layer_index: int, slot_index: int):
        slot, params = self.slots[slot_index], dict(self.slots[slot_index].named_parameters())
        slot.attention_type = self.config.layer_types[layer_index]
        with torch.cuda.stream(self.copy_stream):
            self.copy_stream.wait_event(self.released[slot_index])  # don't overwrite weights still in use
            for name, host in self.host_layers[layer_index].items():
                if isinstance(host, tuple):
                    dense = self.unpack(*(t.to(self.device, non_blocking=True) for t in host), dtype=self.dtype)
                    params[name].data.copy_(dense)
                else:
                    params[name].data.copy_(host, non_blocking=True)
            self.loaded[slot_index].record(self.copy_stream)

    def _streamed_layers(self):
        """The per-layer hook: yields layer i's slot once its weights are in, prefetching layer i+1 meanwhile."""
        count = len(self.host_layers)
        self._load(0, 0)
        for i in range(count):
            slot_index = i % 2
            torch.cuda.current_stream().wait_event(self.loaded[slot_index])
            if i + 1 < count:
                self._load(i + 1, (i + 1) % 2)  # prefetch the next layer while this one computes
            yield self.slots[slot_index]
            self.released[slot_index].record()  # the layer's work is queued: the slot may be refilled after it

    @torch.no_grad()
    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, cache=None):
        input_ids = input_ids.to(self.device)
        hidden = decoder_forward(self, input_ids, attention_mask, position_ids, cache, layers=self._streamed_layers())
        return self.lm_head(hidden)

    def new_cache(self) -> KVCache:
        return KVCache(self.config)

    def generate(self, input_ids, max_new_tokens: int, **options) -> torch.Tensor:
        return generate(self, input_ids, max_new_tokens, **options)


def host_layers_from_model(model: GPTOssModelFull) -> tuple[dict, list]:
    """Split an in-memory model into (resident tensors, pinned per-layer host tensors)."""
    state = model.state_dict()
    resident = {k: state[k] for k in RESIDENT}
    layers = []
    for i in range(model.config.num_hidden_layers):
        prefix = f"model.layers.{i}."
        layers.append({k[len(prefix):]: v.detach().cpu().pin_memory() for k, v in state.items() if k.startswith(prefix)})
    return resident, layers
