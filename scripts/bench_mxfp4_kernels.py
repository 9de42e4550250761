"""The fused MXFP4 expert kernels alone, one 20b-shaped layer on CUDA: time of MXFP4Experts' forward against the
dequantized bf16 experts (fast.grouped_experts, torch._grouped_mm) for batch-1 decoding, batch 8 and a 2048-token
prefill, with the bytes each must read and the FLOPs it must do, and a sweep of the kernel's tile configurations.

    PYTHONPATH=. python3 scripts/bench_mxfp4_kernels.py --json kernels.json
    PYTHONPATH=. python3 scripts/bench_mxfp4_kernels.py --graph --save-best tiles.json   # then, to use them:
    GPTOSS_MXFP4_TILES=tiles.json PYTHONPATH=. python3 scripts/bench_gpu.py --impl ours-mxfp4-graph
"""

import argparse
import itertools
import json
import os
import sys

import torch
import triton.testing

sys.path.insert(0, ".")
from gptoss_model import GPTOss_20B  # noqa: E402
from gptoss_model.fast import grouped_experts  # noqa: E402
from gptoss_model.kernels import mxfp4_fragments, mxfp4_moe  # noqa: E402
from gptoss_model.model import GptOssExperts  # noqa: E402
from gptoss_model.mxfp4_experts import MXFP4Experts, fill_random_  # noqa: E402

T = mxfp4_moe.TileConfig
# (block_m, block_n, block_k, warps, stages, split_k, decode); each is compiled once (a second or a few). One-row
# tiles are swept in two rounds: tile shape × warps × decoding, then the best of those with split_k × stages.
SWEEP = {  # the current tile of each kind is timed too (sweep())
    # fifth session: the one-row kernel changed (x in registers, session 4): shapes and warps swept again
    "one_row": [T(1, n, k, w, 3, 1, "pairs") for n, k, w in itertools.product((8, 16, 32), (256, 512, 1024), (2, 4, 8))],
    # a row's whole input in one step (block_k 2048-4096) lost on the H200: left out
    # (docs/results/mxfp4-kernels-h200-2026-12-01-session3-one-row-long.json; rerun them with --tiles)
    "small": [T(16, n, k, w, 3, s, "pairs") for (n, k), w, s in
              itertools.product(((64, 128), (128, 64), (128, 128)), (4, 8), (1, 2, 3, 4))],  # split_k: fifth session
    "large": [T(m, n, k, w, 3, 1, "pairs") for (m, n, k), w in
              itertools.product(((128, 64, 64), (128, 128, 64), (64, 128, 128), (128, 128, 128), (128, 256, 64),
                                 (256, 128, 64)), (4, 8))],
}


def second_round(best: "mxfp4_moe.TileConfig"):
    splits = (1, 2, 3, 4, 6) if best.block_m == 1 else (1,)  # split_k serves matrix-vector tiles only
    return [best._replace(split_k=s, stages=st) for s, st in itertools.product(splits, (2, 3, 4))]


FRAGMENT_WARPS = (1, 2, 4, 8)  # warps a program of the fragments kernel, each timed where it serves (<= MAX_ROWS)
GRAPH = False  # --graph: time CUDA-graph replays (GPU time only, as the decoder runs), not eager launches


def timed(fn) -> float:
    """Milliseconds per call: the median of eager calls (Python and launch overhead included), or with --graph
    the mean of CUDA-graph replays (what the CUDA-graph decoder pays)."""
    if GRAPH:
        return triton.testing.do_bench_cudagraph(fn, rep=100)
    return triton.testing.do_bench(fn, warmup=20, rep=100, return_mode="median")


def case(tokens, config, experts, dense):
    x = torch.randn(tokens, config.hidden_size, device="cuda", dtype=torch.bfloat16)
    weights, indices = torch.topk(torch.randn(tokens, config.num_local_experts, device="cuda"), 4)
    weights = weights.softmax(-1).to(torch.bfloat16)
    chosen = indices.unique().numel()
    per_expert = 3 * config.hidden_size * config.intermediate_size
    packed_bytes = chosen * per_expert * 17 / 32  # 4 bits + 1 scale byte per 32
    flops = 2 * tokens * 4 * per_expert
    packed_ms = timed(lambda: experts(x, weights, indices))
    dense_ms = timed(lambda: grouped_experts(dense, x, weights, indices))
    result = {"tokens": tokens, "experts_read": chosen, "packed_ms": round(packed_ms, 4),
              "dense_bf16_ms": round(dense_ms, 4), "packed_GB_s": round(packed_bytes / packed_ms / 1e6, 1),
              "dense_GB_s": round(chosen * per_expert * 2 / dense_ms / 1e6, 1),
              "packed_TFLOP_s": round(flops / packed_ms / 1e9, 1), "dense_TFLOP_s": round(flops / dense_ms / 1e9, 1)}
    if mxfp4_moe.FRAGMENTS and tokens * 4 <= mxfp4_fragments.MAX_ROWS:  # the fragments kernel: against the tiles
        mxfp4_moe.FRAGMENTS = False
        result["tiles_kernel_ms"] = round(timed(lambda: experts(x, weights, indices)), 4)
        mxfp4_moe.FRAGMENTS = True
        saved = mxfp4_fragments.WARPS, mxfp4_fragments.SORTED_WARPS
        for warps in FRAGMENT_WARPS:
            mxfp4_fragments.WARPS = mxfp4_fragments.SORTED_WARPS = warps
            result[f"fragments_{warps}_warps_ms"] = round(timed(lambda: experts(x, weights, indices)), 4)
        mxfp4_fragments.WARPS, mxfp4_fragments.SORTED_WARPS = saved
        mxfp4_fragments.PREFETCH = not mxfp4_fragments.PREFETCH
        result[f"fragments_prefetch_{mxfp4_fragments.PREFETCH}_ms"] = round(timed(lambda: experts(x, weights, indices)), 4)
        mxfp4_fragments.PREFETCH = not mxfp4_fragments.PREFETCH
    return result


