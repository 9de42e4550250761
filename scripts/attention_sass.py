"""What the one-token attention kernel (gptoss_model/kernels/one_token_attention.py) compiles to on Hopper, without a
GPU: `_attention_kernel` for sm_90 through Triton's own ptxas, as the launch on the 20b shape specialises it (8
query heads a kv head, d = 64), then its registers, stack (spilled registers), tensor-core instructions (HMMA) and
asynchronous copies into shared memory (LDGSTS: the loop over the keys is software-pipelined, the next blocks' K
and V in flight while one is computed). One JSON line per (dtype, keys a loop step, warps, split).

    PYTHONPATH=. python scripts/attention_sass.py                   # the wrapper's block size, bf16 and float32
    PYTHONPATH=. python scripts/attention_sass.py --block fp32 64 4   # another block
"""

import argparse
import inspect
import json
import os
import sys

sys.path.insert(0, ".")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gptoss_model.kernels import one_token_attention as kernel  # noqa: E402
from kernel_sass import compile_for_hopper, machine_code  # noqa: E402  (the MXFP4 kernel's offline tools)

STRIDES = ["q_sb", "q_sh", "k_sb", "k_sh", "k_ss", "v_sb", "v_sh", "v_ss", "keep_sb", "keep_ss"]
ALIGNED_STRIDES = STRIDES[:8]  # multiples of d = 64 elements
DTYPES = ["bf16", "fp32"]
_defaults = inspect.signature(kernel.one_token_attention).parameters
BLOCK_S, WARPS = _defaults["block_s"].default, _defaults["warps"].default  # what the fast path launches


def compile_attention(dtype: str, block_s: int, warps: int, split: bool):
    arguments = {"q_ptr": f"*{dtype}", "k_ptr": f"*{dtype}", "v_ptr": f"*{dtype}", "sinks_ptr": f"*{dtype}",
                 "keep_ptr": "*i1", "out_ptr": "*fp32" if split else f"*{dtype}", "scaling": "fp32", "S": "i32",
                 "keys_per_split": "i32", "nkv": "i32", **{name: "i32" for name in STRIDES}}
    constants = dict(GROUP=8, ROWS=16, HEAD_DIM=64, BLOCK_D=64, BLOCK_S=block_s, SCAN=kernel.SCAN_KEYS, SPLIT=split,
                     FLOAT32_DOT=False)
    # the launch specialises pointers and these strides as divisible by 16, as here
    aligned = [n for n, t in arguments.items() if t[0] == "*" or n in ALIGNED_STRIDES]
    return compile_for_hopper(kernel._attention_kernel, arguments, constants, aligned, num_warps=warps)


def describe(dtype: str, block_s: int, warps: int, split: bool = False) -> dict:
    sass, usage = machine_code(compile_attention(dtype, block_s, warps, split))
    return {"dtype": dtype, "block_s": block_s, "warps": warps, "split": split, "registers": usage["REG"],
            "stack_bytes": usage["STACK"], "local_bytes": usage["LOCAL"], "hmma": sass.count("HMMA"),
            "async_copies": sass.count("LDGSTS")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--block", nargs=3, action="append", metavar=("DTYPE", "BLOCK_S", "WARPS"),
                        help="bf16 or fp32, keys a loop step, warps (repeatable); default: the wrapper's")
    args = parser.parse_args()
    blocks = ([(dtype, int(block_s), int(warps)) for dtype, block_s, warps in args.block] if args.block
              else [(name, BLOCK_S, WARPS) for name in DTYPES])
    for dtype, block_s, warps in blocks:
        for split in (False, True):
            print(json.dumps(describe(dtype, block_s, warps, split)), flush=True)


if __name__ == "__main__":
    main()
