"""The one-token attention kernel compiled for Hopper on the CPU (scripts/attention_sass.py: Triton's ptxas, no GPU
needed): with the block sizes the wrapper picks, no register spills, and the bf16 products on the tensor cores."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import attention_sass  # noqa: E402

from gptoss_model.kernels.one_token_attention import BLOCK_KEYS  # noqa: E402


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_the_wrappers_blocks_compile_without_spills(dtype):
    block_s = BLOCK_KEYS.get(attention_sass.DTYPES[dtype], 64)
    for split in (False, True):
        compiled = attention_sass.describe(dtype, block_s, 4, split)
        assert compiled["stack_bytes"] == 0 and compiled["local_bytes"] == 0, compiled
        assert (compiled["hmma"] > 0) == (dtype == "bf16"), compiled  # float32's products: ieee, on the FMA units
