"""One token's RMSNorm and the projections that read it, in one launch (Triton): out_i = W_i · norm(x) + b_i for up
to three weights, e.g. an attention's q, k and v.

In batch-1 decoding the compiled step computes q, k and v as Inductor reductions: three kernels, each with the
RMSNorm folded in, the q one at ~1.6 TB/s where o_proj, the same size, reaches ~2.5 (docs/benchmarks.md, fourth
session). Here the three weights are one grid: a program takes BLOCK_N rows of one of them, normalises x itself
(x and the norm's weight are 2 × 5.8 kB, read from L1/L2 by every program) and multiplies in float32, summing
once at the end. Same roundings as the readable path: the normalised x is rounded to the model's dtype as
GptOssRMSNorm does, each output once after its bias as `fast.linear`.

Not wired into the fast path: `scripts/bench_decode_variants.py`'s "norm-qkv-kernel" variant measures it against
the tree on the GPU first. Tested under Triton's interpreter against the RMSNorm then F.linear
(tests/norm_linear_cases.py).
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _norm_linear_kernel(x_ptr, norm_weight_ptr, eps, w0_ptr, b0_ptr, N0, w1_ptr, b1_ptr, N1, w2_ptr, b2_ptr, N2,
                        out_ptr, K, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """x [K], norm weight [K] -> out [N0 + N1 + N2], the concatenation of W_i [N_i, K] · norm(x) + b_i [N_i]. Program
    p takes rows of W0 first, then of W1, then of W2. (Only the weights are picked by branch: the one output
    pointer keeps the stores plain, which torch.compile's analysis of what a kernel writes needs.)"""
    program = tl.program_id(0)
    programs0 = tl.cdiv(N0, BLOCK_N)
    programs1 = tl.cdiv(N1, BLOCK_N)
    if program < programs0:
        w_ptr, b_ptr, N, first, offset = w0_ptr, b0_ptr, N0, program * BLOCK_N, 0
    elif program < programs0 + programs1:
        w_ptr, b_ptr, N, first, offset = w1_ptr, b1_ptr, N1, (program - programs0) * BLOCK_N, N0
    else:
        w_ptr, b_ptr, N, first, offset = w2_ptr, b2_ptr, N2, (program - programs0 - programs1) * BLOCK_N, N0 + N1
    rows = first + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    squares = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + k, mask=k < K, other=0.0).to(tl.float32)
        squares += x * x
    inverse_rms = tl.math.rsqrt(tl.sum(squares) / K + eps)
    products = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + k, mask=k < K, other=0.0).to(tl.float32)
        norm_weight = tl.load(norm_weight_ptr + k, mask=k < K, other=0.0).to(tl.float32)
        normed = (norm_weight * (x * inverse_rms)).to(x_ptr.dtype.element_ty).to(tl.float32)  # GptOssRMSNorm
        w = tl.load(w_ptr + rows[:, None].to(tl.int64) * K + k[None, :], mask=row_ok[:, None] & (k < K)[None, :],
                    other=0.0)
        products += w.to(tl.float32) * normed[None, :]
    y = tl.sum(products, axis=1) + tl.load(b_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + offset + rows, y.to(out_ptr.dtype.element_ty), mask=row_ok)


def norm_linear(x, norm, linears, block_n: int = 16, block_k: int = 512, warps: int = 4):
    """x [..., K] holding one token, norm a GptOssRMSNorm, linears up to three nn.Linear with biases ->
    [linear(norm(x)) for each linear], each [..., N_i] in x's dtype."""
    K = x.shape[-1]
    if x.numel() != K or not 1 <= len(linears) <= 3 or any(layer.bias is None for layer in linears):
        raise ValueError(f"norm_linear: expected x holding one row (got {tuple(x.shape)}) and 1-3 linears with "
                         f"biases (got {len(linears)}, biases {[layer.bias is not None for layer in linears]})")
    sizes = [layer.out_features for layer in linears]
    out = torch.empty(*x.shape[:-1], sum(sizes), dtype=x.dtype, device=x.device)
    arguments = []
    for layer, size in zip(linears + [linears[0]] * (3 - len(linears)), sizes + [0] * (3 - len(linears))):
        arguments += [layer.weight, layer.bias, size]  # a missing projection: zero rows, no programs
    grid = (sum(triton.cdiv(size, block_n) for size in sizes),)
    _norm_linear_kernel[grid](x, norm.weight, norm.eps, *arguments, out, K, BLOCK_N=block_n, BLOCK_K=block_k,
                              num_warps=warps)
    return list(out.split(sizes, dim=-1))
