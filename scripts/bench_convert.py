#!/usr/bin/env python
"""Measure `convert` and `load_model` on 20b-shaped random checkpoints: wall time and peak RSS, each in a child process.

    python scripts/bench_convert.py                    # checkpoints under /tmp, made if absent
    python scripts/bench_convert.py --root /data/bench --keep

Steps (each measured in its own child, peak RSS from getrusage(RUSAGE_CHILDREN) of a one-child wrapper):
1. make_checkpoint --shape 20b --layout hf into ROOT/gptoss-20b (once; 13.8 GB), and a 4-layer one into
   ROOT/gptoss-20b-4l (once; 4.3 GB) — the full dequantized 20b (~42 GB in bf16) does not fit in 24 GiB of RAM.
2. `gptoss-convert convert` of the full 20b into ROOT/gptoss-20b-converted (bf16, ~42 GB; deleted afterwards
   unless --keep).
3. `load_model(ROOT/gptoss-20b-4l, dtype=bfloat16)`, reporting the model's own parameter bytes next to peak RSS,
   and the RSS of `import torch, gptoss_convert` alone as the baseline.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GB = 1e9


def measure(command: list[str]) -> dict:
    """Run `command` in a fresh wrapper process that runs it as its only child; return wall seconds and peak RSS."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True)\n"
        "wall = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(json.dumps({'rc': r.returncode, 'wall_s': wall, 'peak_rss_bytes': rss, 'stdout': r.stdout}))\n"
    )
    done = subprocess.run([sys.executable, "-c", wrapper, *command], stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"failed ({result['rc']}): {' '.join(command)}\n{result['stdout']}")
    return result


def make(out: Path, layers: int | None) -> dict | None:
    if (out / "config.json").exists():
        return None
    command = [sys.executable, str(REPO / "scripts" / "make_checkpoint.py"), "--shape", "20b", "--layout", "hf",
               "--out", str(out), "--quiet"] + (["--layers", str(layers)] if layers else [])
    return measure(command)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp"))
    parser.add_argument("--keep", action="store_true", help="keep the converted 20b output (~42 GB)")
    parser.add_argument("--load-layers", type=int, default=4)
    parser.add_argument("--only", choices=("convert", "load"), help="run one of the two measurements")
    args = parser.parse_args(argv)
    full, small = args.root / "gptoss-20b", args.root / f"gptoss-20b-{args.load_layers}l"
    converted = args.root / "gptoss-20b-converted"
    results = {}

    made = make(full, None)
    if made:
        results["make_checkpoint 20b (hf layout)"] = made
    made = make(small, args.load_layers)
    if made:
        results[f"make_checkpoint 20b --layers {args.load_layers}"] = made

    output_bytes = 0
    if args.only != "load":
        shutil.rmtree(converted, ignore_errors=True)
        results["convert 20b -> bf16"] = measure(
            [sys.executable, "-m", "gptoss_convert.cli", "convert", "--model", str(full), "--out", str(converted)])
        output_bytes = sum(p.stat().st_size for p in converted.glob("*.safetensors"))
        if not args.keep:
            shutil.rmtree(converted, ignore_errors=True)
        print(f"converted output: {output_bytes / GB:.2f} GB of safetensors; "
              f"input: {sum(p.stat().st_size for p in full.glob('*.safetensors')) / GB:.2f} GB")
    if args.only == "convert":
        return _table(results, {"converted_bytes": output_bytes})

    probe = ("import sys, torch, gptoss_convert\n"
             "m = gptoss_convert.load_model(sys.argv[1], dtype=torch.bfloat16)\n"
             "print(sum(p.numel() * p.element_size() for p in m.parameters()))\n")
    results["import torch + gptoss_convert (baseline)"] = measure(
        [sys.executable, "-c", "import torch, gptoss_convert, gptoss_model"])
    loaded = measure([sys.executable, "-c", probe, str(small)])
    results[f"load_model 20b-shaped, {args.load_layers} layers, bf16"] = loaded
    model_bytes = int(loaded["stdout"].strip().splitlines()[-1])

    print(f"load_model: model parameters {model_bytes / GB:.2f} GB, peak RSS "
          f"{loaded['peak_rss_bytes'] / GB:.2f} GB")
    return _table(results, {"model_bytes": model_bytes, "converted_bytes": output_bytes})


def _table(results: dict, extra: dict) -> int:
    print(f"{'step':55s} {'wall s':>8s} {'peak RSS GB':>12s}")
    for name, r in results.items():
        print(f"{name:55s} {r['wall_s']:8.1f} {r['peak_rss_bytes'] / GB:12.2f}")
    print(json.dumps({k: {"wall_s": round(v["wall_s"], 1), "peak_rss_bytes": v["peak_rss_bytes"]}
                      for k, v in results.items()} | extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
