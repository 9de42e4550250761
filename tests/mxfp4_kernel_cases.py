"""Cases for the fused MXFP4 Triton kernel (gptoss_model/kernels/mxfp4_moe.py) against dequantize-then-matmul.
Collected through tests/test_mxfp4_kernels.py: in a child process under Triton's CPU interpreter without CUDA
(the interpreter must be switched on before triton is first imported), directly, compiled, on CUDA."""

import importlib
import os

import pytest
import torch

pytest.importorskip("triton")

from gptoss_model.model import clamped_swiglu  # noqa: E402
from gptoss_model.mxfp4_experts import MXFP4Experts, dequantize, fill_random_  # noqa: E402
from gptoss_model.config import GPTOss_Small  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run through tests/test_mxfp4_kernels.py (needs TRITON_INTERPRET=1 before triton is imported)",
                allow_module_level=True)

km = importlib.import_module("gptoss_model.kernels.mxfp4_moe")


def packed(E, N, K, low=118, high=123, seed=0):
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (E, N, K // 32, 16), dtype=torch.uint8, generator=g)
    scales = torch.randint(low, high, (E, N, K // 32), dtype=torch.uint8, generator=g)
    return blocks.to(DEVICE), scales.to(DEVICE)


# every way the kernel can be cut (gptoss_model/kernels/mxfp4_moe.py, TileConfig): the tuned default of each kind
# and the variants scripts/bench_mxfp4_kernels.py sweeps (float16 decoding, split input columns, tl.dot_scaled)
VARIANTS = [
    ("one_row", None), ("small", None), ("large", None),
    ("one_row", km.TileConfig(1, 32, 64, 4, 3, split_k=3, decode="f16")),
    ("one_row", km.TileConfig(1, 16, 64, 2, 2, split_k=2)),
    ("one_row", km.TileConfig(1, 64, 128, 4, 3, decode="f16")),
    ("small", km.TileConfig(16, 32, 64, 4, 3, decode="f16")),
    ("small", km.TileConfig(16, 32, 64, 4, 3, split_k=3)),  # tensor-core tiles with split input columns
    ("large", km.TileConfig(32, 64, 64, 4, 3, decode="f16")),
    ("small", km.TileConfig(16, 32, 64, 4, 3, decode="scaled")),  # bf16 only; float32 falls back to "bits"
    # inline PTX: on CUDA only (the interpreter runs them as "f16"); bf16 only (float32 falls back to "bits")
    ("one_row", km.TileConfig(1, 32, 128, 4, 3, decode="pairs")),
    ("one_row", km.TileConfig(16, 32, 64, 4, 3, decode="pairs")),  # one-row tiles on the tensor cores
    ("small", km.TileConfig(16, 32, 64, 4, 3, decode="pairs")),
    ("large", km.TileConfig(32, 64, 64, 4, 3, decode="pairs")),
]
VARIANT_IDS = [f"{kind}-{tile.split_k}-{tile.decode}-{tile.block_k}" if tile else kind for kind, tile in VARIANTS]


def use_variant(variant, monkeypatch) -> str:
    kind, tile = variant
    if tile is not None:
        monkeypatch.setitem(km.CONFIGS, kind, tile)
    return kind


@pytest.fixture(params=VARIANTS, ids=VARIANT_IDS)
def config(request, monkeypatch):
    return use_variant(request.param, monkeypatch)


TILED = [(v, i) for v, i in zip(VARIANTS, VARIANT_IDS) if v[0] != "one_row"]  # one-row tiles hold one row each


@pytest.fixture(params=[v for v, _ in TILED], ids=[i for _, i in TILED])
def tiled_config(request, monkeypatch):
    return use_variant(request.param, monkeypatch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_decodes_every_scale_byte_exactly(config, dtype):
    """x = one-hot rows picks single weight columns: out must be the exact dequantized values (bf16 holds every
    one of them too). The 128 × 3 scale bytes run through 0..252 (above, 6·2^(s-127) overflows and the one-hot
    product's 0·inf is NaN); in bf16 from 3, as bytes 0..2 make bf16 subnormals, which the interpreter's float32 ->
    bf16 rounding flushes to zero. The six columns cover both nibbles and all three groups."""
    K, N = 96, 128
    blocks, _ = packed(2, N, K)
    lowest = 3 if dtype == torch.bfloat16 else 0
    scales = (lowest + torch.arange(2 * N * 3) % (253 - lowest)).to(torch.uint8).reshape(2, N, 3).to(DEVICE)
    columns = [0, 1, 33, 34, 70, 95]
    x = torch.eye(K, device=DEVICE, dtype=dtype)[columns]
    rows = len(columns)
    tiles = km.tiles_by_expert(torch.tensor([0, rows], dtype=torch.int32, device=DEVICE), rows, km.CONFIGS[config][0])
    if config == "one_row":  # one tile per row
        tiles = (torch.ones(rows, dtype=torch.int32, device=DEVICE), torch.arange(rows, dtype=torch.int32, device=DEVICE),
                 torch.arange(1, rows + 1, dtype=torch.int32, device=DEVICE))
    out = km.moe_mxfp4_linear(x, blocks, scales, torch.zeros(2, N, device=DEVICE, dtype=dtype), tiles, config=config,
                              row_experts=torch.ones(rows, dtype=torch.int32, device=DEVICE))
    want = dequantize(blocks[1], scales[1], dtype)[:, columns].T  # [rows, N]
    assert out.dtype == dtype and torch.equal(out, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_rows_with_gather_and_swiglu(dtype, tiled_config):
    config = tiled_config
    E, N, K, alpha, limit = 3, 128, 160, 1.702, 7.0  # K = 5 blocks: not a multiple of any BLOCK_K
    blocks, scales = packed(E, N, K, low=124, high=129)
    bias = torch.randn(E, N, device=DEVICE).to(dtype)
    x = torch.randn(7, K, device=DEVICE).to(dtype)
    expert_of_row = torch.tensor([0, 0, 0, 2, 2], device=DEVICE)  # expert 1 chosen by nobody
    x_rows = torch.tensor([4, 0, 6, 6, 1], dtype=torch.int32, device=DEVICE)
    ends = torch.tensor([3, 3, 5], dtype=torch.int32, device=DEVICE)
    tiles = km.tiles_by_expert(ends, 5, km.CONFIGS[config][0])
    out = km.moe_mxfp4_linear(x, blocks, scales, bias, tiles, x_rows, (alpha, limit), config, expert_of_row)
    W = dequantize(blocks, scales, torch.float32)
    h = torch.stack([x[r].float() @ W[e].T for r, e in zip(x_rows.tolist(), expert_of_row.tolist())])
    h = h.to(dtype) + bias[expert_of_row]
    want = clamped_swiglu(h, alpha, limit)  # [5, N/2]
    # float32: the dot sums in another order; bf16: the eager SwiGLU rounds after every step, the kernel once
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    assert out.shape == want.shape
    assert torch.allclose(out.float(), want.float(), atol=tol * want.abs().max().item(), rtol=tol)


def test_tiles_cover_each_expert_run_once():
    ends = torch.tensor([0, 5, 5, 40, 41], dtype=torch.int32, device=DEVICE)
    expert, start, end = (t.cpu() for t in km.tiles_by_expert(ends, 41, 16))
    used = start < end
    covered = torch.cat([torch.arange(s, e) for s, e in zip(start[used].tolist(), end[used].tolist())])
    assert torch.equal(covered, torch.arange(41))
    assert expert[used].tolist() == [1, 3, 3, 3, 4] and ((end - start)[used] <= 16).all()


@pytest.mark.parametrize("tokens", [1, 3, 40])
def test_packed_experts_forward_equals_selected_dequantization(tokens, config):
    config = GPTOss_Small(hidden_size=64, intermediate_size=96, num_local_experts=4)
    experts = fill_random_(MXFP4Experts(config, device=DEVICE), torch.Generator(DEVICE).manual_seed(1))
    experts.gate_up_proj_bias.data.normal_(0, 4)  # exercise the SwiGLU clamps
    x = torch.randn(tokens, 64, device=DEVICE) * 40
    weights, indices = torch.topk(torch.randn(tokens, 4, device=DEVICE), 2)
    weights = weights.softmax(-1)
    want = experts.forward_selected(x, weights, indices)
    got = km.packed_experts_forward(experts, x, weights, indices)
    assert torch.allclose(got, want, atol=1e-4 * want.abs().max().item(), rtol=1e-4)


def test_e8m0_bf16_builds_every_scale_exactly():
    """_e8m0_bf16 (the scales of the bf16 tensor-core tiles, built as bits) for all 256 bytes: 2^(byte - 127) exactly,
    byte 0 the bf16 subnormal 2^-127, byte 255 above float32's range as E8M0 allows (2^128 = inf in bf16)."""
    import triton
    import triton.language as tl

    @triton.jit
    def scales_kernel(bytes_ptr, out_ptr):
        offsets = tl.arange(0, 256)
        tl.store(out_ptr + offsets, km._e8m0_bf16(tl.load(bytes_ptr + offsets)))

    out = torch.empty(256, dtype=torch.bfloat16, device=DEVICE)
    scales_kernel[(1,)](torch.arange(256, dtype=torch.uint8, device=DEVICE), out)
    want = torch.pow(2.0, torch.arange(256, dtype=torch.float64) - 127)
    assert torch.equal(out.view(torch.int16).cpu(), want.to(torch.bfloat16).view(torch.int16)), out


def test_split_k_over_sorted_rows_needs_each_rows_expert():
    blocks, scales = packed(2, 32, 64)
    tiles = km.tiles_by_expert(torch.tensor([0, 2], dtype=torch.int32, device=DEVICE), 2, 16)
    with pytest.raises(ValueError, match="needs row_experts"):
        km.moe_mxfp4_linear(torch.zeros(2, 64, device=DEVICE), blocks, scales, torch.zeros(2, 32, device=DEVICE),
                            tiles, config=km.TileConfig(16, 32, 64, 4, 3, split_k=2))


kf = importlib.import_module("gptoss_model.kernels.mxfp4_fragments")


@pytest.mark.parametrize("K", [96, 288])
@pytest.mark.parametrize("row_tiles", [True, False], ids=["row-tiles", "sorted-tiles"])
@pytest.mark.parametrize("highest", [252, 128], ids=["two-multiplies", "one-multiply"])
def test_fragments_decode_every_scale_byte_exactly(row_tiles, K, highest):
    """mxfp4_fragments' kernel with one-hot x rows: each output is a single weight, exactly (bf16 holds them all).
    Scale bytes up to 252 as in test_kernel_decodes_every_scale_byte_exactly (above 128: the decoding with two
    multiplies), or up to 128 (the one-multiply decoding); from 0 on CUDA, from 3 under the interpreter, whose
    float32 -> bf16 rounding flushes the subnormals of bytes 0..2. K = 96 leaves the last of each 4 threads'
    32-column ranges outside the row (masked); the columns cover both nibbles, all 3 blocks and all 4 k-steps of a
    half. K = 288: columns in each warp's 128-column share of a step, the third warp's ending part-way."""
    N = 128
    lowest = 3 if DEVICE == "cpu" else 0
    blocks, _ = packed(2, N, K)
    scales = (lowest + torch.arange(2 * N * (K // 32)) % (highest + 1 - lowest)).to(torch.uint8)
    scales = scales.reshape(2, N, K // 32).to(DEVICE)
    columns = [0, 1, 6, 33, 34, 47, 70, 95] if K == 96 else [0, 33, 127, 128, 150, 200, 255, 287]
    x = torch.eye(K, device=DEVICE, dtype=torch.bfloat16)[columns]
    rows = len(columns)
    bias = torch.zeros(2, N, device=DEVICE, dtype=torch.bfloat16)
    if row_tiles:  # one row a tile, each its own x row: only slot 0 of a fragment's 8
        out = kf.moe_mxfp4_fragments(x, blocks, scales, bias, torch.ones(rows, dtype=torch.int32, device=DEVICE))
    else:  # one tile of all 8 rows: every slot
        tiles = km.tiles_by_expert(torch.tensor([0, rows], dtype=torch.int32, device=DEVICE), rows, 8)
        out = kf.moe_mxfp4_fragments(x, blocks, scales, bias, tiles)
    want = dequantize(blocks[1], scales[1], torch.bfloat16)[:, columns].T  # [rows, N]
    assert out.dtype == torch.bfloat16 and torch.equal(out, want)


@pytest.mark.parametrize("warps", [1, 2, 4])
def test_fragments_grouped_rows_with_gather_and_swiglu(warps):
    E, N, K, alpha, limit = 3, 64, 416, 1.702, 7.0  # K = 13 blocks: warps' column steps end part-way
    blocks, scales = packed(E, N, K, low=124, high=129)
    bias = torch.randn(E, N, device=DEVICE).to(torch.bfloat16)
    x = torch.randn(12, K, device=DEVICE).to(torch.bfloat16)
    expert_of_row = torch.tensor([0] * 8 + [0, 0, 2, 2], device=DEVICE)  # 10 rows of expert 0: a full tile of 8
    x_rows = torch.tensor([4, 0, 6, 6, 1, 11, 3, 2, 9, 10, 5, 7], dtype=torch.int32, device=DEVICE)
    ends = torch.tensor([10, 10, 12], dtype=torch.int32, device=DEVICE)  # expert 1 chosen by nobody
    tiles = km.tiles_by_expert(ends, 12, 8)
    out = kf.moe_mxfp4_fragments(x, blocks, scales, bias, tiles, x_rows, (alpha, limit), warps)
    W = dequantize(blocks, scales, torch.float32)
    h = torch.stack([x[r].float() @ W[e].T for r, e in zip(x_rows.tolist(), expert_of_row.tolist())])
    want = clamped_swiglu(h.to(torch.bfloat16) + bias[expert_of_row], alpha, limit)  # [12, N/2]
    assert out.shape == want.shape
    assert torch.allclose(out.float(), want.float(), atol=2e-2 * want.abs().max().item(), rtol=2e-2)
    down_blocks, down_scales = packed(E, K, N, low=124, high=129)  # the down projection's shape: N inputs, K outputs
    down_bias = torch.randn(E, K, device=DEVICE).to(torch.bfloat16)
    down = kf.moe_mxfp4_fragments(x[:, :N], down_blocks, down_scales, down_bias, tiles, x_rows, None, warps)
    W = dequantize(down_blocks, down_scales, torch.float32)
    h = torch.stack([x[r, :N].float() @ W[e].T for r, e in zip(x_rows.tolist(), expert_of_row.tolist())])
    want = h.to(torch.bfloat16) + down_bias[expert_of_row]
    assert down.shape == want.shape
    assert torch.allclose(down.float(), want.float(), atol=1e-2 * want.abs().max().item(), rtol=1e-2)


def test_fragments_row_tiles_with_swiglu_and_bias():
    """Batch-1 decoding's row tiles (x's one row shared by every row), its epilogue: the sums rounded, biased and
    through the clamped SwiGLU, against dequantize-then-matmul."""
    E, N, K, alpha, limit = 3, 64, 416, 1.702, 7.0  # K = 13 blocks: warps' column steps end part-way
    blocks, scales = packed(E, N, K, low=124, high=129)
    bias = (torch.randn(E, N, device=DEVICE) * 4).to(torch.bfloat16)  # exercise the clamps
    x = (torch.randn(1, K, device=DEVICE) * 2).to(torch.bfloat16)
    experts = torch.tensor([2, 0, 1, 2], device=DEVICE)
    W = dequantize(blocks, scales, torch.float32)
    h = torch.stack([x[0].float() @ W[e].T for e in experts.tolist()])
    want = clamped_swiglu(h.to(torch.bfloat16) + bias[experts], alpha, limit)  # [4, N/2]
    out = kf.moe_mxfp4_fragments(x, blocks, scales, bias, experts, None, (alpha, limit))
    assert out.shape == want.shape and out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), want.float(), atol=2e-2 * want.abs().max().item(), rtol=2e-2)
    down = kf.moe_mxfp4_fragments(x, blocks, scales, bias, experts)
    assert torch.allclose(down.float(), (h.to(torch.bfloat16) + bias[experts]).float(),
                          atol=1e-2 * h.abs().max().item(), rtol=1e-2)


@pytest.mark.parametrize("tokens", [1, 3])
def test_packed_experts_forward_through_fragments_equals_selected_dequantization(tokens, monkeypatch):
    config = GPTOss_Small(hidden_size=64, intermediate_size=96, num_local_experts=4)
    experts = fill_random_(MXFP4Experts(config, device=DEVICE, dtype=torch.bfloat16),
                           torch.Generator(DEVICE).manual_seed(1))
    experts.gate_up_proj_bias.data.normal_(0, 4)  # exercise the SwiGLU clamps
    x = (torch.randn(tokens, 64, device=DEVICE) * 4).to(torch.bfloat16)
    weights, indices = torch.topk(torch.randn(tokens, 4, device=DEVICE), 2)
    weights = weights.softmax(-1).to(torch.bfloat16)
    called, launch = [], kf.moe_mxfp4_fragments
    monkeypatch.setattr(kf, "moe_mxfp4_fragments", lambda *a, **k: called.append(k) or launch(*a, **k))
    got = km.packed_experts_forward(experts, x, weights, indices)
    assert [k["largest_scale"] for k in called] == [122, 122]  # both projections, the recorded byte: one multiply
    want = experts.forward_selected(x.float(), weights.float(), indices)
    assert torch.allclose(got.float(), want, atol=2e-2 * want.abs().max().item(), rtol=2e-2)
    experts.down_proj_scales[0, 0, 0] = 130  # above 128: noticed, so the launches take two multiplies
    km.packed_experts_forward(experts, x, weights, indices)
    assert [k["largest_scale"] for k in called[2:]] == [130, 130]


def test_fragments_refuse_float32_in_one_line():
    blocks, scales = packed(2, 32, 64)
    with pytest.raises(ValueError, match="expected bf16 x"):
        kf.moe_mxfp4_fragments(torch.zeros(1, 64, device=DEVICE), blocks, scales, torch.zeros(2, 32, device=DEVICE),
                               torch.zeros(1, dtype=torch.int32, device=DEVICE))


# ---------------------------------------------------------------------------------------------------------------
# Prefill sizes: shares of the weights dequantized by kernels/mxfp4_dequantize.py, then the grouped matmul

kd = importlib.import_module("gptoss_model.kernels.mxfp4_dequantize")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dequantize_rows_gives_the_table_for_every_scale_and_byte(dtype):
    """4,096 scale blocks: block i has scale byte i % 256 and bytes 16·(i // 256) .. +15, so every (scale byte,
    data byte) pair occurs once, 255 included (its 0.5 · 2^128 = 2^127 stays finite, 1 · 2^128 is inf). Equal,
    bit for bit, to mxfp4_experts.dequantize's table. In bf16 under the interpreter from scale byte 3 on: its
    float32 -> bf16 rounding flushes bf16 subnormals to zero (the CUDA run takes every byte)."""
    block = torch.arange(4096)
    lowest = 3 if dtype == torch.bfloat16 and DEVICE == "cpu" else 0
    scales = (block % 256).clamp(min=lowest).to(torch.uint8).reshape(2, 64, 32)
    blocks = ((16 * (block // 256))[:, None] + torch.arange(16)).to(torch.uint8).reshape(2, 64, 32, 16)
    want = dequantize(blocks, scales, dtype)  # [2, 64, 1024]
    got = kd.dequantize_rows(blocks.to(DEVICE), scales.to(DEVICE), 0, 64, dtype)
    assert got.dtype == dtype and got.shape == (2, 64, 1024)
    assert torch.equal(got.cpu().view(torch.uint8), want.view(torch.uint8))  # bits: inf and -0.0 included
    share = kd.dequantize_rows(blocks.to(DEVICE), scales.to(DEVICE), 5, 41, dtype)  # rows 5..40 of each expert
    assert torch.equal(share.cpu().view(torch.uint8), want[:, 5:41].contiguous().view(torch.uint8))


def test_dequantize_rows_refuses_rows_outside_in_one_line():
    blocks, scales = packed(2, 32, 64)
    with pytest.raises(ValueError, match=r"rows 30\.\.40 outside the experts' 32 rows"):
        kd.dequantize_rows(blocks, scales, 30, 40)


def dequantized_twin(experts, config):
    """The same experts as the dequantized model holds them: bf16 matrices from mxfp4_experts.dequantize."""
    from gptoss_model.model import GptOssExperts

    twin = GptOssExperts(config, device=DEVICE, dtype=torch.bfloat16)
    with torch.no_grad():
        for p in ("gate_up_proj", "down_proj"):
            getattr(twin, p).copy_(dequantize(getattr(experts, f"{p}_blocks"), getattr(experts, f"{p}_scales"),
                                              torch.bfloat16))
            getattr(twin, f"{p}_bias").copy_(getattr(experts, f"{p}_bias"))
    return twin


@pytest.mark.parametrize("tokens", [40, 300])
def test_prefill_path_equals_the_dequantized_models_grouped_experts(tokens, monkeypatch):
    """From DEQUANTIZE_ROWS rows on, packed experts compute what the dequantized model's fast path does
    (fast.grouped_experts on bf16 matrices dequantized by the table): here in shares of 64 output rows (gate/up's
    192 rows in 3 shares, each through the SwiGLU on its own; down's 64 in one)."""
    from gptoss_model import fast

    monkeypatch.setattr(kd, "DEQUANTIZE_ROWS", 64)
    monkeypatch.setattr(kd, "SCRATCH_ROWS", 64)
    config = GPTOss_Small(hidden_size=64, intermediate_size=96, num_local_experts=4)
    experts = fill_random_(MXFP4Experts(config, device=DEVICE, dtype=torch.bfloat16),
                           torch.Generator(DEVICE).manual_seed(2))
    with torch.no_grad():
        experts.gate_up_proj_bias.normal_(0, 4)  # exercise the SwiGLU clamps
        experts.down_proj_bias.normal_(0, 1)
    x = (torch.randn(tokens, 64, device=DEVICE) * 4).to(torch.bfloat16)
    weights, indices = torch.topk(torch.randn(tokens, 4, device=DEVICE), 2)
    weights = weights.softmax(-1).to(torch.bfloat16)
    assert kd.takes_prefill_path(x, tokens * 2) and not kd.takes_prefill_path(x.float(), tokens * 2)
    called, share = [], kd.dequantize_rows
    monkeypatch.setattr(kd, "dequantize_rows", lambda *a, **k: called.append(a[2:4]) or share(*a, **k))
    got = km.packed_experts_forward(experts, x, weights, indices)
    assert called == [(0, 64), (64, 128), (128, 192), (0, 64)]
    want = fast.grouped_experts(dequantized_twin(experts, config), x, weights, indices)
    assert got.dtype == torch.bfloat16 and got.shape == (tokens, 64)
    assert torch.allclose(got.float(), want.float(), atol=1e-2 * want.abs().max().item(), rtol=1e-2)
    readable = experts.forward_selected(x.float(), weights.float(), indices)  # float32, each expert dequantized
    assert torch.allclose(got.float(), readable, atol=3e-2 * readable.abs().max().item(), rtol=3e-2)
    monkeypatch.setattr(kd, "SCRATCH_ROWS", 63)  # would put a gate row and its up row in different shares
    with pytest.raises(ValueError, match="SCRATCH_ROWS = 63: expected an even number of rows"):
        km.packed_experts_forward(experts, x, weights, indices)


def test_access_pattern_bench_reads_each_weight_word_once():
    """scripts/bench_expert_access_pattern.py compares ways of reading the same bytes: its contiguous and fragments
    patterns must each read every word of the chosen experts' blocks exactly once (the xor of what all programs read
    equals the xor of those words), and the fragments kernel's own loads must run in its grid."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import bench_expert_access_pattern as access

    E, N, K = 4, 32, 416  # 13 blocks: the step's last columns masked
    blocks, scales = (t.to(DEVICE) for t in packed(E, N, K))
    x = torch.randn(1, K, device=DEVICE).to(torch.bfloat16)
    chosen = torch.tensor([2, 0], device=DEVICE)
    want = access.xor_of_words(blocks[chosen.cpu()].cpu())
    for pattern in ("contiguous", "fragments"):
        per_program = access.read(pattern, blocks, scales, x, chosen)
        assert per_program.shape == (2, N // 16) and per_program.dtype == torch.int32
        total = 0
        for value in per_program.reshape(-1).tolist():
            total ^= value
        assert total == want, pattern
    assert access.read("fragments-all", blocks, scales, x, chosen).shape == (2, N // 16)
