"""gpt-oss in plain PyTorch, read top to bottom in forward order: the eager path, and the only math in the package.

RMSNorm -> YaRN rotary embedding -> attention with sinks -> top-k router -> clamped-SwiGLU experts -> decoder layer
-> masks, KV cache and the one forward skeleton -> model -> language-model head. Nothing here knows about speed:
fast.py re-seats attention, experts and decoder layers from outside, generate.py decodes, offload.py streams layers
through the same skeleton (`decoder_forward` / `run_layers`); model.py imports none of them (docs/design.md).

Shape legend: B batch, T new tokens, S key tokens (cached + new), N = B·T flattened tokens, H hidden size,
nq / nkv query / key-value heads, d head dim, E experts, K experts per token, I expert width, V vocabulary.
`# gpt-oss:` marks where this model departs from a plain Llama/Mixtral; `# parity:` marks an operation order kept
to match Transformers exactly (models/gpt_oss/modeling_gpt_oss.py). docs/model.md states each step as a formula and
lists the parity pitfalls ("Pitfalls that break parity") these comments point at.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from gptoss_model import extensions
from gptoss_model.config import FULL, SLIDING, GPTOssConfig
from gptoss_model.io import MAX_SHARD_BYTES, load_model_dir, save_model

# ---------------------------------------------------------------------------------------------------------------
# RMSNorm (docs/model.md, RMSNorm)


class GptOssRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # parity: normalise in float32, multiply by the weight in float32, cast back at the end
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * x32).to(x.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Rotary embedding with YaRN (docs/model.md, YaRN rotary)


def yarn_inv_freq(config: GPTOssConfig) -> torch.Tensor:
    """Per-pair inverse frequencies [d/2]: original frequencies for fast pairs, divided by the YaRN factor for slow
    ones, a linear blend in between. float32, computed in the same order as Transformers."""
    d, base, factor = config.head_dim, config.rope_theta, config.rope_scaling_factor
    pos_freqs = base ** (torch.arange(0, d, 2, dtype=torch.float32) / d)  # [d/2]
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)

    def correction_dim(rotations: float) -> float:  # the pair index whose wavelength fits `rotations` times
        return d * math.log(config.rope_original_max_position_embeddings / (rotations * 2 * math.pi)) / (
            2 * math.log(base)
        )

    low, high = correction_dim(config.rope_beta_fast), correction_dim(config.rope_beta_slow)
    if config.rope_truncate:  # gpt-oss: truncate is False, so low/high stay fractional (docs/model.md pitfalls: `truncate`)
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(d // 2, dtype=torch.float32) - low) / (high - low), 0, 1)  # [d/2]
    keep_original = 1 - ramp
    return interpolation * (1 - keep_original) + extrapolation * keep_original


class GptOssRotaryEmbedding(nn.Module):
    def __init__(self, config: GPTOssConfig, device=None):
        super().__init__()
        self.register_buffer("inv_freq", yarn_inv_freq(config).to(device), persistent=False)
        self.attention_factor = config.rope_attention_factor

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids [B, T] -> cos, sin [B, T, d/2] in `dtype`."""
        angles = position_ids[..., None].float() * self.inv_freq.float()  # [B, T, d/2]
        # gpt-oss: both cos and sin carry YaRN's attention factor, so every q·k gets m² (docs/model.md)
        cos = angles.cos() * self.attention_factor
        sin = angles.sin() * self.attention_factor
        return cos.to(dtype), sin.to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, T, d], cos/sin [B, T, d/2]: rotate the two halves of each head (the "NeoX" split)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [B, 1, T, d/2]
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


# ---------------------------------------------------------------------------------------------------------------
# Attention with learned sinks, grouped-query, sliding window on even layers (docs/model.md, Attention)


