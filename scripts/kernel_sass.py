"""What the MXFP4 expert kernel compiles to on Hopper, without a GPU: `_moe_mxfp4_kernel` for sm_90 (Triton's own
ptxas, as on the device), then the machine code of its main loop (nvdisasm): instructions per weight, their mix,
registers and whether the loop goes through shared memory. The loop is where the time goes, so this is how a tile
or decoding variant can be judged between GPU sessions.

    PYTHONPATH=. python scripts/kernel_sass.py                       # every tile of CONFIGS, bf16
    PYTHONPATH=. python scripts/kernel_sass.py --tile 1 16 512 4 3 1 f16 --tile 1 16 512 4 3 1 pairs

The launch specialises pointers and N, K (divisible by 16 on the 20b shape) as 16-byte aligned; so does this.
"""

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, ".")
from gptoss_model.kernels import mxfp4_moe  # noqa: E402

ARGUMENTS = {  # the kernel's runtime arguments, for a bf16 model's gate/up projection (the fused SwiGLU)
    "x_ptr": "*bf16", "x_row_ptr": "*i32", "blocks_ptr": "*u8", "scales_ptr": "*u8", "bias_ptr": "*bf16",
    "out_ptr": "*bf16", "partial_ptr": "*bf16", "tile_expert_ptr": "*i32", "tile_start_ptr": "*i32",
    "tile_end_ptr": "*i32", "N": "i32", "K": "i32", "R": "i32", "alpha": "fp32", "limit": "fp32",
}


def compile_for_hopper(kernel, arguments: dict, constants: dict, aligned, **options):
    """A @triton.jit kernel compiled for sm_90 with Triton's own ptxas, no GPU needed: arguments {name: type},
    constants {name: value}, `aligned` the argument names the launch specialises as divisible by 16."""
    signature = {**arguments, **{name: "constexpr" for name in constants}}
    names = list(signature)
    source = ASTSource(kernel, signature, constexprs={(names.index(n),): v for n, v in constants.items()},
                       attrs={(names.index(n),): [["tt.divisibility", 16]] for n in aligned})
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)


def machine_code(compiled) -> tuple[str, dict]:
    """A compiled kernel -> (its SASS from nvdisasm, its resource usage from cuobjdump: REG, STACK, LOCAL, ...)."""
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        sass = subprocess.run([tools / "nvdisasm", "-c", cubin], capture_output=True, text=True, check=True).stdout
        usage = subprocess.run([tools / "cuobjdump", "-res-usage", cubin], capture_output=True, text=True).stdout
    return sass, {name: int(value) for name, value in re.findall(r"(\w+):(\d+)", usage)}


def compile_tile(tile: mxfp4_moe.TileConfig):
    constants = dict(GATHER=tile.block_m != 1, SWIGLU=True, ONE_ROW=tile.block_m == 1, DOT_FLOAT32=False, BLOCK_M=tile.block_m,
                     BLOCK_N=tile.block_n, BLOCK_K=tile.block_k, SPLIT_K=1, DECODE=tile.decode,
                     ROW_TILES=tile.block_m == 1, SHARED_X=tile.block_m == 1)  # one-row: as batch-1 decoding runs
    aligned = [n for n, t in ARGUMENTS.items() if t[0] == "*" or n in "NK"]
    return compile_for_hopper(mxfp4_moe._moe_mxfp4_kernel, ARGUMENTS, constants, aligned, num_warps=tile.warps,
                              num_stages=tile.stages)


def main_loop(sass: str) -> list[str]:
    """The instructions (opcode with its modifiers, e.g. LDG.E.128) between a label and the backward branch to it,
    the longest such span."""
    lines = sass.splitlines()
    best = []
    for end, line in enumerate(lines):
        target = re.search(r"BRA `\((\.L_x_\d+)\)", line)
        if target:
            start = next((i for i, ln in enumerate(lines) if ln.strip().startswith(target.group(1) + ":")), None)
            if start is not None and start < end and end - start > len(best):
                best = lines[start:end + 1]
    return [m.group(1) for ln in best if (m := re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9.]*)", ln))]


def describe(tile: mxfp4_moe.TileConfig) -> dict:
    sass, usage = machine_code(compile_tile(tile))
    loop = main_loop(sass)
    threads = 32 * tile.warps
    weights_per_thread = tile.block_n * tile.block_k / threads  # the weights a thread decodes in one loop step
    mix = collections.Counter(op.split(".")[0] for op in loop)
    return {
        "tile": list(tile), "registers": usage["REG"],
        "loop_instructions": len(loop), "weights_per_thread_per_step": weights_per_thread,
        "instructions_per_weight": round(len(loop) / weights_per_thread, 2),
        "shared_memory_in_loop": sum(n for op, n in mix.items() if op in ("STS", "LDS", "LDSM", "STSM", "BAR")),
        "global_loads_128_bit": sum(op.startswith(("LDG", "LDGSTS")) and op.endswith(".128") for op in loop),
        "mix": dict(mix.most_common(12)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tile", nargs=7, action="append", metavar=("M", "N", "K", "WARPS", "STAGES", "SPLIT", "DECODE"),
                        help="a TileConfig to compile (repeatable); default: every tile of CONFIGS")
    args = parser.parse_args()
    tiles = ([mxfp4_moe.TileConfig(*map(int, t[:6]), t[6]) for t in args.tile] if args.tile
             else list(mxfp4_moe.CONFIGS.values()))
    for tile in tiles:
        print(json.dumps(describe(tile)), flush=True)


if __name__ == "__main__":
    main()
