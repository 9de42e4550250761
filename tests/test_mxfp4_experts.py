"""Packed MXFP4 experts on the CPU (gptoss_model/mxfp4_experts.py, load_model(experts="mxfp4")): the selected
experts are dequantized exactly, so the packed model equals the dequantized one within float32 rounding."""

import math

import pytest
import torch

import gptoss_convert
from gptoss_convert.errors import InputError
from gptoss_model.mxfp4_experts import MXFP4Experts, dequantize, packed_bytes

# E2M1 written out independently of both implementations: sign, exponent (bias 1), mantissa; exponent 0 subnormal
E2M1 = [(-1) ** (c >> 3) * (((c >> 1) & 3) and 2.0 ** (((c >> 1) & 3) - 1) * (1 + (c & 1) / 2) or (c & 1) / 2)
        for c in range(16)]


@pytest.fixture(scope="module")
def pair():
    return gptoss_convert.load_model("tiny"), gptoss_convert.load_model("tiny", experts="mxfp4")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dequantize_every_scale_and_byte_exactly(dtype):
    scale, byte = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    blocks = byte.reshape(256, 16, 16).to(torch.uint8)[:, :, None, :].expand(256, 16, 1, 16).reshape(256, 16, 1, 16)
    scales = scale.reshape(256, 16, 16)[:, :, 0:1].to(torch.uint8)  # each row of 16 bytes shares one scale byte
    got = dequantize(blocks, scales, dtype).double()  # [256, 16, 32]
    for s in (0, 1, 100, 127, 200, 254, 255):
        for j in (0, 5, 15):
            row = byte.reshape(256, 16, 16)[s, j]
            want = torch.tensor([E2M1[v & 15] * math.ldexp(1.0, s - 127) for b in row.tolist() for v in (b, b >> 4)],
                                dtype=torch.float64).to(dtype).double()
            assert torch.equal(got[s, j].nan_to_num(posinf=1e300, neginf=-1e300),
                               want.nan_to_num(posinf=1e300, neginf=-1e300)), (s, j)


def test_packed_model_holds_bytes_not_matrices(pair):
    dense, packed = pair
    experts = packed.model.layers[0].mlp.experts
    assert isinstance(experts, MXFP4Experts)
    assert experts.gate_up_proj_blocks.dtype == torch.uint8 and not hasattr(experts, "gate_up_proj")
    dense_expert_bytes = sum(p.numel() * 4 for n, p in dense.named_parameters() if n.endswith(("up_proj", "down_proj")))
    saved = packed_bytes(dense) - packed_bytes(packed)
    assert saved == pytest.approx(dense_expert_bytes * (1 - 4.25 / 32), rel=1e-6)


def test_packed_logits_and_64_greedy_steps_equal_dequantized(pair):
    dense, packed = pair
    torch.manual_seed(0)
    ids = torch.randint(0, dense.config.vocab_size, (2, 40))
    with torch.no_grad():
        want, got = dense(input_ids=ids), packed(input_ids=ids)
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()
    assert torch.equal(packed.generate(ids[:, :6], 64), dense.generate(ids[:, :6], 64))


def test_fast_implementation_uses_packed_experts_too(pair):
    dense, packed = pair
    ids = torch.randint(0, dense.config.vocab_size, (1, 12))
    with torch.no_grad():
        want = dense(input_ids=ids)
        got = packed.set_implementation("fast")(input_ids=ids)
    packed.set_implementation("eager")
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


def test_dense_checkpoint_is_requantized_exactly(pair, tmp_path):
    dense, _ = pair
    dense.save_pretrained(tmp_path / "ours")  # our own format: experts stored dense, dequantized from MXFP4
    reloaded = gptoss_convert.load_model(tmp_path / "ours", experts="mxfp4")
    for layer, dense_layer in zip(reloaded.model.layers, dense.model.layers):
        for e in range(dense.config.num_local_experts):  # the bytes may differ (a block has several encodings)
            gate_up, down = layer.mlp.experts.dequantized(e, torch.float32)
            assert torch.equal(gate_up, dense_layer.mlp.experts.gate_up_proj[e])
            assert torch.equal(down, dense_layer.mlp.experts.down_proj[e])


def test_unknown_experts_option_is_a_usage_error():
    with pytest.raises(InputError, match="experts='int4'"):
        gptoss_convert.load_model("tiny", experts="int4")


def test_loaded_experts_record_their_largest_scale_byte(pair):
    """The CUDA kernels' one-multiply decoding needs every scale byte <= 128 (kernels/mxfp4_fragments.py): loading
    records each layer's largest byte, the one in its buffers."""
    _, packed = pair
    for layer in packed.model.layers:
        experts = layer.mlp.experts
        want = max(int(experts.gate_up_proj_scales.max()), int(experts.down_proj_scales.max()))
        assert experts.largest_scale == want and experts.largest_scale_byte() == want


def test_largest_scale_byte_follows_load_state_dict_and_writes_in_place():
    from gptoss_model import GPTOss_Small
    from gptoss_model.mxfp4_experts import fill_random_

    config = GPTOss_Small(hidden_size=64, intermediate_size=96, num_local_experts=4)
    assert MXFP4Experts(config, device="meta").largest_scale is None  # unknown: the decoding for any byte
    source = fill_random_(MXFP4Experts(config), torch.Generator().manual_seed(0))
    assert source.largest_scale == 122  # fill_random_'s bytes are 118..122
    experts = MXFP4Experts(config)
    source.down_proj_scales[1, 2, 0] = 129
    experts.load_state_dict(source.state_dict())
    assert experts.largest_scale == 129
    experts.down_proj_scales[1, 2, 0] = 7  # written in place: noticed at the next question, outside compiled code
    assert experts.largest_scale_byte() == 122
    experts.gate_up_proj_scales = torch.full_like(experts.gate_up_proj_scales, 200)  # a new tensor: noticed too
    assert experts.largest_scale_byte() == 200
