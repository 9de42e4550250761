"""The fast paths, used when config.implementation == "fast" (or after model.set_implementation("fast")).

Same functions as the readable ones in model.py, computed differently; tests/test_model_parity.py checks them equal
to the eager path. Nothing in model.py's readable path depends on this file.

- fused_attention_with_sinks: PyTorch flex attention (compiled on CUDA) plus the sinks folded in through the
  log-sum-exp. With Z = Σ_j exp(s_j), adding a sink logit s to the softmax scales the sink-free output by
  Z / (Z + e^s) = sigmoid(lse - s), so the kernel never has to know about sinks.
- grouped_experts: every (token, expert) pair sorted by expert and run as one grouped matmul per projection
  (torch._grouped_mm where available): no Python loop over experts, no dense all-experts compute.
"""

import warnings

import torch
from torch.nn.attention.flex_attention import AuxRequest, create_block_mask, flex_attention

from gptoss_model.model import attention_with_sinks, clamped_swiglu

_compiled_flex = None


def _flex(*args, **kwargs):
    global _compiled_flex
    if args[0].is_cuda:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=True)
        return _compiled_flex(*args, **kwargs)
    with warnings.catch_warnings():  # flex attention runs unfused (but exact) on CPU and says so on every call
        warnings.simplefilter("ignore")
        return flex_attention(*args, **kwargs)


def fused_attention_with_sinks(q, k, v, sinks, keep, scaling: float) -> torch.Tensor:
    """Same contract as model.attention_with_sinks: q [B, nq, T, d], k/v [B, nkv, S, d], keep [B, 1, T, S] bool
    -> [B, T, nq, d]."""
    B, nq, T, _ = q.shape
    if T == 1:  # decoding one token: a single row of scores, nothing for a fused kernel to save
        return attention_with_sinks(q, k, v, sinks, keep, scaling)

    block_mask = _block_mask(keep)
    out, aux = _flex(
        q, k, v, block_mask=block_mask, scale=scaling, enable_gqa=nq != k.shape[1], return_aux=AuxRequest(lse=True)
    )  # out [B, nq, T, d], aux.lse [B, nq, T] (natural log)
    sink_share = torch.sigmoid(aux.lse.float() - sinks.float().view(1, nq, 1))  # [B, nq, T]
    return (out * sink_share.unsqueeze(-1).to(out.dtype)).transpose(1, 2)  # [B, T, nq, d]


_block_masks: dict = {}  # id(keep) -> (keep, BlockMask): every layer of one type shares its mask in a forward


def _block_mask(keep):
    """The flex BlockMask of a dense keep mask [B, 1, T, S], built once per mask tensor rather than once per layer
    (building one evaluates the mask over every (query, key) pair)."""
    hit = _block_masks.get(id(keep))
    if hit is not None and hit[0] is keep:
        return hit[1]
    B, _, T, S = keep.shape

    def may_attend(b, h, q_idx, kv_idx):
        return keep[b, 0, q_idx, kv_idx]

    if len(_block_masks) >= 4:
        _block_masks.clear()
    _block_masks[id(keep)] = (keep, create_block_mask(may_attend, B, None, T, S, device=keep.device))
    return _block_masks[id(keep)][1]


def _grouped_linear(x, weight, bias, expert_of_row, ends):
    """x [R, in] rows sorted by expert, weight [E, out, in], ends [E] int32 cumulative row counts -> [R, out]."""
    native = hasattr(torch, "_grouped_mm") and (not x.is_cuda or x.dtype == torch.bfloat16)
    if native:  # CUDA's grouped kernel is bf16-only; other dtypes there would go through host copies
        y = torch._grouped_mm(x, weight.transpose(1, 2), offs=ends)
    else:
        starts = torch.cat([ends.new_zeros(1), ends[:-1]]).tolist()
        y = torch.cat([x[s:e] @ weight[i].T for i, (s, e) in enumerate(zip(starts, ends.tolist()))])
    return y + bias[expert_of_row]


def grouped_experts(experts, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Same contract as GPTOssExperts.forward: x [N, H], weights/indices [N, K] -> [N, H]."""
    N, K = indices.shape
    E = experts.gate_up_proj.shape[0]
    flat_expert = indices.reshape(-1)  # [N·K]
    order = torch.argsort(flat_expert, stable=True)  # (token, slot) pairs grouped by expert
    expert_of_row = flat_expert[order]  # [N·K]
    counts = torch.zeros(E, dtype=torch.int32, device=x.device)
    counts.scatter_add_(0, flat_expert, torch.ones_like(flat_expert, dtype=torch.int32))  # no host sync (bincount has)
    ends = counts.cumsum(0).to(torch.int32)  # [E]
    rows = x[order // K]  # [N·K, H]
    h = _grouped_linear(rows, experts.gate_up_proj, experts.gate_up_proj_bias, expert_of_row, ends)  # [N·K, 2I]
    a = _on_gpu_compiled(clamped_swiglu, h)(h, experts.alpha, experts.limit)  # [N·K, I]
    y = _grouped_linear(a, experts.down_proj, experts.down_proj_bias, expert_of_row, ends)  # [N·K, H]
    return _on_gpu_compiled(_combine, y)(y, weights, order, N, K).to(x.dtype)  # [N, H]


def _combine(y, weights, order, N: int, K: int):
    """y [N·K, H] rows in expert order -> Σ_k weight_k · y_k per token [N, H]."""
    y = y * weights.reshape(-1)[order, None].to(y.dtype)
    out = torch.empty_like(y)
    out[order] = y  # back to (token, slot) order
    return out.view(N, K, -1).sum(dim=1)


_compiled_functions: dict = {}


def _on_gpu_compiled(fn, like: torch.Tensor):
    """On CUDA, fn through torch.compile (its elementwise ops fuse into one kernel: fewer launches, fewer passes
    over memory); elsewhere fn itself."""
    if not like.is_cuda:
        return fn
    if fn not in _compiled_functions:
        _compiled_functions[fn] = torch.compile(fn, dynamic=True)
    return _compiled_functions[fn]
