"""A kernel change against an older version of the MXFP4 kernel file, in the same process: one 20b layer's two
launches (gate/up with the SwiGLU, then down) for 1, 8 and 2048 tokens, CUDA-graph replays, the two versions
alternated twice (A, B, A, B) so that drift in the GPU's clock shows.

    git show 3d87417:gptoss_model/kernels/mxfp4_moe.py > /tmp/before.py
    PYTHONPATH=. python3 scripts/bench_kernel_ab.py --before /tmp/before.py --json ab.json
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, ".")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_mxfp4_variants import module_from_source, two_launches  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="an older gptoss_model/kernels/mxfp4_moe.py")
    parser.add_argument("--json")
    args = parser.parse_args()
    import triton.testing

    from gptoss_model import GPTOss_20B
    from gptoss_model.kernels import mxfp4_moe as after
    from gptoss_model.mxfp4_experts import MXFP4Experts, fill_random_

    before = module_from_source("mxfp4_moe_before", open(args.before).read())
    config = GPTOss_20B(num_hidden_layers=1)
    torch.manual_seed(0)
    layer = fill_random_(MXFP4Experts(config, device="cuda", dtype=torch.bfloat16))
    experts = {"gate_up": (layer.gate_up_proj_blocks, layer.gate_up_proj_scales, layer.gate_up_proj_bias),
               "down": (layer.down_proj_blocks, layer.down_proj_scales, layer.down_proj_bias)}

    rows = []
    for tokens in (1, 8, 2048):
        generator = torch.Generator(device="cuda").manual_seed(tokens)
        x = torch.randn(tokens, config.hidden_size, device="cuda", generator=generator).to(torch.bfloat16)
        _, indices = torch.topk(torch.randn(tokens, 32, device="cuda", generator=generator), 4)
        flat = indices.reshape(-1)
        if tokens == 1:  # batch-1 decoding: the chosen experts are the tiles (both versions must know them)
            kind, tiles, x_rows = "one_row", flat.int(), None
        else:
            kind = "small" if tokens == 8 else "large"
            ends = torch.bincount(flat, minlength=32).cumsum(0).int()
            tiles = after.tiles_by_expert(ends, flat.numel(), after.CONFIGS[kind][0])
            x_rows = (torch.argsort(flat, stable=True) // 4).int()
        for name, kernel in (("before", before), ("after", after), ("before", before), ("after", after)):
            ms = triton.testing.do_bench_cudagraph(lambda: two_launches(kernel, experts, x, tiles, x_rows, kind),
                                                   rep=200)
            rows.append({"tokens": tokens, "kernel": name, "tile": kind, "ms": round(ms, 4)})
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with open(args.json + ".tmp", "w") as out:
            json.dump({"device": torch.cuda.get_device_name(), "before": args.before, "rows": rows}, out, indent=1)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
