"""Fast greedy decoding on CUDA: a static KV cache and one CUDA graph per decoding step.

Decoding one token at a time is bound by kernel launches, not arithmetic: a 20b step is ~1000 small kernels. Here
every step has the same shapes (keys live in preallocated [B, nkv, max_len, d] buffers, a mask hides the unused
slots), so the whole step (embedding, 24 layers, head, argmax, cache writes) is captured once as a CUDA graph and
replayed. Prefill runs the ordinary model; its KV cache is then copied into the static buffers.

    tokens = StaticDecoder(model, batch=1, max_len=4096).generate(input_ids, max_new_tokens=128)

Same tokens as model.generate(...) (greedy), tested in tests/test_gpu.py. Sliding layers use the same full-length
buffers with the window applied by the mask: memory is bounded by max_len, fixed up front.
"""

import torch

from gptoss_model.config import SLIDING


class _StaticLayerCache:
    """Drop-in for model.LayerCache inside the graph: writes the new key/value at `slot`, returns the full buffers."""

    def __init__(self, keys, values, slot):
        self.keys, self.values, self.slot = keys, values, slot

    def update(self, k, v):
        self.keys.index_copy_(2, self.slot, k)
        self.values.index_copy_(2, self.slot, v)
        return self.keys, self.values


class StaticDecoder:
    def __init__(self, model, batch: int, max_len: int):
        c = model.config
        p = next(model.parameters())
        self.model, self.config, self.batch, self.max_len = model, c, batch, max_len
        shape = (batch, c.num_key_value_heads, max_len, c.head_dim)
        self.keys = [torch.zeros(shape, device=p.device, dtype=p.dtype) for _ in c.layer_types]
        self.values = [torch.zeros(shape, device=p.device, dtype=p.dtype) for _ in c.layer_types]
        self.key_valid = torch.zeros(batch, max_len, dtype=torch.bool, device=p.device)
        self.slot = torch.zeros(1, dtype=torch.long, device=p.device)  # where this step's key goes
        self.position = torch.zeros(batch, dtype=torch.long, device=p.device)  # this step's rotary position
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=p.device)  # input; the step overwrites it
        self.graph = None
        self.use_graph = p.is_cuda
        if p.is_cuda and p.dtype != torch.bfloat16:
            raise ValueError("StaticDecoder on CUDA needs a bfloat16 model (the grouped expert kernel it captures)")
        if c.implementation != "fast":
            raise ValueError("StaticDecoder needs model.set_implementation('fast'): the eager experts synchronise with "
                             "the host every layer, which a CUDA graph cannot capture")

    def _step(self):
        """One greedy step on the static buffers; writes the next token into self.token. Graph-capturable."""
        m, c = self.model.model, self.config
        x = m.embed_tokens(self.token)  # [B, 1, H]
        position_embeddings = m.rotary_emb(self.position[:, None], x.dtype)
        self.key_valid.index_fill_(1, self.slot, True)
        k_slot = torch.arange(self.max_len, device=x.device)
        full = (k_slot <= self.slot) & self.key_valid  # [B, S]
        keep = {"full_attention": full[:, None, None, :]}
        keep[SLIDING] = (full & (self.slot - k_slot < c.sliding_window))[:, None, None, :]
        for i, layer in enumerate(m.layers):
            cache = _StaticLayerCache(self.keys[i], self.values[i], self.slot)
            x = layer(x, position_embeddings, keep[layer.attention_type], cache)
        logits = self.model.lm_head(m.norm(x))[:, -1]  # [B, V]
        self.token.copy_(logits.argmax(-1, keepdim=True))
        self.slot.add_(1)
        self.position.add_(1)

    def _capture(self):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        saved = [t.clone() for t in (self.slot, self.position, self.token, self.key_valid)]
        with torch.cuda.stream(stream):  # warm-up outside the graph (allocator, lazy inits), then undo its effects
            for _ in range(2):
                self._step()
        torch.cuda.current_stream().wait_stream(stream)
        for t, s in zip((self.slot, self.position, self.token, self.key_valid), saved):
            t.copy_(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step()

    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding of an unpadded batch [B, T] -> [B, T + max_new_tokens]."""
        B, T = input_ids.shape
        if B != self.batch or T + max_new_tokens > self.max_len:
            raise ValueError(f"batch {B} / length {T + max_new_tokens} do not fit this decoder "
                             f"(batch {self.batch}, max_len {self.max_len})")
        cache = self.model.new_cache()
        hidden = self.model.model(input_ids, cache=cache)  # [B, T, H]
        logits = self.model.lm_head(hidden[:, -1])  # only the last position: a 4k prompt's logits would be 1.6 GB
        for i, layer_cache in enumerate(cache.layers):  # the cache keeps only what each layer can still see
            kept = layer_cache.keys.shape[2]
            self.keys[i][:, :, T - kept : T] = layer_cache.keys
            self.values[i][:, :, T - kept : T] = layer_cache.values
        self.key_valid.zero_()
        self.key_valid[:, :T] = True
        self.slot.fill_(T)
        self.position.fill_(T)
        self.token.copy_(logits.argmax(-1, keepdim=True))
        if self.graph is None and self.use_graph:
            self._capture()
        new = [self.token.clone()]
        for _ in range(max_new_tokens - 1):
            self.graph.replay() if self.use_graph else self._step()  # without CUDA: the same step, uncaptured
            new.append(self.token.clone())
        return torch.cat([input_ids, *new], dim=1)
