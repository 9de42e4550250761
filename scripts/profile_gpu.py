"""Where a decode step and a prefill spend their GPU time: torch.profiler's CUDA kernel times, grouped by what the
kernel does, for the 20b shape in bf16, with the experts packed (MXFP4) and dequantized.

Decode: StaticDecoder's step (batch 1 or --batch), timed as CUDA-graph replays (what bench_gpu.py measures), then
profiled uncaptured (the same kernels; the profile shows each kernel's GPU time, the replay time shows what the
kernels cost together with the gaps between them). Prefill: one forward of --prefill tokens.

    PYTHONPATH=. python3 scripts/profile_gpu.py --json profile.json
"""

import argparse
import collections
import datetime
import gc
import json
import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, "scripts")
sys.path.insert(0, ".")
import bench_gpu  # noqa: E402
from gptoss_model import GPTOss_20B  # noqa: E402
from gptoss_model.generate import StaticDecoder  # noqa: E402

CATEGORIES = (  # first match wins: (category, substrings of the kernel name)
    ("experts (packed MXFP4 kernel)", ("moe_mxfp4", "splitk_finish")),
    ("experts (grouped bf16 matmul)", ("grouped", "group_gemm", "grouped_mm")),
    ("matmul (attention projections, router, LM head)", ("gemm", "gemv", "nvjet", "cutlass", "sm90_xmma", "splitK")),
    ("attention (scores, softmax with sinks)", ("flex", "attention", "attn", "sdpa", "fmha")),
    ("argmax / top-k / sort", ("argmax", "topk", "sort", "radix", "bitonic", "reduce_kernel")),
    ("compiled elementwise (norms, rotary, SwiGLU, adds)", ("triton_",)),
    ("copies and fills", ("copy", "fill", "index", "cat", "memcpy", "memset")),
)


def category(name: str) -> str:
    lowered = name.lower()
    for label, keys in CATEGORIES:
        if any(k.lower() in lowered for k in keys):
            return label
    return "other"


def kernel_table(prof, steps: int) -> dict:
    """Kernel events of the profile -> per-step microseconds by category and the top kernels."""
    by_name = collections.Counter()
    counts = collections.Counter()
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            by_name[event.name] += event.time_range.elapsed_us()
            counts[event.name] += 1
    by_category = collections.Counter()
    for name, us in by_name.items():
        by_category[category(name)] += us
    total = sum(by_name.values())
    return {
        "kernel_us_per_step": round(total / steps, 1),
        "kernels_per_step": round(sum(counts.values()) / steps, 1),
        "by_category_us_per_step": {k: round(v / steps, 1) for k, v in by_category.most_common()},
        "top_kernels_us_per_step": [(name[:90], round(us / steps, 1), counts[name] // steps)
                                    for name, us in by_name.most_common(25)],
    }


def replay_ms(graph, repeats: int = 50) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def profile_impl(impl: str, config, args) -> dict:
    model = bench_gpu.build(impl, config, torch.bfloat16)
    row = {"impl": impl}
    with torch.no_grad():
        decoder = StaticDecoder(model, batch=args.batch, max_len=512)
        ids = torch.randint(0, config.vocab_size, (args.batch, 128), device="cuda")
        decoder.generate(ids, 4)  # prefill, capture, a few replays
        row["decode_graph_ms_per_step"] = round(replay_ms(decoder.graph), 3)
        row["decode_graph_tok_s"] = round(args.batch * 1000 / row["decode_graph_ms_per_step"], 1)
        for _ in range(3):
            decoder._step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.steps):
                decoder._step()
            torch.cuda.synchronize()
        row["decode"] = kernel_table(prof, args.steps)
        ids = torch.randint(0, config.vocab_size, (1, args.prefill), device="cuda")
        for _ in range(2):
            model(input_ids=ids)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(input_ids=ids)
        end.record()
        torch.cuda.synchronize()
        row["prefill_ms"] = round(start.elapsed_time(end), 2)
        row["prefill_tok_s"] = round(args.prefill * 1000 / row["prefill_ms"])
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            model(input_ids=ids)
            torch.cuda.synchronize()
        row["prefill"] = kernel_table(prof, 1)
    del model, decoder
    gc.collect()
    torch.cuda.empty_cache()
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", nargs="+", default=["ours-mxfp4-graph", "ours-graph"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--prefill", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--json")
    args = parser.parse_args()
    config = GPTOss_20B(num_hidden_layers=args.layers)
    result = {"date": datetime.date.today().isoformat(), "device": torch.cuda.get_device_name(),
              "torch": torch.__version__, "command": " ".join(sys.argv), "rows": []}
    for impl in args.impl:
        try:
            result["rows"].append(profile_impl(impl, config, args))
        except Exception as error:  # record, don't hide: one failing impl must not lose the other's profile
            result["rows"].append({"impl": impl, "error": f"{type(error).__name__}: {str(error)[:300]}"})
        print(json.dumps(result["rows"][-1], indent=1), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
