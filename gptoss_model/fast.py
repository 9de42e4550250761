"""The fast paths, attached from outside when config.implementation == "fast" (or model.set_implementation("fast")).

`attach(model)` re-classes the model's attention, router, experts and decoder layers (and the attention's
projections) as the subclasses below, which override `forward` (or attention's `attend`) only (parameters, names and
hooks stay where they were; `detach` puts model.py's classes back), in the way PyTorch's own `fully_shard`
re-classes a module (torch/distributed/fsdp/_fully_shard/_fully_shard.py). A class swap rather than per-instance
forwards: torch.compile guards on the class, so every layer shares the compiled graphs.
model.py never imports this file; gptoss_model/extensions.py calls attach/detach. Same contracts as the readable
functions in model.py, computed differently; tests/test_model_parity.py checks them equal to the eager path.

- fused_attention_with_sinks: PyTorch flex attention (compiled on CUDA) plus the sinks folded in through the
  log-sum-exp. With Z = Σ_j exp(s_j), adding a sink logit s to the softmax scales the sink-free output by
  Z / (Z + e^s) = sigmoid(lse - s), so the kernel never has to know about sinks.
- grouped_experts: every (token, expert) pair sorted by expert (a counting sort: no sort kernel, no host sync) and
  run as one grouped matmul per projection (torch._grouped_mm where available): no Python loop over experts, no
  dense all-experts compute. A single token inside a compiled piece (batch-1 decoding) takes _one_token_experts.
- linear: the attention projections and the router of a single row (batch-1 decoding) inside a compiled piece,
  written as a reduction that Inductor generates and fuses with its neighbours instead of cuBLAS's split-K kernels.
- one_token_attention: one query row per head against the grouped keys as they are (no per-head copy of K and V).
- top_k: the router's top k inside a compiled piece on CUDA, from each logit's rank (fused, no top-k kernel).
- _attention_inputs_in_one_launch: on CUDA, one token's RMSNorm and q/k/v projections in one Triton launch
  (kernels/norm_linear.py; its 2-16-row kernel and o_proj through it measured slower: NORM_LINEAR_ROWS,
  NORM_LINEAR_O_PROJ).
- _one_token_attention: on CUDA, one token's attention with sinks over the cache in one Triton launch (gradients off).
- layer_forward: on CUDA a decoder layer runs as two torch.compile'd pieces (norm + q/k/v + rotary; sinks + o_proj
  + norm + router + experts), which fuse the elementwise work between the matmuls: uncompiled, a layer is dozens of
  tiny kernel launches and passes over memory (docs/benchmarks.md). Between the pieces, uncompiled: the KV cache update
  (a Python object that grows would make the graphs recompile) and the flex attention kernel, compiled on its own
  so that it can be specialised to the sequence length (see _flex). A decoding step over StaticDecoder's buffers
  is one piece instead, cache writes included (_one_token_layer). Nothing is compiled on the CPU.
"""

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import AuxRequest, create_block_mask, flex_attention

from gptoss_model import model as eager
from gptoss_model.generate import StaticLayerCache
from gptoss_model.model import GptOssAttention, GptOssDecoderLayer, GptOssExperts, GptOssTopKRouter

COMPILE_BACKEND = "inductor"  # tests/test_compiled_layer.py traces the same pieces on the CPU with "aot_eager"
_compiled_functions: dict = {}


def _compiled(fn):
    """fn through torch.compile, once per function. The sizes start static and turn symbolic at the first new shape
    (PyTorch's automatic dynamic shapes); module parameters are graph inputs, so every layer shares the graphs."""
    if fn not in _compiled_functions:
        # prefill, the first decoding step and the later ones each compile once per piece: over the default of 8
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
        # round to bf16 wherever the eager code does (a fused kernel would otherwise keep float32 in between, e.g.
        # RMSNorm's output inside the projection after it): the fast path then rounds like the readable one
        import torch._inductor.config as inductor_config

        inductor_config.emulate_precision_casts = True
        _compiled_functions[fn] = torch.compile(fn, backend=COMPILE_BACKEND)
    return _compiled_functions[fn]


# ---------------------------------------------------------------------------------------------------------------
# Attaching: the fast classes


