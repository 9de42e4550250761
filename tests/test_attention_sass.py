"""The one-token attention kernel compiled for Hopper on the CPU (scripts/attention_sass.py: Triton's ptxas, no GPU
needed): with the wrapper's block size and warps, no register spills, the bf16 products on the tensor cores, and the
loop over the keys pipelined (asynchronous copies of K and V: no branch in the loop stops Triton's pipeliner)."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import attention_sass  # noqa: E402


@pytest.mark.parametrize("dtype", attention_sass.DTYPES)
def test_the_wrappers_launch_compiles_without_spills_and_pipelined(dtype):
    for split in (False, True):
        compiled = attention_sass.describe(dtype, attention_sass.BLOCK_S, attention_sass.WARPS, split)
        assert compiled["stack_bytes"] == 0 and compiled["local_bytes"] == 0, compiled
        assert (compiled["hmma"] > 0) == (dtype == "bf16"), compiled  # float32's products: ieee, on the FMA units
        assert compiled["async_copies"] > 0, compiled