def sweep(tokens, config, experts, kind, choices=None):
    x = torch.randn(tokens, config.hidden_size, device="cuda", dtype=torch.bfloat16)
    weights, indices = torch.topk(torch.randn(tokens, config.num_local_experts, device="cuda"), 4)
    weights = weights.to(torch.bfloat16)
    saved = dict(mxfp4_moe.CONFIGS)
    results = []
    for choice in [saved[kind], *(choices or SWEEP[kind])]:
        mxfp4_moe.CONFIGS[kind] = choice
        try:
            ms = timed(lambda: experts(x, weights, indices))
            results.append((round(ms, 4), list(choice)))
        except Exception as error:  # a tile too big for shared memory, a variant this Triton lacks: skip, say so
            results.append((float("inf"), f"{list(choice)}: {type(error).__name__}: {str(error)[:120]}"))
    mxfp4_moe.CONFIGS.update(saved)
    results.sort(key=lambda r: r[0])
    return {"tokens": tokens, "kind": kind, "best": results[:8], "all": results, "current": list(saved[kind])}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--graph", action="store_true", help="time CUDA-graph replays instead of eager calls")
    parser.add_argument("--kinds", nargs="+", default=["one_row", "small", "large"], choices=list(SWEEP))
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 8, 2048])
    parser.add_argument("--tiles", type=json.loads, metavar="JSON",
                        help="sweep these tiles (a JSON list of TileConfig lists) instead of SWEEP, for --kinds' kind")
    parser.add_argument("--save-best", metavar="FILE",
                        help=f"write the fastest tile of each kind swept as JSON, for {mxfp4_moe.TILES_ENV}=FILE")
    args = parser.parse_args()
    global GRAPH
    GRAPH = args.graph
    config = GPTOss_20B(num_hidden_layers=1)
    torch.manual_seed(0)
    experts = fill_random_(MXFP4Experts(config, device="cuda", dtype=torch.bfloat16))
    dense = GptOssExperts(config, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        for e in range(config.num_local_experts):
            gate_up, down = experts.dequantized(e, torch.bfloat16)
            dense.gate_up_proj[e].copy_(gate_up)
            dense.down_proj[e].copy_(down)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cases": [], "sweeps": []}
    with torch.no_grad():
        for tokens in args.tokens:
            result["cases"].append(case(tokens, config, experts, dense))
            print(json.dumps(result["cases"][-1]), flush=True)
            save(result, args.json)
        if not args.no_sweep:
            for tokens, kind in ((1, "one_row"), (8, "small"), (2048, "large")):
                if kind not in args.kinds:
                    continue
                choices = [mxfp4_moe.TileConfig(*t) for t in args.tiles] if args.tiles else None
                result["sweeps"].append(sweep(tokens, config, experts, kind, choices))
                print(json.dumps({k: v for k, v in result["sweeps"][-1].items() if k != "all"}), flush=True)
                save(result, args.json)
                if kind == "one_row" and not args.tiles and result["sweeps"][-1]["best"][0][0] < float("inf"):
                    best = mxfp4_moe.TileConfig(*result["sweeps"][-1]["best"][0][1])
                    result["sweeps"].append(sweep(tokens, config, experts, kind, second_round(best)))
                    print(json.dumps({k: v for k, v in result["sweeps"][-1].items() if k != "all"}), flush=True)
                    save(result, args.json)
                if args.save_best:  # the fastest of every round of this kind
                    rounds = [r["best"][0] for r in result["sweeps"] if r["kind"] == kind and r["best"][0][0] < float("inf")]
                    chosen = json.load(open(args.save_best)) if os.path.exists(args.save_best) else {}
                    chosen[kind] = min(rounds)[1] if rounds else list(mxfp4_moe.CONFIGS[kind])
                    save(chosen, args.save_best)


def save(result, path):
    """After every step: a run cut short by a time limit still leaves what it measured."""
    if path:  # written whole, then renamed: a reader never sees half a file
        with open(path + ".tmp", "w") as f:
            json.dump(result, f, indent=2)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
