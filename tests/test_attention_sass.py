"""The one-token attention kernels compiled offline on the CPU, no GPU needed: for Hopper (scripts/attention_sass.py:
Triton's ptxas) with the wrapper's block size and warps, no register spills, the bf16 products on the tensor cores,
and the loop over the keys pipelined (asynchronous copies of K and V: no branch in the loop stops Triton's
pipeliner); and to Triton IR for torch.compile's analysis of what a user kernel writes, which must find the output
alone (were it unsure, the compiled step would treat the KV cache as written and copy it every layer)."""

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import attention_sass  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from gptoss_model.kernels import one_token_attention as kernels  # noqa: E402


@pytest.mark.parametrize("dtype", attention_sass.DTYPES)
def test_the_wrappers_launch_compiles_without_spills_and_pipelined(dtype):
    for split in (False, True):
        compiled = attention_sass.describe(dtype, attention_sass.BLOCK_S, attention_sass.WARPS, split)
        assert compiled["stack_bytes"] == 0 and compiled["local_bytes"] == 0, compiled
        assert (compiled["hmma"] > 0) == (dtype == "bf16"), compiled  # float32's products: ieee, on the FMA units
        assert compiled["async_copies"] > 0, compiled


class RecordedLaunches:
    """Stands in for a @triton.jit kernel: kernel[grid](...) records the arguments instead of launching."""

    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        return lambda *args, **options: self.launches.append((self.kernel, args, options))


class Hopper:
    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)


def test_torch_compile_finds_that_the_kernels_write_their_output_only(monkeypatch):
    from torch._higher_order_ops.triton_kernel_wrap import identify_accessed_tensors

    launches = []
    for name in ("_attention_kernel", "_merge_splits_kernel"):
        monkeypatch.setattr(kernels, name, RecordedLaunches(getattr(kernels, name), launches))
    monkeypatch.setattr(triton.runtime.driver, "_active", Hopper())  # the IR needs a target, not a GPU
    for S in (300, 2500):  # one program per kv head; three splits and the merge
        q, k, v = (torch.zeros(2, heads, length, 64, dtype=torch.bfloat16)
                   for heads, length in ((64, 1), (8, S), (8, S)))
        kernels.one_token_attention(q, k, v, torch.zeros(64), torch.ones(2, 1, 1, S, dtype=torch.bool), 0.125)
    assert [kernel.fn.__name__ for kernel, _, _ in launches] == ["_attention_kernel", "_attention_kernel",
                                                                 "_merge_splits_kernel"]
    for kernel, args, options in launches:
        arguments = {**dict(zip(kernel.arg_names, args)), **{k: v for k, v in options.items() if k != "num_warps"}}
        accesses = identify_accessed_tensors(kernel, arguments, {})
        assert [dep.name for dep in accesses.read_writes.writes] == ["out_ptr"], kernel.fn.__name__
