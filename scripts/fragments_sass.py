"""What the two tensor-core fragments kernels compile to on Hopper, without a GPU (as scripts/kernel_sass.py does for
mxfp4_moe's): kernels/mxfp4_fragments.py's expert kernel (gate/up with the SwiGLU, batch-1 decoding's row tiles)
and kernels/norm_linear.py's fragments kernel (q/k/v with the RMSNorm), for sm_90 with Triton's own ptxas. For each:
registers, the main loop's instructions a weight, its mma and 16-byte loads, and the order of loads and mmas in the
loop (a load placed right before the mma that uses it leaves one load in flight: the sixth session's finding).

    PYTHONPATH=. python scripts/fragments_sass.py
    PYTHONPATH=. python scripts/fragments_sass.py --max-registers 40 --no-prefetch   # the variant experts-one-wave
"""

import argparse

import json
import re
import sys

sys.path.insert(0, "scripts")
sys.path.insert(0, ".")
from kernel_sass import compile_for_hopper, machine_code, main_loop  # noqa: E402
from gptoss_model.kernels import mxfp4_fragments, norm_linear  # noqa: E402

EXPERT_ARGUMENTS = {
    "x_ptr": "*bf16", "x_row_ptr": "*i32", "blocks_ptr": "*u8", "scales_ptr": "*u8", "bias_ptr": "*bf16",
    "out_ptr": "*bf16", "tile_expert_ptr": "*i32", "tile_start_ptr": "*i32", "tile_end_ptr": "*i32",
    "N": "i32", "K": "i32", "alpha": "fp32", "limit": "fp32"}
PROJECTION_ARGUMENTS = {
    "x_ptr": "*bf16", "M": "i32", "norm_weight_ptr": "*bf16", "eps": "fp32", "w0_ptr": "*bf16", "b0_ptr": "*bf16",
    "N0": "i32", "w1_ptr": "*bf16", "b1_ptr": "*bf16", "N1": "i32", "w2_ptr": "*bf16", "b2_ptr": "*bf16",
    "N2": "i32", "out_ptr": "*bf16", "K": "i32"}


def describe(name, kernel, arguments, constants, warps, weights_per_thread_per_step, **options):
    """weights_per_thread_per_step: the weights one thread's loop step covers (rows a and b together)."""
    aligned = [n for n, t in arguments.items() if t[0] == "*" or n in ("N", "K", "N0", "N1", "N2")]
    sass, usage = machine_code(compile_for_hopper(kernel, arguments, constants, aligned, num_warps=warps, **options))
    loop = main_loop(sass)
    mmas = sum(op.startswith("HMMA") for op in loop)
    order = "".join("L" if op.startswith("LDG") else "M" for op in loop if op.startswith(("LDG", "HMMA")))
    steps = max(mmas / (8 if name == "experts" else 2), 1)  # loop steps unrolled into the loop body
    return {"kernel": name, "warps": warps, "registers": usage["REG"], "local_memory": usage.get("LOCAL", 0),
            "loop_instructions": len(loop), "loop_steps": steps,
            "instructions_per_weight": round(len(loop) / (steps * weights_per_thread_per_step), 2),
            "mma_in_loop": mmas, "global_loads_128_bit": sum(op.startswith("LDG") and op.endswith(".128") for op in loop),
            "loads_L_and_mmas_M_in_loop_order": order}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-registers", type=int, help="ptxas's register limit for the expert kernel")
    parser.add_argument("--no-prefetch", action="store_true", help="the expert kernel without mxfp4_fragments.PREFETCH")
    parser.add_argument("--two-multiplies", action="store_true",
                        help="the expert kernel's decoding without mxfp4_fragments.ONE_MULTIPLY")
    parser.add_argument("--experts-only", action="store_true")
    args = parser.parse_args()
    expert = dict(GATHER=False, SWIGLU=True, ROW_TILES=True, SHARED_X=True, WARPS=mxfp4_fragments.WARPS,
                  PREFETCH=mxfp4_fragments.PREFETCH and not args.no_prefetch, EMULATE=False,
                  ONE_MULTIPLY=mxfp4_fragments.ONE_MULTIPLY and not args.two_multiplies)
    options = {"maxnreg": args.max_registers} if args.max_registers else {}
    print(json.dumps(describe("experts", mxfp4_fragments._fragments_kernel, EXPERT_ARGUMENTS, expert,
                              mxfp4_fragments.WARPS, 64, **options)), flush=True)  # 32 columns of 2 rows a step
    if args.experts_only:
        return
    for norm in (True, False):
        projection = dict(NORM=norm, WARPS=norm_linear.FRAGMENT_WARPS, EMULATE=False)
        print(json.dumps(describe(f"projections{'+norm' if norm else ''}", norm_linear._norm_linear_fragments_kernel,
                                  PROJECTION_ARGUMENTS, projection, norm_linear.FRAGMENT_WARPS, 16)), flush=True)


if __name__ == "__main__":
    main()
