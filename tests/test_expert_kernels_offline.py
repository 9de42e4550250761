"""The decode step's own Triton kernels checked offline, from launches recorded as the model makes them (no GPU):

- compiled for Hopper (Triton's ptxas) with the argument types of the model's own launches at batch 1 and 8. Why
  recorded: the sixth session compiled its refactored expert kernels offline with int32 tile arrays, but batch-1
  decoding passes the router's int64 expert indices as its row tiles, and the type clash (a shared `_tile` helper
  with an early return) only showed on the GPU, as a CompilationError in the seventh session's first call. Also
  checked: no spills, the fragments kernel's 8 mma a loop step;
- seen by torch.compile's analysis of user kernels as writing their output alone. Were it unsure of another
  argument, the compiled step would copy that tensor before every launch: the same helper made the analysis count
  the tile arrays as written, and the seventh session's batch-1 profile found two copy kernels a layer (~3 %)."""

import sys
import types
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import kernel_sass  # noqa: E402

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402

from gptoss_model.kernels import mxfp4_dequantize, mxfp4_fragments, mxfp4_moe, norm_linear  # noqa: E402

TYPES = {torch.bfloat16: "bf16", torch.float32: "fp32", torch.int64: "i64", torch.int32: "i32", torch.uint8: "u8"}


class RecordedLaunches:
    """Stands in for a @triton.jit kernel: kernel[grid](...) records the arguments and launches nothing."""

    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        return lambda *args, **options: self.launches.append((self.kernel, args, options))


def small_experts(E=4, hidden=64, intermediate=32):
    """Packed experts of a small shape (rows in whole 16-row fragments), zeros: only the launches matter."""
    def packed(n, k):
        return (torch.zeros(E, n, k // 32, 16, dtype=torch.uint8), torch.full((E, n, k // 32), 127, dtype=torch.uint8),
                torch.zeros(E, n, dtype=torch.bfloat16))
    gate_up, down = packed(2 * intermediate, hidden), packed(hidden, intermediate)
    return types.SimpleNamespace(gate_up_proj_blocks=gate_up[0], gate_up_proj_scales=gate_up[1],
                                 gate_up_proj_bias=gate_up[2], down_proj_blocks=down[0], down_proj_scales=down[1],
                                 down_proj_bias=down[2], alpha=1.702, limit=7.0,
                                 largest_scale_byte=lambda: 127), E, hidden  # as MXFP4Experts records it


def recorded(monkeypatch, batch, fragments=True):
    """The kernel launches of one packed-experts forward of `batch` tokens (top 2 of 4 experts)."""
    launches = []
    for module, name in ((mxfp4_fragments, "_fragments_kernel"), (mxfp4_moe, "_moe_mxfp4_kernel"),
                         (mxfp4_moe, "_splitk_finish_kernel")):
        monkeypatch.setattr(module, name, RecordedLaunches(getattr(module, name), launches))
    monkeypatch.setattr(mxfp4_fragments, "fits", lambda x, blocks: True)  # as on CUDA
    monkeypatch.setattr(mxfp4_moe, "FRAGMENTS", fragments)
    experts, E, hidden = small_experts()
    x = torch.zeros(batch, hidden, dtype=torch.bfloat16)
    indices = torch.arange(2 * batch).reshape(batch, 2) % E  # int64, as the router's top-k gives them
    mxfp4_moe.packed_experts_forward(experts, x, torch.full((batch, 2), 0.5), indices)
    return launches


def compile_launch(kernel, args, options):
    """Compile one recorded launch for sm_90: tensors as pointers of their dtype, ints as i32, floats as fp32, the
    keyword arguments the kernel declares as constexpr as constants; pointers and ints divisible by 16 marked so,
    as Triton's launch specialises them (the 20b shape's N and K are)."""
    arguments, constants = {}, {}
    for name, value in zip(kernel.arg_names, args):
        if isinstance(value, torch.Tensor):
            arguments[name] = "*" + TYPES[value.dtype]
        else:
            arguments[name] = "fp32" if isinstance(value, float) else "i32"
    launch = {k: v for k, v in options.items() if k in ("num_warps", "num_stages", "maxnreg")}
    constants = {k: v for k, v in options.items() if k not in launch}
    aligned = [n for n, v in zip(kernel.arg_names, args) if isinstance(v, torch.Tensor)
               or isinstance(v, int) and not isinstance(v, bool) and v % 16 == 0]
    return kernel_sass.machine_code(kernel_sass.compile_for_hopper(kernel, arguments, constants, aligned, **launch))


@pytest.mark.parametrize("batch", [1, 8])
def test_the_fragments_kernel_compiles_for_hopper_as_decoding_launches_it(monkeypatch, batch):
    launches = recorded(monkeypatch, batch, fragments=True)
    assert [kernel.fn.__name__ for kernel, _, _ in launches] == ["_fragments_kernel"] * 2  # gate/up, down
    kernel, args, _ = launches[0]
    tile_pointer = args[kernel.arg_names.index("tile_expert_ptr")]
    assert tile_pointer.dtype == (torch.int64 if batch == 1 else torch.int32)  # the case the offline check missed
    for kernel, args, options in launches:
        assert options["ONE_MULTIPLY"]  # scale bytes up to 128: the decoding with one multiply a weight pair
        sass, usage = compile_launch(kernel, args, options)
        assert usage.get("LOCAL", 0) == 0 and usage.get("STACK", 0) == 0, usage  # no spills
        loop = kernel_sass.main_loop(sass)
        mmas = sum(op.startswith("HMMA") for op in loop)
        assert mmas > 0 and mmas % 8 == 0, loop  # 8 k-steps of one 16-byte load a row (the loop may be unrolled)
        assert sum(op.startswith("LDG") and op.endswith(".128") for op in loop) >= mmas // 2, loop  # rows a, b, x


@pytest.mark.parametrize("batch", [1, 8])
def test_the_tiles_kernel_compiles_for_hopper_as_decoding_launches_it(monkeypatch, batch):
    """mxfp4_moe's kernel, what the packed experts use with FRAGMENTS off (and beyond 64 rows), at decoding's sizes."""
    launches = recorded(monkeypatch, batch, fragments=False)
    assert {kernel.fn.__name__ for kernel, _, _ in launches} <= {"_moe_mxfp4_kernel", "_splitk_finish_kernel"}
    assert len(launches) >= 2
    for kernel, args, options in launches:
        _, usage = compile_launch(kernel, args, options)
        assert usage.get("LOCAL", 0) == 0 and usage.get("STACK", 0) == 0, (kernel.fn.__name__, usage)


class Hopper:
    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)


