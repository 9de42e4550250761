"""Where batch-1 decoding's expert launch spends its time: a fixed cost a launch (launch, ramp, the last wave's tail)
against a cost a byte read. Times the fragments kernel (kernels/mxfp4_fragments.py) as batch-1 decoding launches it,
the 4 chosen experts' gate/up projection, for several output-row counts (the 20b layer has 5,760), each as a CUDA
graph of back-to-back launches, and fits time = fixed + bytes / bandwidth.

    PYTHONPATH=. python3 scripts/bench_expert_launch_cost.py --json launch-cost.json

Why: five changes to how one program waits on its loads measured flat at batch 1 (docs/benchmarks.md, eighth
session). A large fixed cost would point at the launches between programs (fewer, persistent programs; fusing
gate/up with down) rather than at the programs themselves. Measured (ninth session, docs/benchmarks.md): 3.0 µs a
launch, 2.5 TB/s beyond it: the programs, not the launches, hold batch 1 back.
"""

import argparse
import json
import sys

import torch

sys.path.insert(0, ".")
from gptoss_model.io import atomic_write_text  # noqa: E402

ROWS = (720, 1440, 2880, 5760, 11520)  # output rows of each chosen expert (the 20b gate/up: 5,760)
HIDDEN, EXPERTS, CHOSEN = 2880, 32, 4


def fit_line(xs, ys) -> tuple[float, float]:
    """Least-squares (intercept, slope) of ys against xs."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


def packed_bytes_read(rows: int) -> int:
    """The chosen experts' packed weights a launch reads: 16 bytes and one scale byte per 32 weights."""
    return CHOSEN * rows * HIDDEN // 32 * 17


def time_launch(launch, repeats: int = 50, replays: int = 20) -> float:
    """µs a launch, from a CUDA graph of `repeats` back-to-back launches replayed `replays` times (median replay)."""
    launch()  # compile
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(repeats):
            launch()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1000 / repeats)
    return sorted(times)[len(times) // 2]


SCALE_BYTES = (118, 123)  # batch_one_inputs' scale bytes: 118..122, as fill_random_'s


def batch_one_inputs(rows: int) -> tuple:
    """Random packed experts of `rows` output rows on CUDA and batch 1's inputs: (blocks, scales, bias, x, chosen)."""
    generator = torch.Generator("cuda").manual_seed(0)
    blocks = torch.randint(0, 256, (EXPERTS, rows, HIDDEN // 32, 16), dtype=torch.uint8, device="cuda",
                           generator=generator)
    scales = torch.randint(*SCALE_BYTES, (EXPERTS, rows, HIDDEN // 32), dtype=torch.uint8, device="cuda",
                           generator=generator)
    bias = torch.zeros(EXPERTS, rows, dtype=torch.bfloat16, device="cuda")
    x = torch.randn(1, HIDDEN, dtype=torch.bfloat16, device="cuda")
    chosen = torch.tensor([3, 11, 17, 30], device="cuda")  # int64, as the router's top-k gives them
    return blocks, scales, bias, x, chosen


def launch_fragments(blocks, scales, bias, x, chosen):
    """The fragments kernel's gate/up launch as batch-1 decoding makes it (with the SwiGLU)."""
    from gptoss_model.kernels import mxfp4_fragments

    return mxfp4_fragments.moe_mxfp4_fragments(x, blocks, scales, bias, chosen, None, (1.702, 7.0),
                                               largest_scale=SCALE_BYTES[1] - 1)  # no sync inside a graph capture


def measure(rows: int) -> dict:
    inputs = batch_one_inputs(rows)
    microseconds = time_launch(lambda: launch_fragments(*inputs))
    return {"rows": rows, "programs": CHOSEN * rows // 16, "bytes": packed_bytes_read(rows),
            "us_per_launch": round(microseconds, 2),
            "TB_per_s": round(packed_bytes_read(rows) / microseconds / 1e6, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS), help="output rows of each chosen expert")
    parser.add_argument("--json")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA GPU (the fragments kernel compiles for the GPU only)")
    if len(set(args.rows)) < 2 or any(r <= 0 or r % 16 for r in args.rows):
        parser.error(f"--rows: expected two or more distinct positive multiples of 16, got {args.rows}")
    measured = [measure(rows) for rows in args.rows]
    for row in measured:
        print(json.dumps(row), flush=True)
    fixed, per_byte = fit_line([r["bytes"] for r in measured], [r["us_per_launch"] for r in measured])
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "command": "scripts/bench_expert_launch_cost.py " + " ".join(sys.argv[1:]), "rows": measured,
              "fit": {"fixed_us_per_launch": round(fixed, 2), "TB_per_s_beyond_it": round(1 / per_byte / 1e6, 3)}}
    print(json.dumps(result["fit"]))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
