"""Layer offloading: run a gpt-oss whose weights do not fit on the GPU.

The decoder layers stay in pinned host memory; the GPU holds the embedding, final norm and LM head, plus two layer
"slots". While slot A computes layer i, a side CUDA stream copies layer i+1 into slot B, so transfers overlap
compute. A layer's host copy may keep its expert weights packed (e.g. MXFP4 blocks and scales, four times smaller
than bf16): `unpack` turns such a packed tuple into the dense tensor on the GPU, right after the copy.

    model = OffloadedModel(config, resident, host_layers, unpack=mxfp4_unpack)
    logits = model(input_ids=ids)          # same contract as GPTOssModelFull.forward
    tokens = model.generate(ids, 32)

`gptoss_convert.offload.load_offloaded(source)` builds one from a checkpoint.
"""

import torch
import torch.nn.functional as F
from torch import nn

from gptoss_model.model import GptOssDecoderLayer, GPTOssModelFull, GptOssRMSNorm, GptOssRotaryEmbedding, KVCache
from gptoss_model.model import attention_masks


class OffloadedModel(nn.Module):
    def __init__(self, config, resident: dict, host_layers: list, device="cuda", dtype=torch.bfloat16, unpack=None,
                 packed_experts: bool = False):
        """resident: {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} tensors;
        host_layers[i]: {name inside the layer: pinned CPU tensor, or a tuple of them that `unpack` densifies}.
        packed_experts: the slots hold MXFP4Experts (gptoss_model/mxfp4_experts.py) and a (blocks, scales) tuple is
        copied as it is into their `*_blocks` / `*_scales` buffers instead of being unpacked."""
        super().__init__()
        self.config, self.device, self.dtype, self.unpack = config, torch.device(device), dtype, unpack
        self.embed = resident["model.embed_tokens.weight"].to(self.device, dtype)
        self.norm = GptOssRMSNorm(config.hidden_size, config.rms_norm_eps, device=self.device, dtype=dtype)
        self.norm.weight.data.copy_(resident["model.norm.weight"])
        self.lm_head = resident["lm_head.weight"].to(self.device, dtype)
        self.rotary = GptOssRotaryEmbedding(config, device=self.device)
        self.host_layers = host_layers
        self.slots = [GptOssDecoderLayer(config, j, device=self.device, dtype=dtype) for j in range(2)]
        self.packed_experts = packed_experts
        if packed_experts:
            from gptoss_model.mxfp4_experts import use_packed_experts

            for slot in self.slots:
                use_packed_experts(slot, config)
        self.copy_stream = torch.cuda.Stream(self.device)
        self.loaded = [torch.cuda.Event() for _ in self.slots]  # slot holds its layer's weights
        self.released = [torch.cuda.Event() for _ in self.slots]  # compute on the slot has finished

    def _load(self, layer_index: int, slot_index: int):
        slot = self.slots[slot_index]
        params = {**dict(slot.named_parameters()), **dict(slot.named_buffers())}
        slot.attention_type = self.config.layer_types[layer_index]
        with torch.cuda.stream(self.copy_stream):
            self.copy_stream.wait_event(self.released[slot_index])  # don't overwrite weights still in use
            for name, host in self.host_layers[layer_index].items():
                if isinstance(host, tuple) and self.packed_experts:  # MXFP4 bytes, copied as they are
                    for part, tensor in zip(("blocks", "scales"), host):
                        params[f"{name}_{part}"].copy_(tensor, non_blocking=True)
                elif isinstance(host, tuple):
                    dense = self.unpack(*(t.to(self.device, non_blocking=True) for t in host), dtype=self.dtype)
                    params[name].data.copy_(dense)
                else:
                    params[name].data.copy_(host, non_blocking=True)
            self.loaded[slot_index].record(self.copy_stream)

    @torch.no_grad()
    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, cache=None):
        input_ids = input_ids.to(self.device)
        x = F.embedding(input_ids, self.embed)  # [B, T, H]
        masks, positions = attention_masks(self.config, input_ids.shape, attention_mask, cache, self.device)
        position_embeddings = self.rotary(positions if position_ids is None else position_ids.to(self.device), x.dtype)
        count = len(self.host_layers)
        self._load(0, 0)
        for i in range(count):
            slot_index = i % 2
            torch.cuda.current_stream().wait_event(self.loaded[slot_index])
            if i + 1 < count:
                self._load(i + 1, (i + 1) % 2)  # prefetch the next layer while this one computes
            layer = self.slots[slot_index]
            layer_cache = cache.layers[i] if cache is not None else None
            x = layer(x, position_embeddings, masks[layer.attention_type], layer_cache)
            self.released[slot_index].record()
        if cache is not None:
            cache.advance(masks["new_valid"])
        return F.linear(self.norm(x), self.lm_head)

    def new_cache(self) -> KVCache:
        return KVCache(self.config)

    generate = GPTOssModelFull.generate


def host_layers_from_model(model: GPTOssModelFull) -> tuple[dict, list]:
    """Split an in-memory model into (resident tensors, pinned per-layer host tensors)."""
    state = model.state_dict()
    resident = {k: state[k] for k in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight")}
    layers = []
    for i in range(model.config.num_hidden_layers):
        prefix = f"model.layers.{i}."
        layers.append({k[len(prefix):]: v.detach().cpu().pin_memory() for k, v in state.items() if k.startswith(prefix)})
    return resident, layers
