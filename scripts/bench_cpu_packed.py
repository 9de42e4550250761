"""The 20b shape on the CPU with packed MXFP4 experts: greedy tokens/s and peak RSS (one child process).

    python scripts/bench_cpu_packed.py --checkpoint /tmp/gptoss-20b     # made by make_checkpoint.py if absent

Loads the checkpoint with `load_model(..., dtype=bfloat16, experts="mxfp4")` (the experts stay as the file's uint8
blocks and scales: 13.8 GB in all, where the dequantized model would need 41.8 GB and does not fit a 24 GiB
machine), then times greedy generation after a short prompt: a prefill of --prompt tokens, then --new tokens
(decode time = full generation minus a one-token generation). Each decoded token dequantizes, exactly, only the
4 experts its router chose in each of the 24 layers (gptoss_model/mxfp4_experts.py). Peak RSS is the child's
ru_maxrss. Prints one JSON line.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args) -> dict:
    import torch

    from gptoss_convert import load_model

    t0 = time.time()
    model = load_model(args.checkpoint, dtype=torch.bfloat16, experts="mxfp4")
    load_s = time.time() - t0
    rss_after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ids = torch.randint(0, model.config.vocab_size, (1, args.prompt), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        t0 = time.time()
        first = model.generate(ids, 1)
        prefill_s = time.time() - t0
        t0 = time.time()
        tokens = model.generate(ids, 1 + args.new)
        full_s = time.time() - t0
    assert torch.equal(tokens[:, : args.prompt + 1], first), "greedy decoding must be deterministic"
    decode_s = full_s - prefill_s
    return {
        "checkpoint": str(args.checkpoint), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "load_s": round(load_s, 1), "rss_after_load_GB": round(rss_after_load / 1e9, 2),
        "prompt": args.prompt, "new": args.new, "prefill_s": round(prefill_s, 2),
        "decode_tok_s": round(args.new / decode_s, 3), "decode_s_per_token": round(decode_s / args.new, 2),
        "peak_rss_GB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9, 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("/tmp/gptoss-20b"))
    parser.add_argument("--prompt", type=int, default=4)
    parser.add_argument("--new", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not (args.checkpoint / "config.json").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts/make_checkpoint.py"), "--shape", "20b", "--layout", "hf",
                        "--out", str(args.checkpoint)], check=True, env=env)
    result = subprocess.run([sys.executable, __file__, "--child", "--checkpoint", str(args.checkpoint),
                             "--prompt", str(args.prompt), "--new", str(args.new)], env=env, capture_output=True,
                            text=True)
    if result.returncode:
        sys.exit(f"error: the child failed: {result.stderr[-500:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["machine"] = f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} after the run"
    print(json.dumps(row))


if __name__ == "__main__":
    main()