class FastAttention(GptOssAttention):
    def attend(self, q, k, v, sinks, keep, scaling: float) -> torch.Tensor:
        """GptOssAttention's attention step through fused_attention_with_sinks."""
        return fused_attention_with_sinks(q, k, v, sinks, keep, scaling)


class FastLinear(nn.Linear):
    def forward(self, x):
        return linear(x, self.weight, self.bias)


class FastRouter(GptOssTopKRouter):
    def forward(self, x):
        """GptOssTopKRouter.forward through `linear` and `top_k`, which fuse into the compiled piece around them."""
        logits = linear(x, self.weight, self.bias)  # [N, E]
        top_logits, top_indices = top_k(logits, self.top_k)
        return logits, F.softmax(top_logits, dim=-1, dtype=top_logits.dtype), top_indices


class FastExperts(GptOssExperts):
    def forward(self, x, weights, indices):
        return grouped_experts(self, x, weights, indices)


class FastDecoderLayer(GptOssDecoderLayer):
    def forward(self, x, position_embeddings, keep, layer_cache=None):
        if x.is_cuda:  # the same steps in compiled, fused pieces; nothing is compiled on the CPU
            return layer_forward(self, x, position_embeddings, keep, layer_cache)
        return super().forward(x, position_embeddings, keep, layer_cache)


FAST_CLASSES = {GptOssAttention: FastAttention, GptOssExperts: FastExperts, GptOssDecoderLayer: FastDecoderLayer,
                GptOssTopKRouter: FastRouter}
EAGER_CLASSES = {fast: eager for eager, fast in FAST_CLASSES.items()}
EAGER_CLASSES[FastLinear] = nn.Linear


def attach(module) -> None:
    """Re-class every attention, experts, router and decoder layer inside `module` as its fast subclass, and the
    attention projections as FastLinear (not the LM head: cuBLAS already reads it at full speed)."""
    for inner in module.modules():
        inner.__class__ = FAST_CLASSES.get(type(inner), type(inner))
        if isinstance(inner, GptOssAttention):
            for projection in (inner.q_proj, inner.k_proj, inner.v_proj, inner.o_proj):
                if type(projection) is nn.Linear:
                    projection.__class__ = FastLinear


def detach(module) -> None:
    """Undo `attach`: model.py's own classes again."""
    for inner in module.modules():
        inner.__class__ = EAGER_CLASSES.get(type(inner), type(inner))


# ---------------------------------------------------------------------------------------------------------------
# The decoder layer in compiled pieces


def layer_forward(layer, x, position_embeddings, keep, layer_cache):
    """Same contract and steps as GptOssDecoderLayer.forward (model.py), for CUDA: compiled pieces around the two
    things that stay outside a graph, the KV cache update and the flex attention kernel. A decoding step of
    StaticDecoder (one token, static buffers) is one compiled piece, cache writes included."""
    if x.shape[1] == 1 and isinstance(layer_cache, StaticLayerCache):
        return _compiled(_one_token_layer)(layer, x, position_embeddings, keep, *layer_cache.buffers())
    q, k, v = _compiled(_attention_inputs)(layer, x, position_embeddings)
    if layer_cache is not None:
        k, v = layer_cache.update(k, v)
    if q.shape[2] == 1:  # one new token: its row of scores is computed inside the compiled piece
        return _compiled(_finish_after_one_token_attention)(layer, x, q, k, v, keep)
    out, lse = _flex_with_lse(q, k, v, keep, layer.self_attn.scaling)
    return _compiled(_finish_after_flex)(layer, x, out, lse)


def _one_token_layer(layer, x, position_embeddings, keep, keys, values, slot):
    """The whole layer for one new token over static KV buffers: the cache write is an indexed store that Inductor
    puts in the kernel computing k and v, and the attention reads the buffers in the same graph (split in two
    pieces, the step was ~26 kernels a layer, two of them the cache's index_copy; docs/benchmarks.md)."""
    q, k, v = _attention_inputs(layer, x, position_embeddings)
    keys, values = StaticLayerCache.write(keys, values, slot, k, v)
    return _finish_after_one_token_attention(layer, x, q, keys, values, keep)


