"""Cases for gptoss_model/kernels/norm_linear.py against the readable RMSNorm then F.linear. Collected through
tests/test_mxfp4_kernels.py: under Triton's CPU interpreter in a child process without CUDA, compiled on CUDA."""

import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("triton")

from gptoss_model.kernels import norm_linear as norm_linear_module  # noqa: E402
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


SHAPES = [(1, (64, 16, 16), 8, 64, True), (1, (40,), 16, 128, True), (1, (24, 8), 16, 32, False),
          (2, (64, 16, 16), 16, 64, True), (8, (40,), 16, 32, False), (16, (24, 8), 16, 64, True)]
# bf16 up to 8 rows runs through the fragments kernel, or (switched off) the kernels before it; the rest never
# takes fragments
CASES = [(dtype, *shape, fragments) for dtype in (torch.bfloat16, torch.float32) for shape in SHAPES
         for fragments in ((True, False) if dtype == torch.bfloat16 and shape[0] <= 8 else (False,))]


@pytest.mark.parametrize("dtype, rows, sizes, block_n, block_k, with_norm, fragments", CASES)
def test_norm_then_projections_as_the_readable_path(dtype, rows, sizes, block_n, block_k, with_norm, fragments,
                                                    monkeypatch):
    """K = 160 (not a multiple of the blocks), output sizes not multiples of block_n, one to three projections, one
    row (the float32 register path) or several (the tensor-core tile), bf16 up to 8 rows through the mma fragments
    (or, switched off, as float32), with the RMSNorm or without: the readable RMSNorm's output (rounded to the
    dtype) times each weight, float32 sums, one rounding."""
    monkeypatch.setattr(norm_linear_module, "FRAGMENTS", fragments)
    K = 160
    norm, linears = layers(K, sizes, dtype)
    x = (torch.randn(rows, 1, K, device=DEVICE) * 30).to(dtype)
    outs = norm_linear(x, norm if with_norm else None, linears, block_n=block_n, block_k=block_k)
    x32 = x.float()
    normed = rounded(norm.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm.eps)), dtype)
    if not INTERPRETED:
        assert torch.equal(normed, norm(x))  # the recipe is GptOssRMSNorm's
    normed = normed if with_norm else x
    for out, linear in zip(outs, linears):
        want = rounded(normed.float() @ linear.weight.float().T + linear.bias.float(), dtype)
        assert out.shape == (rows, 1, linear.out_features) and out.dtype == dtype
        # float32 sums in another order: at most one rounding step of the output apart, and nearly all equal
        tolerance = 1e-5 if dtype == torch.float32 else 2**-7
        assert torch.allclose(out.float(), want.float(), rtol=tolerance, atol=tolerance * want.abs().max().item())
        if dtype == torch.bfloat16:
            assert (out == want).float().mean().item() >= 0.9
        readable = F.linear(norm(x) if with_norm else x, linear.weight, linear.bias)
        assert torch.allclose(out.float(), readable.float(), rtol=2**-6, atol=2**-6 * want.abs().max().item())


def test_refuses_more_than_16_rows_or_a_missing_bias():
    norm, linears = layers(32, (8,), torch.float32)
    with pytest.raises(ValueError, match=r"expected x holding 1 to 16 rows \(got \(17, 32\)\)"):
        norm_linear(torch.zeros(17, 32, device=DEVICE), norm, linears)
    no_bias = nn.Linear(32, 8, bias=False, device=DEVICE)
    with pytest.raises(ValueError, match="biases"):
        norm_linear(torch.zeros(1, 32, device=DEVICE), norm, [no_bias])


@pytest.mark.parametrize("fragments", [True, False], ids=["fragments", "float32-kernels"])
@pytest.mark.parametrize("batch", [1, 8])
def test_fast_path_launches_equal_the_readable_projections(batch, fragments, monkeypatch):
    """fast._attention_inputs_in_one_launch and fast._output_projection (what the compiled decode step runs on CUDA
    for batch 1 to 8) against GptOssAttention.project after the layer's RMSNorm and against o_proj: q and k
    rotated, v, the output projection, same shapes, within bf16 rounding; through the fragments kernel (the tree)
    or the float32 kernels (switched off in the tree: slower, still exact)."""
    from gptoss_model import GPTOss_Small, GPTOssModelFull, fast

    monkeypatch.setattr(norm_linear_module, "FRAGMENTS", fragments)
    monkeypatch.setattr(fast, "FRAGMENT_PROJECTIONS", fragments)
    if not fragments:  # the float32 kernels, o_proj and several rows included (off in the tree: slower)
        monkeypatch.setattr(fast, "NORM_LINEAR_O_PROJ", True)
        monkeypatch.setattr(fast, "NORM_LINEAR_ROWS", 16)
    torch.manual_seed(0)
    model = GPTOssModelFull(GPTOss_Small(implementation="fast"), device=DEVICE, dtype=torch.bfloat16).eval()
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.normal_(0, 0.5)
    layer = model.model.layers[1]
    attention = layer.self_attn
    x = (torch.randn(batch, 1, model.config.hidden_size, device=DEVICE) * 20).to(torch.bfloat16)
    out = torch.randn(batch, 1, attention.o_proj.in_features, device=DEVICE).to(torch.bfloat16)
    position_embeddings = model.model.rotary_emb(torch.full((batch, 1), 17, device=DEVICE), torch.bfloat16)
    with torch.no_grad():
        got = [*fast._attention_inputs_in_one_launch(layer, x, position_embeddings),
               fast._output_projection(attention, out)]
        want = [*attention.project(layer.input_layernorm(x), position_embeddings), attention.o_proj(out)]
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.allclose(a.float(), b.float(), rtol=2**-6, atol=2**-6 * b.abs().max().item())