def attention_with_sinks(q, k, v, sinks, keep, scaling: float) -> torch.Tensor:
    """q [B, nq, T, d], k/v [B, nkv, S, d], sinks [nq], keep [B, 1, T, S] bool -> [B, T, nq, d].

    gpt-oss: each head has a learned "sink" logit that joins the softmax but has no value vector, so a head can
    put weight on nothing (the probabilities over real keys sum to less than one).
    """
    B, nq, T, _ = q.shape
    group = nq // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # [B, nq, S, d]  query head h reads kv head h // group
    v = v.repeat_interleave(group, dim=1)  # [B, nq, S, d]
    scores = torch.matmul(q, k.transpose(2, 3)) * scaling  # [B, nq, T, S]
    scores = scores.masked_fill(~keep, float("-inf"))
    sink_column = sinks.reshape(1, nq, 1, 1).expand(B, nq, T, 1).to(scores.dtype)  # [B, nq, T, 1]
    logits = torch.cat([scores, sink_column], dim=-1)  # [B, nq, T, S + 1]
    logits = logits - logits.max(dim=-1, keepdim=True).values  # parity: Transformers subtracts the row max
    probs = F.softmax(logits, dim=-1, dtype=logits.dtype)[..., :-1]  # [B, nq, T, S]  drop the sink
    return torch.matmul(probs.to(v.dtype), v).transpose(1, 2)  # [B, T, nq, d]


class GptOssAttention(nn.Module):
    def __init__(self, config: GPTOssConfig, layer_idx: int, device=None, dtype=None):
        super().__init__()
        H, nq, nkv, d = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim
        bias = config.attention_bias
        self.layer_idx, self.head_dim, self.scaling = layer_idx, d, d**-0.5
        # gpt-oss: only the layers layer_types marks "sliding_attention" (the even ones) use the window
        self.sliding_window = config.sliding_window if config.layer_types[layer_idx] == SLIDING else None
        self.q_proj = nn.Linear(H, nq * d, bias=bias, device=device, dtype=dtype)
        self.k_proj = nn.Linear(H, nkv * d, bias=bias, device=device, dtype=dtype)
        self.v_proj = nn.Linear(H, nkv * d, bias=bias, device=device, dtype=dtype)
        self.o_proj = nn.Linear(nq * d, H, bias=bias, device=device, dtype=dtype)
        self.sinks = nn.Parameter(torch.zeros(nq, device=device, dtype=dtype))  # gpt-oss: one sink per query head

    def project(self, x, position_embeddings):
        """x [B, T, H] -> q [B, nq, T, d], k and v [B, nkv, T, d], q and k rotated."""
        return self.rotated_heads(self.q_proj(x), self.k_proj(x), self.v_proj(x), position_embeddings)

    def rotated_heads(self, q, k, v, position_embeddings):
        """The projections' outputs [B, T, heads·d] -> [B, heads, T, d] each, q and k rotated."""
        B, T, _ = q.shape
        q, k, v = (y.view(B, T, -1, self.head_dim).transpose(1, 2) for y in (q, k, v))
        cos, sin = position_embeddings
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def forward(self, x, position_embeddings, keep, layer_cache=None) -> torch.Tensor:
        """x [B, T, H], keep [B, 1, T, S] bool (S counts cached keys too) -> [B, T, H]."""
        B, T, _ = x.shape
        q, k, v = self.project(x, position_embeddings)
        if layer_cache is not None:
            k, v = layer_cache.update(k, v)  # [B, nkv, S, d]
        out = self.attend(q, k, v, self.sinks, keep, self.scaling)  # [B, T, nq, d]
        return self.o_proj(out.reshape(B, T, -1))

    def attend(self, q, k, v, sinks, keep, scaling: float) -> torch.Tensor:
        """The attention step on its own, so that the fast path (fast.py) can swap just this kernel."""
        return attention_with_sinks(q, k, v, sinks, keep, scaling)


# ---------------------------------------------------------------------------------------------------------------
# Mixture of experts: top-k router and clamped-SwiGLU experts (docs/model.md, Router and Experts)


