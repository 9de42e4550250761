"""Realistic bugs, injected one at a time into gptoss_model at test time (monkeypatching the module-level function
or property where each concept lives). Each entry: name -> (patch function, layer type, component) where the type
and component are where verify must point."""

import torch
import torch.nn.functional as F

import gptoss_model.model as M
from gptoss_model.config import GPTOssConfig

_attention = M.attention_with_sinks
_masks = M.attention_masks
_inv_freq = M.yarn_inv_freq
_swiglu = M.clamped_swiglu


def drop_sinks(mp):
    mp.setattr(M, "attention_with_sinks", lambda q, k, v, sinks, keep, s: _attention(q, k, v, sinks * 0 - 1e9, keep, s))


def window_off_by_one(mp):
    mp.setattr(M, "attention_masks", lambda c, *a: _masks(c.replace(sliding_window=c.sliding_window + 1), *a))


def yarn_truncate_wrong(mp):
    mp.setattr(M, "yarn_inv_freq", lambda c: _inv_freq(c.replace(rope_truncate=not c.rope_truncate)))


def no_attention_factor(mp):
    mp.setattr(GPTOssConfig, "rope_attention_factor", property(lambda self: 1.0))


def softmax_before_topk(mp):
    def route(logits, k):
        top, idx = torch.topk(F.softmax(logits, dim=-1), k, dim=-1)
        return top, idx

    mp.setattr(M, "route", route)


def gate_up_halves(mp):
    def swiglu(gate_up, alpha, limit):
        half = gate_up.shape[-1] // 2
        halves = torch.stack([gate_up[..., :half], gate_up[..., half:]], dim=-1).flatten(-2)
        return _swiglu(halves, alpha, limit)

    mp.setattr(M, "clamped_swiglu", swiglu)


def missing_plus_one(mp):
    mp.setattr(M, "clamped_swiglu", lambda gu, a, lim: _swiglu(gu, a, lim) / (gu[..., 1::2].clamp(-lim, lim) + 1) * gu[..., 1::2].clamp(-lim, lim))


def clamp_gate_both_sides(mp):
    def swiglu(gate_up, alpha, limit):
        gate_up = gate_up.clone()
        gate_up[..., 0::2] = gate_up[..., 0::2].clamp(min=-limit)
        return _swiglu(gate_up, alpha, limit)

    mp.setattr(M, "clamped_swiglu", swiglu)


def wrong_kv_grouping(mp):
    def attention(q, k, v, sinks, keep, s):
        group = q.shape[1] // k.shape[1]
        # repeat (kv 0,1,0,1) instead of repeat_interleave (0,0,1,1): query heads read the wrong kv heads
        return _attention(q, k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1), sinks, keep, s)

    mp.setattr(M, "attention_with_sinks", attention)


BUGS = {
    "drop_sinks": (drop_sinks, "sliding_attention", "attention"),
    "window_off_by_one": (window_off_by_one, "sliding_attention", "attention"),
    "yarn_truncate_wrong": (yarn_truncate_wrong, "sliding_attention", "attention"),
    "no_attention_factor": (no_attention_factor, "sliding_attention", "attention"),
    "softmax_before_topk": (softmax_before_topk, "sliding_attention", "moe"),
    "gate_up_halves": (gate_up_halves, "sliding_attention", "moe"),
    "missing_plus_one": (missing_plus_one, "sliding_attention", "moe"),
    "clamp_gate_both_sides": (clamp_gate_both_sides, "sliding_attention", "moe"),
    "wrong_kv_grouping": (wrong_kv_grouping, "sliding_attention", "attention"),
}
