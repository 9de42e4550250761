"""Whether batch 1's expert kernel is held back by where it reads rather than by what it computes: the 4 chosen
experts' packed gate/up blocks (35.3 MB for the 20b) read by loads alone, no decoding and no products, in the same
grid as the fragments kernel (kernels/mxfp4_fragments.py: a program per 16 rows of an expert, 4 warps, K = 2,880),
three ways:
- contiguous: a program reads its 16 rows' 23,040 bytes in order, a warp 512 consecutive bytes a load;
- fragments: the fragments kernel's own weight loads (mxfp4_fragments._step_operands, its loads of x and of the
  scales unused and so dropped): thread (g, t) 16 bytes of rows a and b, a warp's load 8 pieces of 64 bytes, 1,440
  bytes apart (Triton 3.6 splits some of these 16-byte loads in two here, offline; the kernel's are whole);
- fragments-all: what the kernel loads in a step (mxfp4_fragments._step_operands: the weights, x's values and the
  scale bytes);
beside the fragments kernel itself, each as a CUDA graph of back-to-back launches. Every program xor-sums what it
read and stores one int32, so nothing is dropped.

    PYTHONPATH=. python3 scripts/bench_expert_access_pattern.py --json access-pattern.json

Why: bench_expert_launch_cost.py measured the kernel at 2.45 TB/s beyond a 3.0 µs fixed cost a launch (ninth
session), and seven ways of holding more loads in flight measured flat or worse. If contiguous reads reach the
copy bandwidth (~4.3 TB/s) where the fragments pattern stays near 2.5, the lever is the weights' order in memory
(the same bytes, permuted once at load time so that a warp's loads are consecutive), not the loop.
"""

import argparse
import json
import sys

import torch
import triton
import triton.language as tl

sys.path.insert(0, ".")
sys.path.insert(0, "scripts")
from bench_expert_launch_cost import (CHOSEN, HIDDEN, batch_one_inputs, launch_fragments,  # noqa: E402
                                      packed_bytes_read, time_launch)
from gptoss_model.io import atomic_write_text  # noqa: E402
from gptoss_model.kernels.mxfp4_fragments import WARPS, _fragment_rows, _step_operands  # noqa: E402

PATTERNS = ("contiguous", "fragments", "fragments-all")


@triton.jit
def _read_kernel(blocks_ptr, scales_ptr, x_ptr, expert_ptr, out_ptr, N, K, PATTERN: tl.constexpr,
                 WARPS: tl.constexpr):
    """Program (tile, block): the 16 rows 16·block.. of expert expert_ptr[tile], read as PATTERN (0 contiguous, 1
    fragments, 2 fragments-all); out[tile, block] = the xor of every int32 word read."""
    tile = tl.program_id(0)
    block = tl.program_id(1)
    expert = tl.load(expert_ptr + tile).to(tl.int64)
    THREADS: tl.constexpr = 32 * WARPS
    thread = tl.arange(0, THREADS)
    word = tl.arange(0, 4)[None, :]
    blocks = blocks_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    acc = tl.zeros((THREADS, 4), dtype=tl.int32)
    if PATTERN == 0:  # the program's 16 rows are one range of 16·K/8 words: 2 loads of a whole program a step
        first = (expert * N + block * 16) * (K // 8)
        size = 16 * (K // 8)
        for at in range(0, size, 8 * THREADS):
            a = at + thread[:, None] * 4 + word
            b = a + 4 * THREADS
            acc ^= tl.load(blocks + first + a, mask=a < size, other=0)
            acc ^= tl.load(blocks + first + b, mask=b < size, other=0)
    else:
        g = (thread % 32) // 4
        row_a, row_b = _fragment_rows(block, g, True)
        row_a_at = expert * N + row_a
        row_b_at = expert * N + row_b
        x_words = x_ptr.to(tl.pointer_type(tl.int32), bitcast=True)
        x_row = tl.zeros((THREADS,), dtype=tl.int64)
        slot_ok = g == 0  # batch 1: one token, slot 0
        for k0 in range(0, K, 128 * WARPS):  # the kernel's own loads (those of x and the scales unused: dropped)
            wa, wb, q0, q1, q2, q3, scales = _step_operands(blocks, x_words, scales_ptr, row_a_at, row_b_at, x_row,
                                                            slot_ok, thread, k0, K, True)
            if PATTERN == 1:
                acc ^= wa ^ wb
            else:
                acc ^= wa ^ wb ^ q0 ^ q1 ^ q2 ^ q3 ^ scales
    tl.store(out_ptr + tile * tl.num_programs(1) + block, tl.xor_sum(tl.xor_sum(acc, 1), 0))


def read(pattern: str, blocks, scales, x, chosen) -> torch.Tensor:
    """Launch the reads of `pattern` -> [chosen, N/16] int32, each program's xor of the words it read."""
    E, N, G, _ = blocks.shape
    out = torch.empty(chosen.shape[0], N // 16, dtype=torch.int32, device=blocks.device)
    _read_kernel[(chosen.shape[0], N // 16)](blocks, scales, x, chosen, out, N, G * 32,
                                             PATTERN=PATTERNS.index(pattern), WARPS=WARPS, num_warps=WARPS)
    return out


def xor_of_words(blocks: torch.Tensor) -> int:
    """The xor of all int32 words of a uint8 tensor (its bytes in memory order)."""
    words = blocks.contiguous().view(torch.int32).reshape(-1).to(torch.int64)
    total = 0
    for value in words.tolist():
        total ^= value
    return total


def measure(rows: int) -> list[dict]:
    blocks, scales, bias, x, chosen = batch_one_inputs(rows)
    weight_bytes = CHOSEN * rows * HIDDEN // 2
    launches = {pattern: (lambda p=pattern: read(p, blocks, scales, x, chosen)) for pattern in PATTERNS}
    launches["fragments kernel"] = lambda: launch_fragments(blocks, scales, bias, x, chosen)
    results = []
    for name, launch in launches.items():
        microseconds = time_launch(launch)
        counted = packed_bytes_read(rows) if name in ("fragments-all", "fragments kernel") else weight_bytes
        results.append({"rows": rows, "pattern": name, "us_per_launch": round(microseconds, 2), "bytes": counted,
                        "TB_per_s": round(counted / microseconds / 1e6, 3)})
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[2880, 5760], help="output rows of each chosen expert")
    parser.add_argument("--json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (the reads are timed as CUDA graphs)")
    if any(r <= 0 or r % 16 for r in args.rows):
        parser.error(f"--rows: expected positive multiples of 16, got {args.rows}")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "command": "scripts/bench_expert_access_pattern.py " + " ".join(sys.argv[1:]), "rows": []}
    for rows in args.rows:
        for row in measure(rows):
            print(json.dumps(row), flush=True)
            result["rows"].append(row)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
