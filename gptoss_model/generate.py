"""Decoding: sampling, `generate` (through the KV cache), and the static-cache / CUDA-graph greedy decoder.

    tokens = model.generate(ids, max_new_tokens=32)                    # any model with new_cache() and forward
    tokens = StaticDecoder(model, batch=1, max_len=4096).generate(ids, max_new_tokens=128)   # CUDA graphs

Speed stays here, at the edge: model.py is the eager math, and the static decoder runs the model's own forward
skeleton (`model.run_layers`) on preallocated buffers rather than a copy of it.
"""

import torch
import torch.nn.functional as F

from gptoss_model.model import keep_masks, run_layers

# ---------------------------------------------------------------------------------------------------------------
# Sampling and generate


def pick_token(logits, do_sample: bool, temperature: float, top_p: float, generator) -> torch.Tensor:
    """logits [B, V] (float32) -> token ids [B]: the argmax, or a draw from the temperature / top-p distribution."""
    if not do_sample:
        return logits.argmax(dim=-1)
    probs = F.softmax(logits / max(temperature, 1e-5), dim=-1)
    if top_p < 1.0:  # keep the smallest set of tokens whose probability reaches top_p
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model,
    input_ids,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    attention_mask=None,
    eos_token_id=None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Greedy or sampled decoding through the KV cache -> token ids [B, T + new] (new ≤ max_new_tokens: it stops
    early once every sequence has produced an eos token; finished sequences are padded with eos). `model`: a
    GPTOssModelFull or an offload.OffloadedModel (anything with new_cache() and the forward contract)."""
    cache = model.new_cache()
    eos = torch.tensor(_as_list(eos_token_id), device=input_ids.device)
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    tokens, step_input, step_mask = input_ids, input_ids, attention_mask
    for _ in range(max_new_tokens):
        logits = model(step_input, attention_mask=step_mask, cache=cache)[:, -1].float()  # [B, V]
        next_token = pick_token(logits, do_sample, temperature, top_p, generator)  # [B]
        if len(eos):
            next_token = torch.where(finished, eos[0], next_token)
            finished |= torch.isin(next_token, eos)
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        step_input, step_mask = next_token[:, None], None
        if len(eos) and bool(finished.all()):
            break
    return tokens


def _as_list(token_ids) -> list[int]:
    if token_ids is None:
        return []
    return [token_ids] if isinstance(token_ids, int) else list(token_ids)


# ---------------------------------------------------------------------------------------------------------------
# Static KV cache + one CUDA graph per greedy step
#
# Decoding one token at a time is bound by kernel launches, not arithmetic. Here every step has the same shapes
# (keys live in preallocated [B, nkv, max_len, d] buffers, a mask hides the unused slots), so the whole step
# (embedding, every layer, head, argmax, cache writes) is captured once as a CUDA graph and replayed. Prefill runs
# the ordinary model; its KV cache is then copied into the static buffers. Same tokens as generate(...) (greedy),
# tested in tests/test_decode.py and tests/test_gpu.py. Sliding layers use the same full-length buffers with the
# window applied by the mask: memory is bounded by max_len, fixed up front.


class StaticLayerCache:
    """The LayerCache contract over a static buffer: writes the new key/value at `slot`, returns the full buffers."""

    def __init__(self, keys, values, slot):
        self.keys, self.values, self.slot = keys, values, slot

    def update(self, k, v):
        return self.write(self.keys, self.values, self.slot, k, v)

    def buffers(self):
        return self.keys, self.values, self.slot

    @staticmethod
    def write(keys, values, slot, k, v):
        """k, v [B, nkv, 1, d] into keys, values [B, nkv, max_len, d] at position slot ([1] long) -> the buffers. An
        indexed assignment, which a compiled piece turns into stores inside the kernel making k and v
        (fast._one_token_layer)."""
        keys[:, :, slot] = k
        values[:, :, slot] = v
        return keys, values


class StaticDecoder:
    def __init__(self, model, batch: int, max_len: int):
        config, weight = model.config, next(model.parameters())
        if weight.is_cuda and weight.dtype != torch.bfloat16:
            raise ValueError("StaticDecoder on CUDA needs a bfloat16 model (the grouped expert kernel it captures)")
        if config.implementation != "fast":
            raise ValueError("StaticDecoder needs model.set_implementation('fast'): the eager experts synchronise with "
                             "the host every layer, which a CUDA graph cannot capture")
        self.model, self.config, self.batch, self.max_len = model, config, batch, max_len
        device, shape = weight.device, (batch, config.num_key_value_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=weight.dtype) for _ in config.layer_types]
        self.values = [torch.zeros(shape, device=device, dtype=weight.dtype) for _ in config.layer_types]
        self.key_valid = torch.zeros(batch, max_len, dtype=torch.bool, device=device)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)  # where this step's key goes
        self.position = torch.zeros(batch, dtype=torch.long, device=device)  # this step's rotary position
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)  # input; the step overwrites it
        self.layer_caches = [StaticLayerCache(k, v, self.slot) for k, v in zip(self.keys, self.values)]
        self.key_slots = torch.arange(max_len, device=device)[None, :]  # [1, S]
        self.graph = None
        self.use_graph = weight.is_cuda
        self.steps_left = 0  # decode steps that still fit after start

    def _step(self):
        """One greedy step on the static buffers; writes the next token into self.token. Graph-capturable."""
        decoder = self.model.model
        self.key_valid.index_fill_(1, self.slot, True)
        keep = keep_masks(self.slot[:, None], self.key_slots, self.key_valid, self.config.sliding_window)
        hidden = run_layers(decoder, self.token, keep, self.position[:, None], decoder.layers, self.layer_caches)
        logits = self.model.lm_head(hidden)[:, -1]  # [B, V]
        self.token.copy_(logits.argmax(-1, keepdim=True))
        self.slot.add_(1)
        self.position.add_(1)

    def _capture(self):
        state = (self.slot, self.position, self.token, self.key_valid)
        saved = [t.clone() for t in state]

        def undo_warm_up():
            for tensor, before in zip(state, saved):
                tensor.copy_(before)

        self.graph, _ = captured(self._step, after_warm_up=undo_warm_up)

    def _prefill(self, input_ids) -> torch.Tensor:
        """Run the prompt through the ordinary model and copy its KV cache into the static buffers -> logits [B, V]."""
        length = input_ids.shape[1]
        cache = self.model.new_cache()
        hidden = self.model.model(input_ids, cache=cache)  # [B, T, H]
        logits = self.model.lm_head(hidden[:, -1])  # only the last position: a 4k prompt's logits would be 1.6 GB
        for i, layer_cache in enumerate(cache.layers):  # the cache keeps only what each layer can still see
            kept = layer_cache.keys.shape[2]
            self.keys[i][:, :, length - kept : length] = layer_cache.keys
            self.values[i][:, :, length - kept : length] = layer_cache.values
        self.key_valid.zero_()
        self.key_valid[:, :length] = True
        self.slot.fill_(length)
        self.position.fill_(length)
        return logits

    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens: int) -> torch.Tensor:
        """Greedy decoding of an unpadded batch [B, T] -> [B, T + max_new_tokens]."""
        first = self.start(input_ids, max_new_tokens)
        return torch.cat([input_ids, first, *self.decode(max_new_tokens - 1)], dim=1)

    @torch.no_grad()
    def start(self, input_ids, max_new_tokens: int) -> torch.Tensor:
        """The prompt [B, T] through the model (and the step captured, the first time) -> the first new token [B, 1];
        `decode` then gives the next ones, up to max_new_tokens in all."""
        batch, length = input_ids.shape
        if batch != self.batch or length + max_new_tokens > self.max_len:
            raise ValueError(f"batch {batch} / length {length + max_new_tokens} do not fit this decoder "
                             f"(batch {self.batch}, max_len {self.max_len})")
        self.token.copy_(self._prefill(input_ids).argmax(-1, keepdim=True))
        if self.graph is None and self.use_graph:
            self._capture()
        self.steps_left = max_new_tokens - 1  # the slots that remain in the buffers
        return self.token.clone()

    @torch.no_grad()
    def decode(self, steps: int) -> list[torch.Tensor]:
        """`steps` more greedy tokens after `start` (or an earlier decode), each [B, 1]; no host synchronisation."""
        if steps > self.steps_left:
            raise ValueError(f"decode({steps}): only {self.steps_left} steps left of the max_new_tokens given to start")
        self.steps_left -= steps
        new = []
        for _ in range(steps):
            self.graph.replay() if self.use_graph else self._step()  # without CUDA: the same step, uncaptured
            new.append(self.token.clone())
        return new


def captured(fn, after_warm_up=lambda: None):
    """fn() run twice on a side stream first (compilation, the allocator, lazy state: what a capture must not see
    for the first time), after_warm_up() (e.g. undo the warm-up's effects), then fn() captured -> (the CUDA graph,
    fn's output: the graph's own buffers, rewritten by each replay)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    after_warm_up()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


class GraphedForward:
    """model(input_ids=...) -> logits replayed from a CUDA graph captured once per input shape: a prefill's ~770
    kernel launches cost the host more than the GPU needs for the smaller ones (docs/benchmarks.md, fifth session).
    The ids are copied into the graph's own input, and the logits returned are the graph's own buffer, valid until
    the next call with that shape. Each shape keeps its graph's memory (activations, logits) while this object
    lives. CUDA and a fast-path model only (the eager experts synchronise with the host)."""

    def __init__(self, model):
        if model.config.implementation != "fast":
            raise ValueError("GraphedForward needs model.set_implementation('fast'): the eager experts synchronise "
                             "with the host every layer, which a CUDA graph cannot capture")
        self.model, self.graphs = model, {}

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor) -> torch.Tensor:
        shape = tuple(input_ids.shape)
        if shape not in self.graphs:
            static_ids = input_ids.clone()
            graph, logits = captured(lambda: self.model(input_ids=static_ids))
            self.graphs[shape] = (graph, static_ids, logits)
        graph, static_ids, logits = self.graphs[shape]
        static_ids.copy_(input_ids)
        graph.replay()
        return logits