def _attention_inputs(layer, x, position_embeddings):
    if _takes_norm_linear(x, layer.self_attn.q_proj):
        return _attention_inputs_in_one_launch(layer, x, position_embeddings)
    return layer.self_attn.project(layer.input_layernorm(x), position_embeddings)


NORM_LINEAR_ROWS = 1  # up to this many rows q/k/v take kernels/norm_linear.py's float32 kernels (its MAX_ROWS is 16:
# measured slower than cuBLAS at batch 8, docs/benchmarks.md, fifth session; bench_decode_variants.py's "rows-kernel")
NORM_LINEAR_O_PROJ = False  # o_proj through those kernels too: slower than Inductor's reduction ("o-proj-kernel")
FRAGMENT_PROJECTIONS = False  # bf16 decoding (up to 8 rows): q/k/v and o_proj through norm_linear's tensor-core
# fragments kernel; measured slower in the sixth session (bench_decode_variants.py's "fragment-projections")


def _takes_norm_linear(x, projection, o_proj: bool = False) -> bool:
    """Whether a projection of x goes through kernels/norm_linear.py: on CUDA, with a bias, with gradients off (the
    kernels have no backward: with them, the readable way), and for rows its fragments kernel takes
    (FRAGMENT_PROJECTIONS) or up to NORM_LINEAR_ROWS rows (o_proj: only with NORM_LINEAR_O_PROJ)."""
    if not x.is_cuda or projection.bias is None or torch.is_grad_enabled():
        return False
    if x.numel() <= NORM_LINEAR_ROWS * x.shape[-1] and (NORM_LINEAR_O_PROJ or not o_proj):
        return True
    if not FRAGMENT_PROJECTIONS:
        return False
    from gptoss_model.kernels.norm_linear import takes_fragments  # (imports Triton: CUDA only)

    return takes_fragments(x)


def _attention_inputs_in_one_launch(layer, x, position_embeddings):
    """GptOssAttention.project(input_layernorm(x)) for a few rows, the RMSNorm and the q/k/v projections in one
    Triton launch (kernels/norm_linear.py): for one token Inductor made them three reductions, the q one at ~1.6
    TB/s, and batch-1 decoding ran 27 % faster with the kernel (docs/benchmarks.md, fourth session); for batch 8
    cuBLAS ran split-K kernels and their reduce kernels."""
    from gptoss_model.kernels.norm_linear import norm_linear

    attention = layer.self_attn
    projections = norm_linear(x, layer.input_layernorm, [attention.q_proj, attention.k_proj, attention.v_proj])
    return attention.rotated_heads(*projections, position_embeddings)


def _output_projection(attention, out):
    """attention.o_proj(out) [B, T, nq·d] -> [B, T, H]; for decoding's rows one norm_linear launch without the norm
    (FRAGMENT_PROJECTIONS; NORM_LINEAR_O_PROJ, its float32 kernels, lost to Inductor's reduction at batch 1:
    docs/benchmarks.md, fifth session)."""
    if _takes_norm_linear(out, attention.o_proj, o_proj=True):
        from gptoss_model.kernels.norm_linear import norm_linear

        return norm_linear(out, None, [attention.o_proj])[0]
    return attention.o_proj(out)


def _finish_after_flex(layer, x, out, lse):
    return _finish(layer, x, _scale_by_sinks(out, lse, layer.self_attn.sinks))


def _finish_after_one_token_attention(layer, x, q, k, v, keep):
    return _finish(layer, x, _one_token_attention(layer.self_attn, q, k, v, keep))


def _one_token_attention(attention, q, k, v, keep):
    """one_token_attention with the attention's sinks and scaling; on CUDA without gradients, for a bf16 or float32
    model, one Triton launch (kernels/one_token_attention.py) instead of Inductor's four kernels a layer (scores,
    max, sink column, softmax and P·V: docs/benchmarks.md). The kernel has no backward: with gradients, the readable
    way."""
    if q.is_cuda and not torch.is_grad_enabled() and q.dtype in (torch.bfloat16, torch.float32):
        from gptoss_model.kernels import one_token_attention as kernel

        return kernel.one_token_attention(q, k, v, attention.sinks, keep, attention.scaling)
    return one_token_attention(q, k, v, attention.sinks, keep, attention.scaling)


