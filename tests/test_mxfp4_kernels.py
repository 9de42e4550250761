"""The Triton kernels: the fused MXFP4 one against dequantize-then-matmul (cases in tests/mxfp4_kernel_cases.py),
the one-token RMSNorm + projections against the readable path (tests/norm_linear_cases.py), the one-token attention
with sinks against model.attention_with_sinks (tests/one_token_attention_cases.py).

Without CUDA the cases run in a child pytest under Triton's CPU interpreter (TRITON_INTERPRET=1 must be set before
triton is first imported, and other tests import it through torch); with CUDA they run here, compiled."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from gptoss_model.mxfp4_experts import FP4_VALUES  # noqa: E402

if torch.cuda.is_available():
    from tests.mxfp4_kernel_cases import *  # noqa: F401,F403  (the cases, compiled on the GPU)
    from tests.norm_linear_cases import *  # noqa: F401,F403
    from tests.one_token_attention_cases import *  # noqa: F401,F403
else:
    def test_kernel_cases_pass_under_the_triton_interpreter():
        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root)}
        child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                "tests/mxfp4_kernel_cases.py", "tests/norm_linear_cases.py",
                                "tests/one_token_attention_cases.py"], cwd=root, env=env,
                               capture_output=True, text=True, timeout=600)
        assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-2000:]
        assert " passed" in child.stdout and "skipped" not in child.stdout, child.stdout[-500:]


def as_bf16(lanes: torch.Tensor) -> torch.Tensor:
    """16-bit patterns (0..65535, any integer dtype) -> the bfloat16 values they encode."""
    return torch.where(lanes >= 32768, lanes - 65536, lanes).to(torch.int16).view(torch.bfloat16)


def test_pairs_recipe_gives_every_code_and_keeps_the_two_lanes_apart():
    """The integer steps of the inline-PTX decode (mxfp4_moe._e2m1_pairs), here in torch on the CPU (the PTX itself
    runs only on CUDA, in the kernel cases): for all 256 bytes both codes come out exactly, and on a 32-bit word of
    two byte lanes the multiply carries nothing from one lane into the other."""
    from gptoss_model.kernels.mxfp4_moe import PAIR_KEEP, PAIR_SPREAD_HIGH, PAIR_SPREAD_LOW, PAIR_UNIT

    byte = torch.arange(256, dtype=torch.int64)
    unit = as_bf16(torch.tensor([PAIR_UNIT]))
    assert unit.item() == 2.0**126
    low = as_bf16(((byte & 0x0F) * PAIR_SPREAD_LOW) & PAIR_KEEP) * unit  # a bf16 multiply, as mul.rn.bf16x2
    high = as_bf16(((byte & 0xF0) * PAIR_SPREAD_HIGH) & PAIR_KEEP) * unit
    values = torch.tensor(FP4_VALUES, dtype=torch.float32)
    assert torch.equal(low.float(), values[byte & 0x0F]) and torch.equal(high.float(), values[byte >> 4])
    assert torch.equal(torch.signbit(low.float()), (byte & 0x08) > 0)  # -0.0 keeps its sign too
    first, second = torch.meshgrid(byte, byte, indexing="ij")
    word = first | second << 16  # prmt's two lanes
    keep = PAIR_KEEP * 0x10001
    for mask, spread in ((0x000F000F, PAIR_SPREAD_LOW), (0x00F000F0, PAIR_SPREAD_HIGH)):
        lanes = ((word & mask) * spread) & keep & 0xFFFFFFFF  # mul.lo.u32 keeps the low 32 bits
        alone = (((first & (mask & 0xFF)) * spread) & PAIR_KEEP) | (((second & (mask & 0xFF)) * spread) & PAIR_KEEP) << 16
        assert torch.equal(lanes, alone)


@pytest.mark.parametrize("content, named", [
    ('{"one_row": [1, 16, 512, 4, 3, 1, "pairs"], "large": [128, 128, 64, 8, 3, 1, "f16"]}', None),
    ("{not json", "JSONDecodeError"),
    ('{"huge": [1, 16, 512, 4, 3, 1, "pairs"]}', "'huge'"),
    ('{"one_row": [1, 16, 512, 4, 3, 1, "fp8"]}', "'fp8'"),
    ('{"one_row": [1, 16, 512]}', "TypeError"),
    ('{"small": [16, 0, 64, 4, 3, 1, "bits"]}', "[16, 0, 64"),
])
def test_a_tiles_file_is_read_or_refused_in_one_line(tmp_path, content, named):
    from gptoss_model.kernels.mxfp4_moe import TILES_ENV, TileConfig, tiles_from_file

    path = tmp_path / "tiles.json"
    path.write_text(content)
    if named is None:
        assert tiles_from_file(str(path)) == {"one_row": TileConfig(1, 16, 512, 4, 3, 1, "pairs"),
                                              "large": TileConfig(128, 128, 64, 8, 3, 1, "f16")}
        return
    with pytest.raises(ValueError) as refused:
        tiles_from_file(str(path))
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{TILES_ENV}={path}: expected") and named in message