def written(kernel, args, options) -> list[str]:
    """The arguments torch.compile's analysis of a user Triton kernel finds written (its TTIR, for sm_90)."""
    from torch._higher_order_ops.triton_kernel_wrap import identify_accessed_tensors

    arguments = {**dict(zip(kernel.arg_names, args)),
                 **{k: v for k, v in options.items() if k not in ("num_warps", "num_stages", "maxnreg")}}
    return [dep.name for dep in identify_accessed_tensors(kernel, arguments, {}).read_writes.writes]


@pytest.mark.parametrize("batch, fragments", [(1, True), (8, True), (40, True), (1, False), (8, False)])
def test_torch_compile_finds_that_the_expert_kernels_write_their_output_only(monkeypatch, batch, fragments):
    """40 tokens: 80 rows, beyond the fragments kernel's 64, through mxfp4_moe's tiles (prefill's path)."""
    monkeypatch.setattr(triton.runtime.driver, "_active", Hopper())  # the TTIR needs a target, not a GPU
    launches = recorded(monkeypatch, batch, fragments)
    assert launches
    for kernel, args, options in launches:
        expected = ["partial_ptr"] if options.get("SPLIT_K", 1) > 1 else ["out_ptr"]
        assert written(kernel, args, options) == expected, (kernel.fn.__name__, batch)


@pytest.mark.parametrize("rows", [1, 8])
def test_torch_compile_finds_that_norm_linear_writes_its_output_only(monkeypatch, rows):
    """q/k/v with the RMSNorm (norm_linear's one-row, rows and fragments kernels)."""
    from gptoss_model.model import GptOssRMSNorm

    monkeypatch.setattr(triton.runtime.driver, "_active", Hopper())
    launches = []
    for name in ("_norm_linear_kernel", "_norm_linear_rows_kernel", "_norm_linear_fragments_kernel"):
        monkeypatch.setattr(norm_linear, name, RecordedLaunches(getattr(norm_linear, name), launches))
    linears = [torch.nn.Linear(64, n, dtype=torch.bfloat16) for n in (64, 16, 16)]
    x = torch.zeros(rows, 64, dtype=torch.bfloat16)
    norm_linear.norm_linear(x, GptOssRMSNorm(64).to(torch.bfloat16), linears)
    monkeypatch.setattr(norm_linear, "takes_fragments", lambda x: True)  # as on CUDA with FRAGMENTS on
    norm_linear.norm_linear(x, GptOssRMSNorm(64).to(torch.bfloat16), linears)
    assert len(launches) == 2
    for kernel, args, options in launches:
        assert written(kernel, args, options) == ["out_ptr"], kernel.fn.__name__


def test_the_prefill_dequantize_kernel_compiles_to_16_byte_accesses_and_writes_its_output_only(monkeypatch):
    """mxfp4_dequantize's kernel runs inside the compiled prefill piece: were the analysis unsure of the blocks, the
    piece would copy a layer's 0.4 GB of them before every launch."""
    monkeypatch.setattr(triton.runtime.driver, "_active", Hopper())
    launches = []
    monkeypatch.setattr(mxfp4_dequantize, "_dequantize_kernel",
                        RecordedLaunches(mxfp4_dequantize._dequantize_kernel, launches))
    experts, _, _ = small_experts()
    mxfp4_dequantize.dequantize_rows(experts.gate_up_proj_blocks, experts.gate_up_proj_scales, 16, 48)
    (kernel, args, options), = launches
    assert written(kernel, args, options) == ["out_ptr"]
    sass, usage = compile_launch(kernel, args, options)
    assert usage.get("LOCAL", 0) == 0 and usage.get("STACK", 0) == 0, usage
    assert "LDG.E.128" in sass and "STG.E.128" in sass  # the blocks' 16 bytes and the values' 8 in one access
