"""The MXFP4 kernel compiled for Hopper on the CPU (scripts/kernel_sass.py: Triton's ptxas and nvdisasm, no GPU
needed): what the GPU sweeps cannot show between sessions. "pairs" decoding must keep its main loop shorter than
the float16 decoding it replaced, the weight bytes must stay 16-byte vector loads (the aligned addressing of
mxfp4_moe._matvec_step; written as row · K/2 + column, Triton loaded 8 bytes at a time), and the one-row loop must
not pass x through shared memory (mxfp4_moe._x_pairs; x loaded once and shuffled between threads, it did, behind
barriers every step)."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import kernel_sass  # noqa: E402

from gptoss_model.kernels.mxfp4_moe import TileConfig  # noqa: E402


def test_pairs_decoding_shortens_the_one_row_loop_and_loads_16_bytes_at_a_time():
    f16 = kernel_sass.describe(TileConfig(1, 16, 512, 4, 3, 1, "f16"))
    pairs = kernel_sass.describe(TileConfig(1, 16, 512, 4, 3, 1, "pairs"))
    assert pairs["weights_per_thread_per_step"] == 64
    assert pairs["instructions_per_weight"] < 0.8 * f16["instructions_per_weight"], (pairs, f16)
    # the PTX's bf16x2 multiplies by 2^126, one per two weights (ptxas writes some as HFMA2); the scale multiplies
    # each group's sum instead (mxfp4_moe._e2m1_pairs_unscaled), so no more than that
    assert pairs["mix"]["HMUL2"] + pairs["mix"].get("HFMA2", 0) == 32, pairs["mix"]
    assert pairs["global_loads_128_bit"] >= 2 and f16["global_loads_128_bit"] >= 2
    assert pairs["shared_memory_in_loop"] == 0 and f16["shared_memory_in_loop"] == 0, (pairs, f16)
