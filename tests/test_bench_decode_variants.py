"""scripts/bench_decode_variants.py on the CPU: what it can check without a GPU (the timing itself needs one)."""

import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import bench_decode_variants as variants  # noqa: E402


def test_an_unknown_variant_is_refused_in_one_line_naming_it():
    run = subprocess.run([sys.executable, "scripts/bench_decode_variants.py", "--variants", "base", "fast+turbo"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert "'fast+turbo' has unknown ['fast', 'turbo']" in run.stderr.strip().splitlines()[-1]


def test_linear_8_rows_takes_the_reduction_up_to_8_rows_only(monkeypatch):
    from gptoss_model import fast

    monkeypatch.setattr(fast, "REDUCTION_ROWS", 1)
    variants.apply("linear-8-rows")
    assert fast.REDUCTION_ROWS == 8
    linear = fast.linear
    compiled = torch.compile(linear, backend="aot_eager")
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 64, generator=generator).bfloat16()
    bias = torch.randn(48, generator=generator).bfloat16()
    for rows in (1, 8, 9):
        x = torch.randn(rows, 64, generator=generator).bfloat16()
        want = F.linear(x, weight, bias)
        reduction = ((x.float()[:, None, :] * weight.float()).sum(-1) + bias.float()).to(torch.bfloat16)
        got = compiled(x, weight, bias)
        assert torch.equal(got, reduction if rows <= 8 else want)
        assert torch.allclose(got.float(), want.float(), atol=0.05, rtol=0.02)
    assert torch.equal(linear(x, weight, bias), F.linear(x, weight, bias))  # not compiling: F.linear


def test_inductor_tuning_is_an_environment_switch_for_the_child():
    assert variants.environment("inductor-tuned+linear-8-rows")["TORCHINDUCTOR_COORDINATE_DESCENT_TUNING"] == "1"
    assert "TORCHINDUCTOR_COORDINATE_DESCENT_TUNING" not in variants.environment("linear-8-rows")


def test_qkv_inductor_puts_back_the_readable_projections():
    from gptoss_model import GPTOss_Small, GPTOssModelFull, fast

    tree_version = fast._attention_inputs
    try:
        variants.apply("qkv-inductor")
        assert fast._attention_inputs is variants.attention_inputs_by_inductor
        model = GPTOssModelFull(GPTOss_Small(implementation="fast")).eval()
        layer = model.model.layers[0]
        x = torch.randn(1, 1, model.config.hidden_size)
        position_embeddings = model.model.rotary_emb(torch.tensor([[5]]), torch.float32)
        got = fast._attention_inputs(layer, x, position_embeddings)
        want = layer.self_attn.project(layer.input_layernorm(x), position_embeddings)
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    finally:
        fast._attention_inputs = tree_version


def test_attention_inductor_puts_back_the_readable_one_token_attention():
    from gptoss_model import GPTOss_Small, GPTOssModelFull, fast

    tree_version = fast._one_token_attention
    try:
        variants.apply("attention-inductor")
        assert fast._one_token_attention is variants.attention_by_inductor
        attention = GPTOssModelFull(GPTOss_Small(implementation="fast")).model.layers[0].self_attn
        attention.sinks.data.normal_()
        generator = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(2, n, length, 32, generator=generator) for n, length in ((8, 1), (2, 9), (2, 9)))
        keep = torch.rand(2, 1, 1, 9, generator=generator) > 0.3
        with torch.no_grad():
            got = fast._one_token_attention(attention, q, k, v, keep)
        want = fast.one_token_attention(q, k, v, attention.sinks, keep, attention.scaling)
        assert torch.equal(got, want)
    finally:
        fast._one_token_attention = tree_version


def test_attention_matmul_8_uses_cublas_for_several_sequences_only():
    from gptoss_model import fast

    calls = []
    small_matmul = variants.matmul_for_batches(lambda a, b: calls.append(a.shape) or torch.matmul(a, b))
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 8):
        q = torch.randn(batch, 8, 8, 64, generator=generator)
        k = torch.randn(batch, 8, 64, 40, generator=generator)
        assert torch.allclose(small_matmul(q, k), torch.matmul(q, k))
    assert calls == [(1, 8, 8, 64)]  # batch 8 went to torch.matmul directly
    assert fast._small_matmul.__name__ == "_small_matmul"  # building the variant patches nothing


def test_o_proj_kernel_and_rows_kernel_switch_the_norm_linear_launches_on():
    from gptoss_model import fast

    saved = fast.NORM_LINEAR_O_PROJ, fast.NORM_LINEAR_ROWS
    try:
        assert saved == (False, 1)  # the tree: one row's q/k/v only
        variants.apply("o-proj-kernel+rows-kernel")
        assert (fast.NORM_LINEAR_O_PROJ, fast.NORM_LINEAR_ROWS) == (True, 16)
    finally:
        fast.NORM_LINEAR_O_PROJ, fast.NORM_LINEAR_ROWS = saved


def test_fragment_variants_switch_the_sixth_session_kernels():
    from gptoss_model import fast
    from gptoss_model.kernels import mxfp4_moe, norm_linear

    from gptoss_model.kernels import mxfp4_dequantize, mxfp4_fragments

    def switches():
        return (fast.FRAGMENT_PROJECTIONS, norm_linear.FRAGMENTS, mxfp4_moe.FRAGMENTS, mxfp4_fragments.SORTED_WARPS,
                mxfp4_fragments.PREFETCH, mxfp4_fragments.MAX_REGISTERS, mxfp4_dequantize.DEQUANTIZE_ROWS)

    saved = switches()
    try:  # the tree: the experts' fragments on, the projections' off
        assert saved == (False, False, True, 2, True, None, 7168)
        variants.apply("fragment-projections+no-fragment-experts+experts-4-warps+experts-one-wave")
        assert switches() == (True, True, False, 4, False, 40, 7168)
        variants.apply("tiled-prefill")
        assert switches()[6:] == (None,)
        assert mxfp4_fragments.ONE_MULTIPLY
        variants.apply("experts-two-multiplies")
        assert not mxfp4_fragments.ONE_MULTIPLY
    finally:
        mxfp4_fragments.ONE_MULTIPLY = True
        (fast.FRAGMENT_PROJECTIONS, norm_linear.FRAGMENTS, mxfp4_moe.FRAGMENTS, mxfp4_fragments.SORTED_WARPS,
         mxfp4_fragments.PREFETCH, mxfp4_fragments.MAX_REGISTERS, mxfp4_dequantize.DEQUANTIZE_ROWS) = saved


def test_combo_kernels_and_aggressive_fusion_are_inductor_switches():
    import torch._inductor.config as inductor_config

    saved = inductor_config.combo_kernels, inductor_config.aggressive_fusion
    try:
        inductor_config.combo_kernels = inductor_config.aggressive_fusion = False
        variants.apply("combo-kernels")
        assert (inductor_config.combo_kernels, inductor_config.aggressive_fusion) == (True, False)
        variants.apply("aggressive-fusion")
        assert inductor_config.aggressive_fusion is True
    finally:
        inductor_config.combo_kernels, inductor_config.aggressive_fusion = saved
    assert not [variant for variant in variants.VARIANTS if variants.unknown_parts(variant)]  # the default run
