"""Where the fast path spends its time on a GPU: torch.profiler tables for one prefill and a few decode steps.

20b shape with --layers N (default 8: the per-layer picture is the same, and it builds faster), bf16, random weights.
Prints the top kernels by CUDA time for a --prefill-token forward, then for --steps uncaptured StaticDecoder steps.

    PYTHONPATH=. python3 scripts/profile_gpu.py --layers 8
"""

import argparse
import traceback
import warnings

import torch
from torch.profiler import ProfilerActivity, profile

from gptoss_model import GPTOss_20B, GPTOssModelFull
from gptoss_model.generate import StaticDecoder


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
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))
        print("== host syncs in one prefill (torch.cuda.set_sync_debug_mode) ==")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            model(input_ids=ids)
            torch.cuda.set_sync_debug_mode(0)
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        print(f"{len(syncs)} synchronizing calls")
        for w in syncs[:5]:
            print(" ", str(w.message)[:200])
        if syncs:
            torch.cuda.set_sync_debug_mode("error")
            try:
                model(input_ids=ids)
            except RuntimeError:  # where the first one happens
                traceback.print_exc(limit=-12)
            torch.cuda.set_sync_debug_mode(0)
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
