"""Cases for gptoss_model/kernels/norm_linear.py against the readable RMSNorm then F.linear. Collected through
tests/test_mxfp4_kernels.py: under Triton's CPU interpreter in a child process without CUDA, compiled on CUDA."""

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("triton")

from gptoss_model.kernels.norm_linear import norm_linear  # noqa: E402
from gptoss_model.model import GptOssRMSNorm  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run through tests/test_mxfp4_kernels.py (needs TRITON_INTERPRET=1 before triton is imported)",
                allow_module_level=True)


INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def rounded(t: torch.Tensor, dtype) -> torch.Tensor:
    """t.to(dtype) as the kernel rounds: to nearest on CUDA; Triton's interpreter converts float32 to bf16 by
    truncation (checked: 1 + 2^-8 + 2^-10 gives 1.0), so there the reference truncates too."""
    if INTERPRETED and dtype == torch.bfloat16:
        return (t.float().view(torch.int32) & -65536).view(torch.float32).to(dtype)
    return t.to(dtype)


def layers(K, sizes, dtype, seed=0):
    torch.manual_seed(seed)
    norm = GptOssRMSNorm(K, device=DEVICE, dtype=dtype)
    norm.weight.data.uniform_(0.5, 1.5)
    linears = [nn.Linear(K, n, device=DEVICE, dtype=dtype) for n in sizes]
    return norm, linears


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("sizes, block_n, block_k", [((64, 16, 16), 8, 64), ((40,), 16, 128), ((24, 8), 16, 32)])
def test_norm_then_projections_as_the_readable_path(dtype, sizes, block_n, block_k):
    """K = 160 (not a multiple of the blocks), output sizes not multiples of block_n, one to three projections:
    the readable RMSNorm's output (rounded to the dtype) times each weight, float32 sums, one rounding."""
    K = 160
    norm, linears = layers(K, sizes, dtype)
    x = (torch.randn(1, 1, K, device=DEVICE) * 30).to(dtype)
    outs = norm_linear(x, norm, linears, block_n=block_n, block_k=block_k)
    x32 = x.float()
    normed = rounded(norm.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm.eps)), dtype)
    if not INTERPRETED:
        assert torch.equal(normed, norm(x))  # the recipe is GptOssRMSNorm's
    for out, linear in zip(outs, linears):
        want = rounded(normed.float() @ linear.weight.float().T + linear.bias.float(), dtype)
        assert out.shape == (1, 1, linear.out_features) and out.dtype == dtype
        # float32 sums in another order: at most one rounding step of the output apart, and nearly all equal
        tolerance = 1e-5 if dtype == torch.float32 else 2**-7
        assert torch.allclose(out.float(), want.float(), rtol=tolerance, atol=tolerance * want.abs().max().item())
        if dtype == torch.bfloat16:
            assert (out == want).float().mean().item() >= 0.9
        readable = F.linear(norm(x), linear.weight, linear.bias)
        assert torch.allclose(out.float(), readable.float(), rtol=2**-6, atol=2**-6 * want.abs().max().item())


def test_refuses_more_than_one_row_or_a_missing_bias():
    norm, linears = layers(32, (8,), torch.float32)
    with pytest.raises(ValueError, match="one row"):
        norm_linear(torch.zeros(2, 32, device=DEVICE), norm, linears)
    no_bias = nn.Linear(32, 8, bias=False, device=DEVICE)
    with pytest.raises(ValueError, match="biases"):
        norm_linear(torch.zeros(1, 32, device=DEVICE), norm, [no_bias])


def test_fast_path_one_token_attention_inputs_equal_the_readable_projection():
    """fast._one_token_attention_inputs (what the compiled decode step runs on CUDA for one token) against
    GptOssAttention.project after the layer's RMSNorm: q and k rotated, v, same shapes, within bf16 rounding."""
    from gptoss_model import GPTOss_Small, GPTOssModelFull, fast

    torch.manual_seed(0)
    model = GPTOssModelFull(GPTOss_Small(implementation="fast"), device=DEVICE, dtype=torch.bfloat16).eval()
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.normal_(0, 0.5)
    layer = model.model.layers[1]
    x = (torch.randn(1, 1, model.config.hidden_size, device=DEVICE) * 20).to(torch.bfloat16)
    position_embeddings = model.model.rotary_emb(torch.tensor([[17]], device=DEVICE), torch.bfloat16)
    with torch.no_grad():
        got = fast._one_token_attention_inputs(layer, x, position_embeddings)
        want = layer.self_attn.project(layer.input_layernorm(x), position_embeddings)
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.allclose(a.float(), b.float(), rtol=2**-6, atol=2**-6 * b.abs().max().item())

