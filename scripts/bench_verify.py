"""Wall time and peak memory of `gptoss-convert verify` on a checkpoint (default: a 20b-shaped one).

Makes the 20b-shaped checkpoint with scripts/make_checkpoint.py first if --checkpoint does not exist, then runs
verify in a child process and reads the child's peak RSS (getrusage of the children) and wall time; the verify
report itself records the same run's figures (and peak GPU memory on CUDA).

    python scripts/bench_verify.py                                   # 20b-shaped, float32, CPU
    python scripts/bench_verify.py --device cuda --dtype bfloat16
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="/tmp/gptoss-20b")
    parser.add_argument("--shape", default="20b", help="shape to make when --checkpoint does not exist")
    parser.add_argument("--layers", type=int, help="layer count to make (default: the shape's own)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--report", default="/tmp/bench-verify-report")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if not Path(args.checkpoint).exists():
        make = [sys.executable, str(ROOT / "scripts/make_checkpoint.py"), "--shape", args.shape, "--out", args.checkpoint]
        if args.layers:
            make += ["--layers", str(args.layers)]
        subprocess.run(make, check=True, env=env)
    command = [sys.executable, "-m", "gptoss_convert.cli", "verify", "--model", args.checkpoint, "--dtype", args.dtype,
               "--device", args.device, "--report", args.report, "--quiet"]
    started = time.perf_counter()
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    report = json.loads((Path(args.report) / "report.json").read_text())
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": " ".join(["gptoss-convert", *command[3:]]),
        "exit_code": run.returncode,
        "passed": report["passed"],
        "layers": len(report["layers"]),
        "tokens": sum(len(p["token_ids"]) for p in report["prompts"]),
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(peak_rss / 1e9, 2),
        "peak_gpu_gb": report["timing"]["peak_gpu_bytes"] and round(report["timing"]["peak_gpu_bytes"] / 1e9, 2),
        "logits_max_abs": report["logits"]["max_abs"],
        "worst_layer_output_max_abs": max(layer["isolated"]["layer_output"]["max_abs"] for layer in report["layers"]),
    }
    print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
    print(json.dumps(result, indent=2))
    sys.exit(0 if run.returncode in (0, 1) else run.returncode)


if __name__ == "__main__":
    main()
