"""A user's own gpt-oss port wrapped for `verify --candidate tests/data/candidates/user_port.py:UserPort`, written
the way docs/candidates.md shows: build one decoder layer from its tensors, run it, return what it can expose
(here only the attention output and the layer output; everything else is reported "not provided")."""

import math

import torch
import torch.nn.functional as F


def rms_norm(x, weight, eps):
    x32 = x.float()
    return (weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps))).to(x.dtype)


def rotate(x, position_ids, config):
    """x [B, heads, T, d]: YaRN rotary of halves, computed here from the config (no gptoss_model import)."""
    from gptoss_model.model import yarn_inv_freq  # the frequency table only: the port's own maths below

    angles = position_ids[:, None, :, None].float() * yarn_inv_freq(config)  # [B, 1, T, d/2]
    cos, sin = angles.cos() * config.rope_attention_factor, angles.sin() * config.rope_attention_factor
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


class UserLayer:
    def __init__(self, config, index, weights):
        self.config, self.w = config, weights
        self.window = config.sliding_window if config.layer_types[index] == "sliding_attention" else None

    def attention(self, x, position_ids):
        c, w = self.config, self.w
        B, T, _ = x.shape
        heads = lambda t: t.view(B, T, -1, c.head_dim).transpose(1, 2)  # noqa: E731
        q = rotate(heads(F.linear(x, w["self_attn.q_proj.weight"], w["self_attn.q_proj.bias"])), position_ids, c)
        k = rotate(heads(F.linear(x, w["self_attn.k_proj.weight"], w["self_attn.k_proj.bias"])), position_ids, c)
        v = heads(F.linear(x, w["self_attn.v_proj.weight"], w["self_attn.v_proj.bias"]))
        group = c.num_attention_heads // c.num_key_value_heads
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        scores = q @ k.transpose(2, 3) / math.sqrt(c.head_dim)  # [B, nq, T, T]
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        allowed = (j <= i) & ((i - j < self.window) if self.window else True)
        scores = scores.masked_fill(~allowed, float("-inf"))
        sinks = w["self_attn.sinks"].view(1, -1, 1, 1).expand(B, -1, T, 1)
        probs = torch.softmax(torch.cat([scores, sinks], dim=-1), dim=-1)[..., :-1]
        out = (probs @ v).transpose(1, 2).reshape(B, T, -1)
        return F.linear(out, w["self_attn.o_proj.weight"], w["self_attn.o_proj.bias"])

    def moe(self, x):
        c, w = self.config, self.w
        flat = x.reshape(-1, x.shape[-1])
        logits = F.linear(flat, w["mlp.router.weight"], w["mlp.router.bias"])
        top, idx = logits.topk(c.num_experts_per_tok, dim=-1)
        weights = top.softmax(dim=-1)
        out = torch.zeros_like(flat)
        for n in range(flat.shape[0]):
            for slot in range(idx.shape[1]):
                e = int(idx[n, slot])
                h = w["mlp.experts.gate_up_proj"][e] @ flat[n] + w["mlp.experts.gate_up_proj_bias"][e]
                gate, up = h[0::2].clamp(max=c.swiglu_limit), h[1::2].clamp(-c.swiglu_limit, c.swiglu_limit)
                y = w["mlp.experts.down_proj"][e] @ ((up + 1) * gate * torch.sigmoid(c.swiglu_alpha * gate))
                out[n] += weights[n, slot] * (y + w["mlp.experts.down_proj_bias"][e])
        return out.view_as(x)

    def run(self, hidden, position_ids, cache=None):
        eps = self.config.rms_norm_eps
        attention = self.attention(rms_norm(hidden, self.w["input_layernorm.weight"], eps), position_ids)
        x = hidden + attention
        x = x + self.moe(rms_norm(x, self.w["post_attention_layernorm.weight"], eps))
        return {"attention": attention, "layer_output": x}


class UserPort:
    name, version = "user-port", "0.0.1"

    def build_layer(self, index, config, tensors):
        prefix = f"model.layers.{index}."
        return UserLayer(config, index, {n.removeprefix(prefix): t for n, t in tensors.items()})