def _finish(layer, x, attention_out):
    """attention_out [B, T, nq, d] -> the layer's output: o_proj, residual, norm, mixture of experts, residual."""
    B, T, _ = x.shape
    x = x + _output_projection(layer.self_attn, attention_out.reshape(B, T, -1))
    return x + layer.mlp(layer.post_attention_layernorm(x))


# ---------------------------------------------------------------------------------------------------------------
# Attention


def fused_attention_with_sinks(q, k, v, sinks, keep, scaling: float) -> torch.Tensor:
    """Same contract as eager.attention_with_sinks: q [B, nq, T, d], k/v [B, nkv, S, d], keep [B, 1, T, S] bool
    -> [B, T, nq, d]."""
    if q.shape[2] == 1:  # decoding one token: a single row of scores, nothing for a fused kernel to save
        return one_token_attention(q, k, v, sinks, keep, scaling)
    return _scale_by_sinks(*_flex_with_lse(q, k, v, keep, scaling), sinks)


def one_token_attention(q, k, v, sinks, keep, scaling: float) -> torch.Tensor:
    """eager.attention_with_sinks for one query row (T = 1), the same steps with the query heads grouped by the kv
    head they read, [B, nkv, group, d], so that K and V are used as stored instead of copied once per query head."""
    B, nq, T, d = q.shape
    nkv = k.shape[1]
    q = q.reshape(B, nkv, nq // nkv, d)  # query head h = kv head h // group, position h % group
    scores = _small_matmul(q, k.transpose(2, 3)) * scaling  # [B, nkv, group, S]
    scores = scores.masked_fill(~keep, float("-inf"))  # keep [B, 1, 1, S]
    sink_column = sinks.reshape(1, nkv, nq // nkv, 1).expand(B, -1, -1, 1).to(scores.dtype)
    logits = torch.cat([scores, sink_column], dim=-1)  # [B, nkv, group, S + 1]
    logits = logits - logits.max(dim=-1, keepdim=True).values
    probs = F.softmax(logits, dim=-1, dtype=logits.dtype)[..., :-1]  # [B, nkv, group, S]
    out = _small_matmul(probs.to(v.dtype), v)  # [B, nkv, group, d]
    return out.reshape(B, T, nq, d)  # [B, nkv, group, d] is [B, 1, nq, d]


def _small_matmul(a, b):
    """torch.matmul(a, b) for a with few rows; inside a compiled piece a float32 product summed and rounded once
    (what the matmul computes), which Inductor fuses with the mask and the softmax around it into a few reductions:
    cuBLAS runs a batched matrix-vector kernel per product there, slower than the whole step around it."""
    if not torch.compiler.is_compiling():
        return torch.matmul(a, b)
    return (a.float()[..., :, :, None] * b.float()[..., None, :, :]).sum(-2).to(a.dtype)


def _flex_with_lse(q, k, v, keep, scaling):
    """Flex attention without sinks -> out [B, nq, T, d], lse [B, nq, T] (natural log)."""
    out, aux = _flex(
        q, k, v, block_mask=_block_mask(keep), scale=scaling, enable_gqa=q.shape[1] != k.shape[1],
        return_aux=AuxRequest(lse=True),
    )
    return out, aux.lse


def _scale_by_sinks(out, lse, sinks):
    """out [B, nq, T, d] without sinks -> with them, [B, T, nq, d]."""
    sink_share = torch.sigmoid(lse.float() - sinks.float().view(1, -1, 1))  # [B, nq, T]
    return (out * sink_share.unsqueeze(-1).to(out.dtype)).transpose(1, 2)


_flex_for_one_shape = _flex_for_any_shape = None
_flex_shapes: set = set()
FLEX_SPECIALISED_SHAPES = 16


def _flex(q, k, v, **kwargs):
    """flex_attention, compiled on CUDA. A kernel compiled for one sequence length runs several times faster than
    the shape-generic one (docs/benchmarks.md), so the first FLEX_SPECIALISED_SHAPES shapes each get their own (a verify run or a benchmark needs one or two; each costs
    seconds to compile) and any further shape the generic kernel."""
    global _flex_for_one_shape, _flex_for_any_shape
    if not q.is_cuda:
        with warnings.catch_warnings():  # flex attention runs unfused (but exact) on CPU and says so on every call
            warnings.simplefilter("ignore")
            return flex_attention(q, k, v, **kwargs)
    shape = (tuple(q.shape), tuple(k.shape))
    if shape in _flex_shapes or len(_flex_shapes) < FLEX_SPECIALISED_SHAPES:
        _flex_shapes.add(shape)
        if _flex_for_one_shape is None:
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
            _flex_for_one_shape = torch.compile(flex_attention, dynamic=False)
        return _flex_for_one_shape(q, k, v, **kwargs)
    if _flex_for_any_shape is None:
        _flex_for_any_shape = torch.compile(flex_attention, dynamic=True)
    return _flex_for_any_shape(q, k, v, **kwargs)


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
    # on CUDA through torch.compile: the eager build is a few milliseconds of launches before the first layer runs
    block_mask = create_block_mask(may_attend, B, None, T, S, device=keep.device, _compile=keep.is_cuda)
    _block_masks[id(keep)] = (keep, block_mask)
    return _block_masks[id(keep)][1]


# ---------------------------------------------------------------------------------------------------------------
# Linear layers of a single row


REDUCTION_ROWS = 1  # up to this many rows `linear` is a reduction (scripts/bench_decode_variants.py tries 8)


def linear(x, weight, bias=None):
    """F.linear(x, weight, bias), except for a single row inside a compiled piece (batch-1 decoding): there it is a
    float32 product summed over the input, which Inductor turns into one reduction kernel that reads the weight
    once near the memory bandwidth and takes the RMSNorm before it along; for one row cuBLAS runs a split-K kernel
    plus a reduce kernel per projection (docs/benchmarks.md, the decode profile)."""
    if x.numel() > REDUCTION_ROWS * x.shape[-1] or not torch.compiler.is_compiling():
        return F.linear(x, weight, bias)
    y = (x.float()[..., None, :] * weight.float()).sum(-1)  # [..., out]
    return (y if bias is None else y + bias.float()).to(x.dtype)  # one rounding, as cuBLAS's bias epilogue


def top_k(logits, k: int):
    """torch.topk(logits, k, dim=-1) -> (values, indices) [..., k]; inside a compiled piece on CUDA through
    _top_k_by_rank, which Inductor fuses with the router's softmax instead of launching a top-k kernel (~4.5 µs a
    layer in the decode profile). Both keep the lower index among tied logits at the k-th place (CUDA's top-k
    gathers in index order); torch.topk on the CPU may not, so the CPU keeps it."""
    if torch.compiler.is_compiling() and logits.is_cuda:
        return _top_k_by_rank(logits, k)
    return torch.topk(logits, k, dim=-1)


def _top_k_by_rank(logits, k: int):
    """The k largest logits, largest first, from each logit's rank: how many logits beat it, a tie going to the
    lower index."""
    index = torch.arange(logits.shape[-1], device=logits.device)
    above = logits[..., None, :] > logits[..., :, None]  # [..., E, E]: [j, i] = logit i beats logit j
    tied_before = (logits[..., None, :] == logits[..., :, None]) & (index[None, :] < index[:, None])
    rank = (above | tied_before).sum(-1)  # [..., E]: 0 for the largest
    at_rank = rank[..., :, None] == torch.arange(k, device=logits.device)  # [..., E, k]
    values = torch.where(at_rank, logits[..., :, None], 0).sum(-2).to(logits.dtype)  # one term each: exact
    return values, (at_rank * index[:, None]).sum(-2)


# ---------------------------------------------------------------------------------------------------------------
# Experts


def grouped_experts(experts, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Same contract as GptOssExperts.forward: x [N, H], weights/indices [N, K] -> [N, H]."""
    if indices.shape[0] == 1 and torch.compiler.is_compiling():
        return _one_token_experts(experts, x, weights, indices)
    return by_sorted_rows(experts, x, weights, indices, _grouped_mlp)


def by_sorted_rows(experts, x, weights, indices, mlp) -> torch.Tensor:
    """The experts' MLP over every (token, expert) pair at once: the pairs' rows sorted by expert go through
    mlp(experts, rows [N·K, H], expert_of_row [N·K], ends [E]) -> [N·K, H], then come back in (token, slot) order,
    weighted and summed a token. x [N, H], weights/indices [N, K] -> [N, H]. (Also the packed experts' prefill:
    kernels/mxfp4_dequantize.py.)"""
    N, K = indices.shape
    row_of_pair, pair_of_row, ends = _sort_by_expert(indices, experts.gate_up_proj_bias.shape[0])
    expert_of_row = indices.reshape(-1)[pair_of_row]  # [N·K] ascending
    y = mlp(experts, x[pair_of_row // K], expert_of_row, ends)  # [N·K, H] from the token of each sorted row
    y = y[row_of_pair].view(N, K, -1) * weights[..., None].to(y.dtype)  # back to (token, slot) order
    return y.sum(dim=1).to(x.dtype)  # [N, H]


def _grouped_mlp(experts, rows, expert_of_row, ends):
    """Sorted rows [N·K, H] through the experts' matrices, a grouped matmul per projection -> [N·K, H]."""
    gate_up = _grouped_linear(rows, experts.gate_up_proj, experts.gate_up_proj_bias, expert_of_row, ends)  # [N·K, 2I]
    activated = eager.clamped_swiglu(gate_up, experts.alpha, experts.limit)  # [N·K, I]
    return _grouped_linear(activated, experts.down_proj, experts.down_proj_bias, expert_of_row, ends)


def _one_token_experts(experts, x, weights, indices):
    """grouped_experts for a single token (batch-1 decoding), written for the compiler: the gather of the K chosen
    experts' rows and the dot products fuse into one kernel per projection that reads each chosen weight once,
    a memory-bound matrix-vector product with no sorting and no grouped-matmul set-up for K rows."""
    chosen = indices[0]  # [K]
    gate_up = (experts.gate_up_proj[chosen].float() * x.float()).sum(-1).to(x.dtype) + experts.gate_up_proj_bias[chosen]
    activated = eager.clamped_swiglu(gate_up, experts.alpha, experts.limit)  # [K, I]
    y = (experts.down_proj[chosen].float() * activated[:, None, :].float()).sum(-1).to(x.dtype)
    y = y + experts.down_proj_bias[chosen]  # [K, H]
    return (y * weights[0, :, None].to(y.dtype)).sum(dim=0, keepdim=True).to(x.dtype)  # [1, H]


def _sort_by_expert(indices: torch.Tensor, expert_count: int):
    """Order the N·K (token, slot) pairs by expert, stably, by counting: indices [N, K] ->
    row_of_pair [N·K] (where each pair lands), pair_of_row [N·K] (its inverse), ends [E] int32 (cumulative rows)."""
    expert = indices.reshape(-1)  # [N·K]
    hits = expert[:, None] == torch.arange(expert_count, device=expert.device)  # [N·K, E]
    counts = hits.sum(0)  # [E]
    ends = counts.cumsum(0)  # [E]
    rank = hits.cumsum(0).gather(1, expert[:, None]).squeeze(1) - 1  # [N·K] earlier pairs with the same expert
    row_of_pair = ends[expert] - counts[expert] + rank
    pair_of_row = torch.empty_like(row_of_pair).scatter_(0, row_of_pair, torch.arange(len(expert), device=expert.device))
    return row_of_pair, pair_of_row, ends.to(torch.int32)


def _grouped_linear(x, weight, bias, expert_of_row, ends):
    """x [R, in] rows sorted by expert, weight [E, out, in], ends [E] int32 cumulative row counts -> [R, out]."""
    native = hasattr(torch, "_grouped_mm") and (not x.is_cuda or x.dtype == torch.bfloat16)
    if native:  # CUDA's grouped kernel is bf16-only; other dtypes there would go through host copies
        y = torch._grouped_mm(x, weight.transpose(1, 2), offs=ends)
    else:
        starts = torch.cat([ends.new_zeros(1), ends[:-1]]).tolist()
        y = torch.cat([x[s:e] @ weight[i].T for i, (s, e) in enumerate(zip(starts, ends.tolist()))])
    return y + bias[expert_of_row]