def route(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """router_logits [N, E] -> (weights [N, K], expert indices [N, K])."""
    # gpt-oss: top-k of the raw logits first, then a softmax over just those k (docs/model.md pitfalls)
    top_logits, top_indices = torch.topk(router_logits, k, dim=-1)  # [N, K]
    return F.softmax(top_logits, dim=-1, dtype=top_logits.dtype), top_indices


class GptOssTopKRouter(nn.Module):
    def __init__(self, config: GPTOssConfig, device=None, dtype=None):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.weight = nn.Parameter(torch.zeros(config.num_local_experts, config.hidden_size, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(config.num_local_experts, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor):
        """x [N, H] -> (router logits [N, E], weights [N, K], indices [N, K])."""
        logits = F.linear(x, self.weight, self.bias)  # [N, E]
        weights, indices = route(logits, self.top_k)
        return logits, weights, indices


def clamped_swiglu(gate_up: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """gate_up [n, 2I] -> [n, I]."""
    gate, up = gate_up[..., 0::2], gate_up[..., 1::2]  # gpt-oss: gate and up are interleaved rows, not halves
    gate = gate.clamp(max=limit)  # gpt-oss: the gate is clamped from above only
    up = up.clamp(min=-limit, max=limit)
    glu = gate * torch.sigmoid(gate * alpha)  # alpha inside the sigmoid only
    return (up + 1) * glu  # gpt-oss: the +1 on up is part of the model


class GptOssExperts(nn.Module):
    """E independent two-layer MLPs. Weights keep the checkpoint's [E, out, in] orientation."""

    def __init__(self, config: GPTOssConfig, device=None, dtype=None):
        super().__init__()
        experts, hidden, width = config.num_local_experts, config.hidden_size, config.intermediate_size
        self.alpha, self.limit = config.swiglu_alpha, config.swiglu_limit
        self.gate_up_proj = nn.Parameter(torch.zeros(experts, 2 * width, hidden, device=device, dtype=dtype))
        self.gate_up_proj_bias = nn.Parameter(torch.zeros(experts, 2 * width, device=device, dtype=dtype))
        self.down_proj = nn.Parameter(torch.zeros(experts, hidden, width, device=device, dtype=dtype))
        self.down_proj_bias = nn.Parameter(torch.zeros(experts, hidden, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """x [N, H], weights/indices [N, K] -> [N, H]: Σ_k weight_k · expert_{index_k}(x)."""
        out = torch.zeros_like(x)
        for e in indices.unique().tolist():  # ascending expert id, the order Transformers adds them in
            token, slot = torch.where(indices == e)  # tokens that picked expert e, and in which of their K slots
            # parity: matmul then bias (two roundings in bf16), as Transformers does, rather than a fused F.linear
            h = x[token] @ self.gate_up_proj[e].T + self.gate_up_proj_bias[e]  # [n, 2I]
            y = clamped_swiglu(h, self.alpha, self.limit) @ self.down_proj[e].T + self.down_proj_bias[e]  # [n, H]
            out.index_add_(0, token, (y * weights[token, slot, None]).to(x.dtype))  # [n, H]
        return out


class GptOssMLP(nn.Module):
    def __init__(self, config: GPTOssConfig, device=None, dtype=None):
        super().__init__()
        self.router = GptOssTopKRouter(config, device=device, dtype=dtype)
        self.experts = GptOssExperts(config, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape
        flat = x.reshape(-1, H)  # [N, H]
        _, weights, indices = self.router(flat)
        return self.experts(flat, weights, indices).reshape(B, T, H)


# ---------------------------------------------------------------------------------------------------------------
# Decoder layer


class GptOssDecoderLayer(nn.Module):
    def __init__(self, config: GPTOssConfig, layer_idx: int, device=None, dtype=None):
        super().__init__()
        self.attention_type = config.layer_types[layer_idx]
        self.input_layernorm = GptOssRMSNorm(config.hidden_size, config.rms_norm_eps, device=device, dtype=dtype)
        self.self_attn = GptOssAttention(config, layer_idx, device=device, dtype=dtype)
        self.post_attention_layernorm = GptOssRMSNorm(config.hidden_size, config.rms_norm_eps, device, dtype)
        self.mlp = GptOssMLP(config, device=device, dtype=dtype)

    def forward(self, x, position_embeddings, keep, layer_cache=None) -> torch.Tensor:
        """x [B, T, H] -> [B, T, H]: attention then the mixture of experts, each added to the residual stream."""
        x = x + self.self_attn(self.input_layernorm(x), position_embeddings, keep, layer_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


# ---------------------------------------------------------------------------------------------------------------
# Masks and the KV cache


def keep_masks(q_slot, k_slot, key_valid, window: int, extra_keep=None) -> dict:
    """Who may attend to whom, the one place causality, padding and the window are decided.

    q_slot [T, 1] / k_slot [1, S]: sequence slots of the queries and keys; key_valid [B, S]: the key is a real token,
    not padding; extra_keep [B, 1, T, S] or None: a caller's own mask -> {"full_attention", "sliding_attention"}:
    bool [B, 1, T, S], True = may attend."""
    full = (k_slot <= q_slot)[None, None] & key_valid[:, None, None, :]  # [B, 1, T, S]
    if extra_keep is not None:
        full = full & extra_keep
    # gpt-oss: a sliding layer sees `window` keys, the query's own token included (docs/model.md, Attention)
    sliding = full & (q_slot - k_slot < window)[None, None]  # [B, 1, T, S]
    return {FULL: full, SLIDING: sliding}


def attention_masks(config: GPTOssConfig, input_shape, attention_mask, cache, device):
    """The keep-masks [B, 1, T, S] for the full and the sliding layers, and default position ids [B, T].

    attention_mask may be None, a [B, T] (or [B, cached + T]) padding mask (1 keep, 0 pad), or a [B, 1, T, T] keep
    mask (nonzero = may attend), which is combined with causality and the window. Position ids default to the
    count of real tokens before each one, so left padding does not shift positions.
    """
    B, T = input_shape
    past = cache.seen if cache is not None else 0
    new_valid, extra_keep = _new_tokens_valid(attention_mask, B, T, past, device)  # [B, T]
    started = cache is not None and cache.key_valid is not None
    past_valid = cache.key_valid if started else new_valid[:, :0]  # [B, past]
    key_valid = torch.cat([past_valid, new_valid], dim=1)  # [B, past + T]
    q_slot = torch.arange(past, past + T, device=device)[:, None]  # [T, 1]
    k_slot = torch.arange(past + T, device=device)[None, :]  # [1, S]
    masks = keep_masks(q_slot, k_slot, key_valid, config.sliding_window, extra_keep)
    if cache is not None:  # sliding layers keep only the last window - 1 keys in their cache
        masks[SLIDING] = masks[SLIDING][..., past - cache.sliding_kept() :]
    offset = cache.next_position if started else torch.zeros(B, dtype=torch.long, device=device)
    positions = offset[:, None].to(device) + new_valid.long().cumsum(-1) - 1  # [B, T]
    masks["new_valid"] = new_valid
    return masks, positions.clamp(min=0)


def _new_tokens_valid(attention_mask, B: int, T: int, past: int, device):
    """attention_mask (see attention_masks) -> (new tokens that are real [B, T] bool, a 4-D keep mask or None)."""
    if attention_mask is None:
        return torch.ones(B, T, dtype=torch.bool, device=device), None
    if attention_mask.dim() == 2:
        if attention_mask.shape[1] not in (T, past + T):
            raise ValueError(f"attention_mask has {attention_mask.shape[1]} columns; expected {T} or {past + T}")
        return attention_mask[:, -T:].to(device=device, dtype=torch.bool), None
    if attention_mask.dim() == 4:
        if past:
            raise ValueError("a 4-D attention_mask cannot be combined with a KV cache")
        return torch.ones(B, T, dtype=torch.bool, device=device), attention_mask.to(device) != 0  # [B, 1, T, T]
    raise ValueError(f"attention_mask must be 2-D [B, T] or 4-D [B, 1, T, T], got {tuple(attention_mask.shape)}")


class LayerCache:
    """Keys and values of one layer. A sliding layer keeps only the last `window - 1` tokens: that is all the next
    query can see, so its memory stays bounded however long the generation runs."""

    def __init__(self, window: int | None):
        self.window = window
        self.keys = self.values = None

    def update(self, k: torch.Tensor, v: torch.Tensor):
        """k/v [B, nkv, T, d] -> all visible keys/values [B, nkv, S, d]."""
        if self.keys is not None:
            k, v = torch.cat([self.keys, k], dim=2), torch.cat([self.values, v], dim=2)
        start = 0 if self.window is None else max(k.shape[2] - (self.window - 1), 0)
        self.keys, self.values = k[:, :, start:], v[:, :, start:]
        return k, v


class KVCache:
    """Per-layer keys/values plus what the masks need: which cached slots are real tokens, and the next position."""

    def __init__(self, config: GPTOssConfig):
        self.window = config.sliding_window
        self.layers = [LayerCache(self.window if t == SLIDING else None) for t in config.layer_types]
        self.seen = 0
        self.key_valid = None  # [B, seen] bool
        self.next_position = None  # [B]

    def sliding_kept(self) -> int:
        return min(self.seen, self.window - 1)

    def advance(self, new_valid: torch.Tensor):
        if self.key_valid is None:
            self.key_valid = new_valid[:, :0]
            self.next_position = torch.zeros(new_valid.shape[0], dtype=torch.long, device=new_valid.device)
        self.key_valid = torch.cat([self.key_valid, new_valid], dim=1)
        self.next_position = self.next_position + new_valid.long().sum(-1)
        self.seen += new_valid.shape[1]


# ---------------------------------------------------------------------------------------------------------------
# The forward skeleton: embedding, masks, rotary, the layer loop, final norm (the head is the caller's last line)


def run_layers(parts, input_ids, keep, position_ids, layers, layer_caches=None, hidden_states=None) -> torch.Tensor:
    """input_ids [B, T] -> final-normed hidden states [B, T, H]: embed, rotary, every layer, norm.

    parts: holds embed_tokens, rotary_emb and norm (a GptOssModel, offload.OffloadedModel). keep: the masks of
    `keep_masks`. layers: the per-layer hook, any iterable of decoder layers: a GptOssModel's own, or offload's
    generator that yields each layer once its weights are on the GPU. layer_caches[i]: what layer i's attention
    passes its keys and values through (a LayerCache, or generate.py's static buffers). hidden_states: a list that,
    if given, receives the embedding output and every layer's output."""
    x = parts.embed_tokens(input_ids)  # [B, T, H]
    position_embeddings = parts.rotary_emb(position_ids.to(x.device), x.dtype)
    if hidden_states is not None:
        hidden_states.append(x)
    for i, layer in enumerate(layers):
        layer_cache = layer_caches[i] if layer_caches is not None else None
        x = layer(x, position_embeddings, keep[layer.attention_type], layer_cache)
        if hidden_states is not None:
            hidden_states.append(x)
    return parts.norm(x)


def decoder_forward(parts, input_ids, attention_mask=None, position_ids=None, cache=None, layers=None,
                    hidden_states=None) -> torch.Tensor:
    """GptOssModel.forward for any holder of the parts (also config and layers): masks and default positions from
    `attention_masks`, `run_layers`, then the KV cache advanced. input_ids [B, T] -> [B, T, H]."""
    device = parts.embed_tokens.weight.device
    keep, positions = attention_masks(parts.config, input_ids.shape, attention_mask, cache, device)
    x = run_layers(
        parts, input_ids, keep, positions if position_ids is None else position_ids,
        parts.layers if layers is None else layers, cache.layers if cache is not None else None, hidden_states,
    )
    if cache is not None:
        cache.advance(keep["new_valid"])
    return x


# ---------------------------------------------------------------------------------------------------------------
# Model


class GptOssModel(nn.Module):
    """Embedding, the decoder stack and the final norm."""

    def __init__(self, config: GPTOssConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, device=device, dtype=dtype)
        self.layers = nn.ModuleList(
            GptOssDecoderLayer(config, i, device=device, dtype=dtype) for i in range(config.num_hidden_layers)
        )
        self.norm = GptOssRMSNorm(config.hidden_size, config.rms_norm_eps, device=device, dtype=dtype)
        self.rotary_emb = GptOssRotaryEmbedding(config, device=None if device == "meta" else device)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, output_hidden_states=False):
        """input_ids [B, T] -> final-normed hidden states [B, T, H] (and, if asked, the residual stream after the
        embedding and after each layer: a list of num_hidden_layers + 1 tensors [B, T, H])."""
        hidden_states = [] if output_hidden_states else None
        x = decoder_forward(self, input_ids, attention_mask, position_ids, cache, hidden_states=hidden_states)
        return (x, hidden_states) if output_hidden_states else x


# ---------------------------------------------------------------------------------------------------------------
# The full model: language-model head; generation and save / load are handed to generate.py and io.py


class GPTOssModelFull(nn.Module):
    """GptOssModel plus the (untied) language-model head. forward(...) returns logits [B, T, V]."""

    def __init__(self, config: GPTOssConfig, device=None, dtype=None):
        super().__init__()
        self.config = config
        self.model = GptOssModel(config, device=device, dtype=dtype)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False, device=device, dtype=dtype)
        if str(device) != "meta":
            self.reset_parameters()
        extensions.use_implementation(self, config.implementation)

    def reset_parameters(self, seed: int | None = None):
        """Random initialisation for training from scratch: normal(0, initializer_range) matrices and sinks, zero
        biases, unit norms. With a seed, one generator per device draws every parameter in turn, so the same seed
        gives the same model and no two layers share weights."""
        std = self.config.initializer_range
        generators = {}
        with torch.no_grad():
            for name, p in self.named_parameters():
                if seed is not None and p.device not in generators:
                    generators[p.device] = torch.Generator(p.device).manual_seed(seed)
                if name.endswith("layernorm.weight") or name == "model.norm.weight":
                    p.fill_(1.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:  # drawn where the parameter lives, so a 20b model on a GPU initialises in seconds
                    p.normal_(0.0, std, generator=generators.get(p.device))

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, cache=None):
        """input_ids [B, T] -> logits [B, T, V].

        With a KV cache: create one with `cache = model.new_cache()` and pass `cache=cache` on every call; it is
        updated in place. `use_cache=True` without a cache is an error rather than a silent no-op.
        """
        if use_cache and cache is None:
            raise ValueError("use_cache=True needs a cache: pass cache=model.new_cache() and reuse it across calls")
        hidden = self.model(input_ids, attention_mask, position_ids, cache)
        return self.lm_head(hidden)

    def new_cache(self) -> KVCache:
        return KVCache(self.config)

    def set_implementation(self, implementation: str) -> "GPTOssModelFull":
        """Switch between the readable "eager" path (this file) and the "fast" one (fast.py, attached from outside)."""
        self.config = self.config.replace(implementation=implementation)
        self.model.config = self.config
        extensions.use_implementation(self, implementation)
        return self

    def generate(self, input_ids, max_new_tokens: int, **options) -> torch.Tensor:
        """Greedy or sampled decoding through the KV cache: generate.generate (options: do_sample, temperature,
        top_p, attention_mask, eos_token_id, generator) -> token ids [B, T + new]."""
        return extensions.generate(self, input_ids, max_new_tokens, **options)

    # ---- our own format: config.json + sharded safetensors (gptoss_model/io.py, docs/design.md) -----------------

    def save_pretrained(self, directory, max_shard_bytes: int = MAX_SHARD_BYTES):
        """Write config.json and sharded safetensors into `directory` (via a temporary directory + rename)."""
        save_model(self, directory, max_shard_bytes)

    @classmethod
    def from_pretrained(cls, directory, dtype=None, device="cpu") -> "GPTOssModelFull":
        return load_model_dir(cls, directory, dtype=dtype, device=device)
