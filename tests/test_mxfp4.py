"""gptoss_convert.mxfp4: dequantize against Transformers' own dequantizer, against the spec's formula (written here
independently, from the E2M1 bit layout, in float64) and against dequantize_reference; every error path; quantize's
known encodings, rounding and round-trip properties."""

import inspect
import math

import numpy as np
import pytest
import torch

from gptoss_convert import mxfp4
from gptoss_convert.errors import GptossConvertError, InputError, IntegrityError
from gptoss_convert.mxfp4 import dequantize, dequantize_reference, quantize

SHAPES = [(2, 3, 5), (1, 1, 1), (3, 7, 90), (4, 33, 2)]  # blocks shape without the trailing 16: E, out, G


def random_mxfp4(shape, scale_low=0, scale_high=254, seed=0):
    """Random blocks [*shape, 16] (every byte value) and scales [*shape] in scale_low..scale_high inclusive."""
    gen = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (*shape, 16), dtype=torch.uint8, generator=gen)
    scales = torch.randint(scale_low, scale_high + 1, tuple(shape), dtype=torch.uint8, generator=gen)
    return blocks, scales


def spec_formula(blocks, scales, dtype):
    """The MXFP4 format from its bit layout (OpenAI's gpt_oss/torch/weights.py), in float64: byte j = element 2j (low nibble) | element 2j+1 << 4;
    E2M1 = sign bit 3, exponent bits 2..1 (bias 1, 0 = subnormal 0.5·m), mantissa bit 0; times 2^(scale - 127)."""
    b = blocks.numpy().astype(np.int64)
    codes = np.stack([b & 0x0F, b >> 4], axis=-1).reshape(*b.shape[:-1], 32)
    sign = np.where(codes & 0b1000, -1.0, 1.0)
    exponent, mantissa = (codes >> 1) & 0b11, codes & 0b1
    magnitude = np.where(exponent == 0, 0.5 * mantissa, 2.0 ** (exponent - 1) * (1.0 + 0.5 * mantissa))
    values = np.ldexp(sign * magnitude, scales.numpy().astype(np.int64)[..., None] - 127)
    return torch.from_numpy(values.reshape(*b.shape[:-2], -1)).to(dtype)


