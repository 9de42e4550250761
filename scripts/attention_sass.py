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
import re
import subprocess
import sys
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, ".")
from gptoss_model.kernels import one_token_attention as kernel  # noqa: E402

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
    signature = {**arguments, **{name: "constexpr" for name in constants}}
    names = list(signature)
    # the launch specialises pointers and these strides as divisible by 16, as here
    aligned = {(names.index(n),): [["tt.divisibility", 16]] for n, t in arguments.items()
               if t[0] == "*" or n in ALIGNED_STRIDES}
    source = ASTSource(kernel._attention_kernel, signature,
                       constexprs={(names.index(n),): v for n, v in constants.items()}, attrs=aligned)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))


def describe(dtype: str, block_s: int, warps: int, split: bool = False) -> dict:
    compiled = compile_attention(dtype, block_s, warps, split)
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    cubin = Path("/tmp/gptoss_attention_sass.cubin")
    cubin.write_bytes(compiled.asm["cubin"])
    sass = subprocess.run([tools / "nvdisasm", "-c", cubin], capture_output=True, text=True, check=True).stdout
    usage = subprocess.run([tools / "cuobjdump", "-res-usage", cubin], capture_output=True, text=True).stdout
    field = {name: int(re.search(rf"{name}:(\d+)", usage).group(1)) for name in ("REG", "STACK", "LOCAL")}
    return {"dtype": dtype, "block_s": block_s, "warps": warps, "split": split, "registers": field["REG"],
            "stack_bytes": field["STACK"], "local_bytes": field["LOCAL"], "hmma": sass.count("HMMA"),
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
