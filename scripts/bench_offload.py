"""Layer offloading on one GPU: a 120b-shaped model whose layers live in pinned host memory (MXFP4 experts packed).

Makes a 120b-shaped checkpoint with --layers N (disk and host memory permitting) if --checkpoint does not exist,
builds gptoss_convert.load.load_offloaded(...), then measures prefill tokens/s (batch 1), greedy decode tokens/s
and peak GPU memory. Per-layer time is reported too, since the full 36 layers scale linearly from it.

    PYTHONPATH=. python3 scripts/bench_offload.py --checkpoint /tmp/ckpt120b --layers 8
"""

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="/tmp/ckpt120b")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--prefill", type=int, default=2048)
    parser.add_argument("--decode-steps", type=int, default=8)
    args = parser.parse_args()
    if not Path(args.checkpoint).exists():
        subprocess.run([sys.executable, str(ROOT / "scripts/make_checkpoint.py"), "--shape", "120b", "--layout", "hf",
                        "--layers", str(args.layers), "--out", args.checkpoint], check=True)
    from gptoss_convert.load import load_offloaded

    t0 = time.perf_counter()
    model = load_offloaded(args.checkpoint, dtype=torch.bfloat16, device="cuda")
    load_s = time.perf_counter() - t0
    layers = len(model.host_layers)
    host_bytes = sum(
        sum(x.numel() * x.element_size() for x in (t if isinstance(t, tuple) else (t,))) for layer in model.host_layers
        for t in layer.values()
    )
    torch.cuda.reset_peak_memory_stats()
    ids = torch.randint(0, model.config.vocab_size, (1, args.prefill), device="cuda")
    with torch.no_grad():
        model(input_ids=ids[:, :128])  # warm-up
        prefill_s = min(timed(lambda: model(input_ids=ids)) for _ in range(2))
        prompt = ids[:, :128]
        one = timed(lambda: model.generate(prompt, 1))
        many = timed(lambda: model.generate(prompt, args.decode_steps + 1))
    decode_s = (many - one) / args.decode_steps
    result = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "checkpoint": f"120b-shaped, {layers} of 36 layers, MXFP4 experts kept packed in pinned host memory",
        "host_pinned_gb": round(host_bytes / 1e9, 2),
        "load_s": round(load_s, 1),
        f"prefill_{args.prefill}_tok_s": round(args.prefill / prefill_s),
        "prefill_s_per_layer": round(prefill_s / layers, 4),
        "decode_tok_s": round(1 / decode_s, 2),
        "decode_s_per_layer": round(decode_s / layers, 4),
        "extrapolated_36_layers": {
            f"prefill_{args.prefill}_tok_s": round(args.prefill / (prefill_s / layers * 36)),
            "decode_tok_s": round(1 / (decode_s / layers * 36), 2),
        },
        "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