def assert_bits_equal(actual, expected):
    """Bit-for-bit equality (so -0.0 vs +0.0 and NaN payloads count), with the first difference in the message."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (actual.dtype, actual.shape,
                                                                                expected.dtype, expected.shape)
    a = actual.contiguous().view(torch.uint8).reshape(actual.numel(), -1)
    e = expected.contiguous().view(torch.uint8).reshape(expected.numel(), -1)
    differ = (a != e).any(dim=1)
    if differ.any():
        i = int(differ.nonzero()[0])
        pytest.fail(f"{int(differ.sum())} of {actual.numel()} values differ; first at flat index {i}: "
                    f"{actual.reshape(-1)[i].item()!r} vs expected {expected.reshape(-1)[i].item()!r}")


def transformers_dequantize(blocks, scales, dtype):
    """Transformers' own dequantizer, found in the installed version, returned in the checkpoint orientation
    [E, out, in]. Some versions transpose to [E, in, out]; the orientation is detected on a probe with out != in."""
    try:
        from transformers.integrations.mxfp4 import convert_moe_packed_tensors
    except ImportError as exc:
        pytest.skip(f"transformers.integrations.mxfp4.convert_moe_packed_tensors not importable: {exc}")
    params = inspect.signature(convert_moe_packed_tensors).parameters
    if "dtype" not in params:
        if dtype != torch.bfloat16:
            pytest.skip(f"this transformers' convert_moe_packed_tensors{inspect.signature(convert_moe_packed_tensors)}"
                        " has no dtype argument (bf16 only)")
        call = lambda b, s: convert_moe_packed_tensors(b, s)  # noqa: E731
    else:
        call = lambda b, s: convert_moe_packed_tensors(b, s, dtype=dtype)  # noqa: E731
    probe = call(torch.zeros(1, 3, 1, 16, dtype=torch.uint8), torch.full((1, 3, 1), 127, dtype=torch.uint8))
    transposes = tuple(probe.shape) == (1, 32, 3)
    assert transposes or tuple(probe.shape) == (1, 3, 32), f"unexpected transformers output shape {probe.shape}"
    result = call(blocks, scales)
    return result.transpose(1, 2) if transposes else result


# --- constants -----------------------------------------------------------------------------------------------------


def test_constants_match_the_e2m1_bit_layout():
    codes = torch.arange(16, dtype=torch.uint8)
    packed = codes[0::2] | (codes[1::2] << 4)  # 8 bytes holding codes 0..15 in order
    blocks = torch.cat([packed, torch.zeros(8, dtype=torch.uint8)]).reshape(1, 16)
    values = spec_formula(blocks, torch.tensor([127], dtype=torch.uint8), torch.float64)[:16]
    assert_bits_equal(torch.tensor(mxfp4.FP4_VALUES, dtype=torch.float64), values)
    assert (mxfp4.VALUES_PER_BLOCK, mxfp4.BYTES_PER_BLOCK, mxfp4.SCALE_BIAS) == (32, 16, 127)


# --- dequantize: bit-exact against Transformers, the spec formula and the reference ----------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_transformers_float32_full_scale_range(shape):
    blocks, scales = random_mxfp4(shape, 0, 254, seed=1)
    assert_bits_equal(dequantize(blocks, scales, torch.float32), transformers_dequantize(blocks, scales, torch.float32))


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_transformers_bfloat16_normal_range(shape):
    # 0.5·2^e .. 6·2^e stay normal bf16 for e in -125..125, i.e. scale bytes 2..252.
    blocks, scales = random_mxfp4(shape, 2, 252, seed=2)
    assert_bits_equal(dequantize(blocks, scales), transformers_dequantize(blocks, scales, torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_byte_at_every_scale_matches_transformers_and_the_spec(dtype):
    # Exhaustive: row s holds all 256 byte values (16 blocks) at scale s, for s = 0..254. Includes the bf16
    # subnormals (s = 0, 1), the float32 overflow to inf (s >= 253) and both zeros (codes 0 and 8).
    blocks = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).repeat(1, 255, 1, 1)  # [1, 255, 16, 16]
    scales = torch.arange(255, dtype=torch.uint8).reshape(1, 255, 1).repeat(1, 1, 16)  # [1, 255, 16]
    ours = dequantize(blocks, scales, dtype, chunk_rows=100)
    assert_bits_equal(ours, spec_formula(blocks, scales, dtype))
    assert torch.isinf(ours[0, 254]).any() and not torch.isinf(ours[0, 252]).any()
    # Against Transformers: every scale for float32; for bf16 the scales whose values stay normal (2..252), since
    # how a version rounds bf16 subnormals is its own business, not the format's.
    rows = slice(0, 255) if dtype == torch.float32 else slice(2, 253)
    transformers = transformers_dequantize(blocks[:, rows].contiguous(), scales[:, rows].contiguous(), dtype)
    assert_bits_equal(ours[:, rows], transformers)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3, 5), (5,), (7, 1), (2, 3, 4, 5), (1, 1, 1)])
@pytest.mark.parametrize("chunk_rows", [1, 4, 7, None])
def test_fast_equals_spec_formula_and_reference(dtype, shape, chunk_rows):
    blocks, scales = random_mxfp4(shape, 0, 254, seed=3)
    ours = dequantize(blocks, scales, dtype, chunk_rows=chunk_rows)
    assert ours.shape == (*shape[:-1], shape[-1] * 32) and ours.dtype == dtype
    assert_bits_equal(ours, spec_formula(blocks, scales, dtype))
    assert_bits_equal(ours, dequantize_reference(blocks, scales, dtype))


@pytest.mark.parametrize("threads", [1, 3])
def test_cpu_worker_spans_cover_every_block(threads):
    # dequantize splits the blocks into torch.get_num_threads() spans of chunks; uneven spans must meet exactly.
    blocks, scales = random_mxfp4((7, 3), seed=14)  # 21 blocks: 3 spans of 7, in chunks of 2, 2, 2, 1
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ours = dequantize(blocks, scales, torch.float32, chunk_rows=2)
    finally:
        torch.set_num_threads(before)
    assert_bits_equal(ours, spec_formula(blocks, scales, torch.float32))


def test_nibble_order_low_first_and_signed_zero():
    blocks = torch.zeros(1, 16, dtype=torch.uint8)
    blocks[0, 0] = 0x72  # element 0 = code 2 (1.0), element 1 = code 7 (6.0)
    blocks[0, 1] = 0x8F  # element 2 = code 15 (-6.0), element 3 = code 8 (-0.0)
    out = dequantize(blocks, torch.tensor([128], dtype=torch.uint8), torch.float32)  # scale 2^1
    assert out.shape == (32,) and out[:4].tolist() == [2.0, 12.0, -12.0, 0.0]
    assert torch.signbit(out[3]) and not torch.signbit(out[4])


def test_out_buffer_is_filled_and_returned():
    blocks, scales = random_mxfp4((3, 4, 5), seed=4)
    buffer = torch.full((3, 4, 160), float("nan"), dtype=torch.bfloat16)
    result = dequantize(blocks, scales, out=buffer, chunk_rows=6)
    assert result.data_ptr() == buffer.data_ptr()
    assert_bits_equal(buffer, dequantize_reference(blocks, scales, torch.bfloat16))
    with pytest.raises(InputError, match="w_out"):
        dequantize(blocks, scales, torch.float32, name="w_out", out=buffer)  # wrong dtype


def test_non_contiguous_and_empty_inputs():
    blocks, scales = random_mxfp4((4, 3, 5), seed=5)
    b_t, s_t = blocks.transpose(0, 1), scales.transpose(0, 1)  # [3, 4, 5, 16] views
    assert_bits_equal(dequantize(b_t, s_t, chunk_rows=5), dequantize_reference(b_t, s_t, torch.bfloat16))
    empty = dequantize(torch.zeros(2, 0, 16, dtype=torch.uint8), torch.zeros(2, 0, dtype=torch.uint8))
    assert empty.shape == (2, 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    blocks, scales = random_mxfp4((3, 70, 9), seed=6)
    for dtype in (torch.bfloat16, torch.float32):
        on_gpu = dequantize(blocks.cuda(), scales.cuda(), dtype, chunk_rows=50)
        assert on_gpu.device.type == "cuda"
        assert_bits_equal(on_gpu.cpu(), dequantize(blocks, scales, dtype))
    weight = torch.randn(5, 96, generator=torch.Generator().manual_seed(6))
    gpu_blocks, gpu_scales = quantize(weight.cuda(), chunk_rows=4)
    cpu_blocks, cpu_scales = quantize(weight)
    assert gpu_blocks.device.type == "cuda"
    assert torch.equal(gpu_blocks.cpu(), cpu_blocks) and torch.equal(gpu_scales.cpu(), cpu_scales)


# --- dequantize: errors ----------------------------------------------------------------------------------------


def assert_integrity_error(excinfo, *fragments):
    assert isinstance(excinfo.value, GptossConvertError) and excinfo.value.exit_code == 3
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_nan_scale_is_rejected_with_count_and_first_index():
    blocks, scales = random_mxfp4((2, 3, 5), 0, 254, seed=7)
    scales[1, 2, 3] = 0xFF
    scales[1, 2, 4] = 0xFF
    with pytest.raises(IntegrityError) as excinfo:
        dequantize(blocks, scales, name="model.layers.3.mlp.experts.down_proj")
    assert_integrity_error(excinfo, "model.layers.3.mlp.experts.down_proj", "0xFF", "2 of 30", "[1, 2, 3]")


@pytest.mark.parametrize("bad", ["blocks", "scales"])
def test_wrong_dtype_is_rejected(bad):
    blocks, scales = random_mxfp4((2, 3, 5), seed=8)
    if bad == "blocks":
        blocks = blocks.to(torch.int8)
    else:
        scales = scales.to(torch.int32)
    with pytest.raises(IntegrityError) as excinfo:
        dequantize(blocks, scales, name="gate_up_proj")
    assert_integrity_error(excinfo, "gate_up_proj", "uint8", "int8" if bad == "blocks" else "int32")


def test_mismatched_shapes_are_rejected_naming_both():
    blocks, _ = random_mxfp4((2, 3, 5), seed=9)
    scales = torch.full((2, 3, 4), 127, dtype=torch.uint8)
    with pytest.raises(IntegrityError) as excinfo:
        dequantize(blocks, scales, name="down_proj")
    assert_integrity_error(excinfo, "down_proj", "[2, 3, 5, 16]", "[2, 3, 4]")


@pytest.mark.parametrize("last", [15, 32, 1])
def test_bad_last_dim_is_rejected(last):
    blocks = torch.zeros(2, 5, last, dtype=torch.uint8)
    scales = torch.full((2, 5), 127, dtype=torch.uint8)
    with pytest.raises(IntegrityError) as excinfo:
        dequantize(blocks, scales, name="experts.w1")
    assert_integrity_error(excinfo, "experts.w1", f"[2, 5, {last}]", "16")


# --- quantize ----------------------------------------------------------------------------------------------------


def test_quantize_known_block():
    w = torch.zeros(32)
    w[:3] = torch.tensor([6.0, -6.0, 0.5])
    blocks, scales = quantize(w)
    assert scales.tolist() == [127]  # amax 6 -> 2^ceil(log2(1)) = 1 -> byte 127
    expected = [0xF7, 0x01] + [0] * 14  # (6 -> code 7 low, -6 -> code 15 high), (0.5 -> code 1 low, 0 high)
    assert blocks.tolist() == [expected]
    w2 = torch.zeros(1, 64)
    w2[0, 32:34] = torch.tensor([12.0, 1.0])  # second block: amax 12 -> scale 2; 12/2 = 6 (code 7), 1/2 = 0.5 (code 1)
    blocks2, scales2 = quantize(w2)
    assert scales2.tolist() == [[0, 128]]  # all-zero first block -> scale byte 0
    assert blocks2[0, 0].tolist() == [0] * 16 and blocks2[0, 1].tolist() == [0x17] + [0] * 15


def test_quantize_scale_is_round_up_power_of_two():
    # amax just above 6·2^k needs 2^(k+1); exactly 6·2^k takes 2^k; amax 1 -> 2^ceil(log2(1/6)) = 2^-2.
    w = torch.zeros(4, 32)
    above_six = torch.nextafter(torch.tensor(6.0), torch.tensor(7.0))  # the float32 after 6
    w[0, 5], w[1, 5], w[2, 5], w[3, 5] = 6.0, above_six, 1.0, -24.0
    _, scales = quantize(w)
    assert (scales.reshape(4).int() - 127).tolist() == [0, 1, -2, 2]


@pytest.mark.parametrize("rounding, expected", [
    ("nearest_even", [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0]),
    ("away", [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 6.0]),
])
def test_quantize_ties(rounding, expected):
    ties = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0]  # the midpoints between E2M1 magnitudes, and the max
    w = torch.tensor(ties + [-t for t in ties] + [0.0] * 16)
    blocks, scales = quantize(w, rounding=rounding)
    assert scales.tolist() == [127]
    values = dequantize(blocks, scales, torch.float32)
    assert values[:8].tolist() == expected and values[8:16].tolist() == [-v for v in expected]


def brute_force_nearest_even(q):
    """Nearest E2M1 value to each q (float64), ties to the even code, found by comparing with all 8 magnitudes."""
    grid = torch.tensor(mxfp4.FP4_VALUES[:8], dtype=torch.float64)
    distance = (q.abs()[..., None] - grid).abs()  # [..., 8]
    best = distance.min(dim=-1, keepdim=True).values
    candidates = distance == best  # one, or two on a tie
    even = candidates & (torch.arange(8) % 2 == 0)
    code = torch.where(even.any(-1), even.int().argmax(-1), candidates.int().argmax(-1))
    return torch.copysign(grid[code], q)


def test_quantize_matches_brute_force_and_error_bound():
    gen = torch.Generator().manual_seed(10)
    w = torch.randn(6, 5, 96, generator=gen) * torch.logspace(-30, 30, 5)[None, :, None]
    w[0, 0, :32] = 0.0
    blocks, scales = quantize(w, chunk_rows=7)
    assert blocks.shape == (6, 5, 3, 16) and scales.shape == (6, 5, 3)
    scale = torch.tensor([math.ldexp(1.0, s - 127) for s in scales.reshape(-1).tolist()], dtype=torch.float64)
    scale = scale.reshape(6, 5, 3, 1)
    wb = w.double().reshape(6, 5, 3, 32)
    amax = wb.abs().amax(-1, keepdim=True)
    nonzero = amax > 0
    # the scale is the smallest power of two with amax / scale <= 6
    assert ((amax / scale <= 6) | ~nonzero).all() and ((amax / (scale / 2) > 6) | ~nonzero).all()
    assert (scales.reshape(6, 5, 3, 1)[~nonzero] == 0).all()
    expected = (brute_force_nearest_even(wb / scale) * scale).reshape(6, 5, 96).float()
    got = dequantize(blocks, scales, torch.float32)
    assert_bits_equal(got, expected)
    half_gap = torch.where((wb / scale).abs() <= 2, 0.25, torch.where((wb / scale).abs() <= 4, 0.5, 1.0))
    assert ((got.double().reshape(6, 5, 3, 32) - wb).abs() <= half_gap * scale).all()


@pytest.mark.parametrize("seed", [11, 12])
def test_requantizing_dequantized_values_is_lossless(seed):
    # Scales up to 252 so 6·2^(s-127) stays finite in float32; 0 and 1 exercise the bottom of the range.
    blocks, scales = random_mxfp4((3, 4, 6), 0, 252, seed=seed)
    values = dequantize(blocks, scales, torch.float32)
    blocks2, scales2 = quantize(values, chunk_rows=5)
    assert_bits_equal(dequantize(blocks2, scales2, torch.float32), values)
    assert_bits_equal(quantize(values.bfloat16())[0], blocks2)  # the same from bf16: these values are exact in bf16


def test_requantizing_blocks_that_reach_the_top_code_gives_the_same_bytes():
    blocks, scales = random_mxfp4((3, 4, 6), 0, 252, seed=13)
    blocks[..., 0] = (blocks[..., 0] & 0x0F) | 0x70  # every block holds a 6.0, so the scale is the same
    blocks2, scales2 = quantize(dequantize(blocks, scales, torch.float32))
    assert torch.equal(scales2, scales) and torch.equal(blocks2, blocks)


def test_quantize_errors_name_the_tensor():
    with pytest.raises(InputError, match=r"w1: the last dim must be a multiple of 32.*\[3, 40\]") as excinfo:
        quantize(torch.zeros(3, 40), name="w1")
    assert excinfo.value.exit_code == 2
    with pytest.raises(InputError, match="w1: .*floating-point.*torch.int32"):
        quantize(torch.zeros(3, 32, dtype=torch.int32), name="w1")
    bad = torch.zeros(2, 64)
    bad[1, 40] = float("inf")
    with pytest.raises(InputError, match=r"w1: .*non-finite.*block 3"):
        quantize(bad, name="w1")
    with pytest.raises(InputError, match="w1: rounding must be one of"):
        quantize(torch.zeros(32), rounding="up", name="w1")
