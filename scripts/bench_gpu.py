"""GPU speed: gptoss_model (eager and fast) against Transformers (eager and flex attention), in the same run.

20b shape (or --layers N of it), bf16, random weights built directly on the GPU. For each implementation:
prefill tokens/s at each --prefill length (batch 1, full logits, median of --repeats timed with CUDA events after a
warm-up; the "-graph" implementations replay the prefill from a CUDA graph per prompt shape, since the fifth
session), greedy decode tokens/s at each --decode-batch (a 128-token prompt, then --decode-steps new tokens; the
prefill time is subtracted, and for the CUDA-graph decoders only the steps are timed, since the fifth session;
medians of --repeats runs too, since the fourth session), and peak GPU memory
(torch.cuda.max_memory_allocated). Models are built one at a time
and freed in between (two 20b models do not fit one 80 GB GPU together).

    PYTHONPATH=. python3 scripts/bench_gpu.py --json bench_gpu.json
    PYTHONPATH=. python3 scripts/bench_gpu.py --layers 4 --impl ours-fast hf-eager     # a quick look
"""

import argparse
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, ".")
from gptoss_model import GPTOss_20B, GPTOssModelFull  # noqa: E402

# graph: fast + StaticDecoder; mxfp4: fast with the experts packed (gptoss_model/mxfp4_experts.py, fused kernels)
IMPLS = ("hf-eager", "hf-flex", "ours-eager", "ours-fast", "ours-graph", "ours-mxfp4", "ours-mxfp4-graph")


def build(impl: str, config, dtype):
    torch.manual_seed(0)
    if impl.startswith("ours-mxfp4"):
        return build_packed(config.replace(implementation="fast"), dtype)
    if impl.startswith("ours"):
        config = config.replace(implementation="eager" if impl == "ours-eager" else "fast")
        return GPTOssModelFull(config, device="cuda", dtype=dtype).eval()
    from transformers import GptOssConfig, GptOssForCausalLM

    hf_config = GptOssConfig(**config.to_hf_config())
    hf_config._attn_implementation = "flex_attention" if impl == "hf-flex" else "eager"
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built directly in bf16: a float32 20b (84 GB) would not fit
    try:
        with torch.device("cuda"):
            model = GptOssForCausalLM(hf_config)
    finally:
        torch.set_default_dtype(default)
    return model.eval()


def build_packed(config, dtype):
    """A random model whose experts stay MXFP4 (random codes and scales): built on the meta device, so the dense
    experts never exist, then materialised on the GPU."""
    from gptoss_model.model import GptOssRotaryEmbedding
    from gptoss_model.mxfp4_experts import MXFP4Experts, fill_random_, use_packed_experts

    model = use_packed_experts(GPTOssModelFull(config, device="meta", dtype=dtype))
    model.to_empty(device="cuda")
    model.model.rotary_emb = GptOssRotaryEmbedding(config, device="cuda")  # its buffer is computed, not loaded
    model.reset_parameters()
    for module in model.modules():
        if isinstance(module, MXFP4Experts):
            fill_random_(module)
    return model.eval()


def forward(impl, model, ids):
    if impl.endswith("-graph"):  # the prefill replayed from a CUDA graph per prompt shape (since the fifth session)
        from gptoss_model.generate import GraphedForward

        if id(model) not in _graphed:
            _graphed.clear()
            _graphed[id(model)] = GraphedForward(model)
        return _graphed[id(model)](ids)
    if impl.startswith("ours"):
        return model(input_ids=ids)
    return model(input_ids=ids, use_cache=False).logits


_decoders, _graphed = {}, {}


def generate(impl, model, ids, steps):
    if impl.endswith("-graph"):
        from gptoss_model.generate import StaticDecoder

        if ids.shape[0] not in _decoders:
            _decoders[ids.shape[0]] = StaticDecoder(model, batch=ids.shape[0], max_len=256)
        return _decoders[ids.shape[0]].generate(ids, steps)
    if impl.startswith("ours"):
        return model.generate(ids, max_new_tokens=steps)
    return model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=0,
                          attention_mask=torch.ones_like(ids))


