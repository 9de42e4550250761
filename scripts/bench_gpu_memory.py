"""Peak GPU memory of a packed-experts model (experts="mxfp4") with a 4k-token KV cache, and its decode speed.

    PYTHONPATH=. python3 scripts/bench_gpu_memory.py --checkpoint /tmp/ckpt20b      # load_model(..., experts="mxfp4")
    PYTHONPATH=. python3 scripts/bench_gpu_memory.py --shape 120b                     # built in GPU memory, random bytes

Loads (or builds) the model in bf16 on the GPU, then runs the CUDA-graph decoder with a 4096-slot static KV cache:
a prompt of 4096 - 64 tokens, then 64 greedy tokens. Reports torch.cuda.max_memory_allocated after loading and
after the generation, the bytes of the model's parameters and buffers, and the decode speed. `--shape` builds the
model without a checkpoint (when the disk cannot hold one: the 120b checkpoint is 65 GB), with random MXFP4 bytes.
"""

import argparse
import json
import sys
import time

import torch

sys.path.insert(0, ".")
from gptoss_model import GPTOss_20B, GPTOss_120B  # noqa: E402
from gptoss_model.generate import StaticDecoder  # noqa: E402
from gptoss_model.mxfp4_experts import packed_bytes  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint")
    parser.add_argument("--shape", choices=("20b", "120b"))
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    if args.checkpoint:
        from gptoss_convert import load_model

        model = load_model(args.checkpoint, dtype=torch.bfloat16, device="cuda", experts="mxfp4")
        source = f"load_model({args.checkpoint!r}, experts='mxfp4')"
    else:
        sys.path.insert(0, "scripts")
        from bench_gpu import build_packed

        config = (GPTOss_20B() if args.shape == "20b" else GPTOss_120B())
        model = build_packed(config, torch.bfloat16)
        source = f"{args.shape} shape built in GPU memory, random MXFP4 bytes"
    model.set_implementation("fast")
    load_s = time.time() - t0
    after_load = torch.cuda.max_memory_allocated()
    ids = torch.randint(0, model.config.vocab_size, (1, args.context - args.new), device="cuda")
    decoder = StaticDecoder(model, batch=1, max_len=args.context)
    with torch.no_grad():
        decoder.generate(ids, args.new)  # compiles, captures the graph
        torch.cuda.synchronize()
        t1 = time.time()
        decoder.generate(ids, args.new)
        torch.cuda.synchronize()
        with_prefill = time.time() - t1
        t1 = time.time()
        decoder.generate(ids, 1)
        torch.cuda.synchronize()
        prefill_only = time.time() - t1
    row = {
        "source": source, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "layers": model.config.num_hidden_layers, "experts": model.config.num_local_experts,
        "model_bytes": packed_bytes(model), "load_s": round(load_s, 1),
        "peak_after_load_GB": round(after_load / 1e9, 2),
        "peak_with_kv_cache_GB": round(torch.cuda.max_memory_allocated() / 1e9, 2),
        "peak_with_kv_cache_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "context": args.context,
        "prefill_tok_s": round((args.context - args.new) / prefill_only),
        "decode_tok_s_at_4k": round((args.new - 1) / max(with_prefill - prefill_only, 1e-9), 1),
    }
    print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=2)


if __name__ == "__main__":
    main()
