"""The fused MXFP4 expert kernels alone, one 20b-shaped layer on CUDA: time of MXFP4Experts' forward against the
dequantized bf16 experts (fast.grouped_experts, torch._grouped_mm) for batch-1 decoding, batch 8 and a 2048-token
prefill, with the bytes each must read and the FLOPs it must do, and a sweep of the kernel's tile configurations.

    PYTHONPATH=. python3 scripts/bench_mxfp4_kernels.py --json kernels.json
"""

import argparse
import itertools
import json
import sys

import torch
import triton.testing

sys.path.insert(0, ".")
from gptoss_model import GPTOss_20B  # noqa: E402
from gptoss_model.fast import grouped_experts  # noqa: E402
from gptoss_model.kernels import mxfp4_moe  # noqa: E402
from gptoss_model.model import GptOssExperts  # noqa: E402
from gptoss_model.mxfp4_experts import MXFP4Experts, fill_random_  # noqa: E402

SWEEP = {  # (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); each is compiled once (about a second)
    "one_row": [(1, n, k, 4, 3) for n, k in itertools.product((16, 32, 64), (128, 256, 512))],
    "small": [(16, n, k, 4, 3) for n, k in itertools.product((32, 64, 128), (64, 128, 256))],
    "large": [(m, n, k, w, 3) for m, n, k, w in itertools.product((64, 128), (64, 128), (64, 128), (4, 8))],
}


def case(tokens, config, experts, dense):
    x = torch.randn(tokens, config.hidden_size, device="cuda", dtype=torch.bfloat16)
    weights, indices = torch.topk(torch.randn(tokens, config.num_local_experts, device="cuda"), 4)
    weights = weights.softmax(-1).to(torch.bfloat16)
    chosen = indices.unique().numel()
    per_expert = 3 * config.hidden_size * config.intermediate_size
    packed_bytes = chosen * per_expert * 17 / 32  # 4 bits + 1 scale byte per 32
    flops = 2 * tokens * 4 * per_expert
    packed_ms = triton.testing.do_bench(lambda: experts(x, weights, indices), warmup=50, rep=300,
                                        return_mode="median")
    dense_ms = triton.testing.do_bench(lambda: grouped_experts(dense, x, weights, indices), warmup=50, rep=300,
                                       return_mode="median")
    return {"tokens": tokens, "experts_read": chosen, "packed_ms": round(packed_ms, 4),
            "dense_bf16_ms": round(dense_ms, 4), "packed_GB_s": round(packed_bytes / packed_ms / 1e6, 1),
            "dense_GB_s": round(chosen * per_expert * 2 / dense_ms / 1e6, 1),
            "packed_TFLOP_s": round(flops / packed_ms / 1e9, 1), "dense_TFLOP_s": round(flops / dense_ms / 1e9, 1)}


def sweep(tokens, config, experts, kind):
    x = torch.randn(tokens, config.hidden_size, device="cuda", dtype=torch.bfloat16)
    weights, indices = torch.topk(torch.randn(tokens, config.num_local_experts, device="cuda"), 4)
    saved = dict(mxfp4_moe.CONFIGS)
    results = []
    for choice in SWEEP[kind]:
        mxfp4_moe.CONFIGS[kind] = choice
        try:
            ms = triton.testing.do_bench(lambda: experts(x, weights.to(torch.bfloat16), indices), warmup=20, rep=100,
                                         return_mode="median")
            results.append((round(ms, 4), choice))
        except Exception as error:  # a tile too big for shared memory: skip it, say so
            results.append((float("inf"), f"{choice}: {type(error).__name__}"))
    mxfp4_moe.CONFIGS.update(saved)
    results.sort(key=lambda r: r[0])
    return {"tokens": tokens, "kind": kind, "best": results[:5], "current": saved[kind]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json")
    parser.add_argument("--no-sweep", action="store_true")
    args = parser.parse_args()
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
        for tokens in (1, 8, 2048):
            result["cases"].append(case(tokens, config, experts, dense))
            print(json.dumps(result["cases"][-1]), flush=True)
        if not args.no_sweep:
            for tokens, kind in ((1, "one_row"), (8, "small"), (2048, "large")):
                result["sweeps"].append(sweep(tokens, config, experts, kind))
                print(json.dumps(result["sweeps"][-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
