"""Where the fast path spends its time on a GPU: torch.profiler tables for one prefill and a few decode steps.

20b shape with --layers N (default 8: the per-layer picture is the same, and it builds faster), bf16, random weights.
Prints the top kernels by CUDA time for a --prefill-token forward, then for --steps uncaptured StaticDecoder steps.

    PYTHONPATH=. python3 scripts/profile_gpu.py --layers 8
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from gptoss_model import GPTOss_20B, GPTOssModelFull
from gptoss_model.decode import StaticDecoder


def table(prof, rows):
    return prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--prefill", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rows", type=int, default=18)
    args = parser.parse_args()
    config = GPTOss_20B(num_hidden_layers=args.layers, implementation="fast")
    model = GPTOssModelFull(config, device="cuda", dtype=torch.bfloat16).eval()
    ids = torch.randint(0, config.vocab_size, (1, args.prefill), device="cuda")
    with torch.no_grad():
        for _ in range(2):
            model(input_ids=ids)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model(input_ids=ids)
            torch.cuda.synchronize()
        print(f"== prefill {args.prefill} tokens, {args.layers} layers ==")
        print(table(prof, args.rows))
        decoder = StaticDecoder(model, batch=1, max_len=256)
        decoder.use_graph = False  # profile the step's kernels one by one
        decoder.generate(ids[:, :128], 3)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(args.steps):
                decoder._step()
            torch.cuda.synchronize()
        print(f"== {args.steps} decode steps (batch 1, not captured), {args.layers} layers ==")
        print(table(prof, args.rows))


if __name__ == "__main__":
    main()