def timed(fn, repeats: int, setup=lambda: None) -> float:
    """Median seconds of fn() over `repeats` runs (one warm-up first), timed with CUDA events; setup() runs before
    each, untimed."""
    setup()
    fn()
    times = []
    for _ in range(repeats):
        setup()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def timed_decode(impl, model, ids, steps: int, repeats: int) -> float:
    """Median seconds of `steps` greedy decoding steps of the CUDA-graph decoder after the prompt, timed with CUDA
    events around the steps alone: the prompt's prefill, launched from the host, varied enough to move the older
    full-minus-first difference by ~20 % between processes (docs/benchmarks.md, fifth session)."""
    generate(impl, model, ids, 2)  # builds the decoder, compiles, captures
    decoder = _decoders[ids.shape[0]]
    return timed(lambda: decoder.decode(steps), repeats, setup=lambda: decoder.start(ids, steps + 1))


def bench_one(impl, config, args) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    model = build(impl, config, torch.bfloat16)
    row = {"impl": impl, "build_s": round(time.time() - t0, 1)}
    vocab = config.vocab_size
    with torch.no_grad():
        for n in args.prefill:
            ids = torch.randint(0, vocab, (1, n), device="cuda")
            try:
                seconds = timed(lambda: forward(impl, model, ids), args.repeats)
                row[f"prefill_{n}_tok_s"] = round(n / seconds)
            except Exception as error:  # record, don't hide: one failing impl must not lose the others' numbers
                row[f"prefill_{n}_tok_s"] = f"error: {type(error).__name__}: {str(error)[:200]}"
        for b in args.decode_batch:
            ids = torch.randint(0, vocab, (b, 128), device="cuda")
            try:
                if impl.endswith("-graph"):
                    seconds = timed_decode(impl, model, ids, args.decode_steps, args.repeats)
                else:  # medians of --repeats runs each: a single run of 32 steps varied by ~10 % from call to call
                    full = timed(lambda: generate(impl, model, ids, args.decode_steps + 1), args.repeats)
                    seconds = full - timed(lambda: generate(impl, model, ids, 1), args.repeats)
                row[f"decode_b{b}_tok_s"] = round(b * args.decode_steps / max(seconds, 1e-9), 1)
            except Exception as error:
                row[f"decode_b{b}_tok_s"] = f"error: {type(error).__name__}: {str(error)[:200]}"
    row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--prefill", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--decode-batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--impl", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--single", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = GPTOss_20B(num_hidden_layers=args.layers)
    import transformers

    meta = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "shape": f"20b, {args.layers} layers, bf16",
        "command": " ".join(sys.argv),
    }
    if not args.single:
        print(json.dumps(meta), flush=True)
    if args.single:
        print("ROW " + json.dumps(bench_one(args.single, config, args)), flush=True)
        return
    rows = []
    for impl in args.impl:
        # each implementation in its own process: torch.compile's caches and recompile limits are per process, and
        # one implementation's compiled flex attention must not exhaust them for the next
        child = subprocess.run([sys.executable, *sys.argv, "--single", impl], capture_output=True, text=True)
        found = [line[4:] for line in child.stdout.splitlines() if line.startswith("ROW ")]
        rows.append(json.loads(found[0]) if found else {"impl": impl, "error": child.stderr[-300:]})
        print(json.dumps(rows[-1]), flush=True)
    keys = [k for k in rows[0] if k not in ("impl",)]
    if args.json:  # written whole, then renamed: no half-written file if the run is stopped
        with open(args.json + ".tmp", "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
        os.replace(args.json + ".tmp", args.json)
    print("\n| impl | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for row in rows:
        print(f"| {row['impl']} | " + " | ".join(str(row.get(k)) for k in keys) + " |")


if __name__ == "__main__":
    main()
