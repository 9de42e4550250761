"""`verify --goldens` against the Transformers-based `verify`, and the size of goldens (docs/benchmarks.md).

    PYTHONPATH=. python scripts/bench_goldens.py [--runs 5] [--out bench-goldens.json]
    PYTHONPATH=. python scripts/bench_goldens.py --skip-speed --checkpoint /tmp/ckpt20b --dtype bfloat16 --device cuda
    PYTHONPATH=. python scripts/bench_goldens.py --skip-speed --checkpoint /tmp/ck20 --checked-rows 45 --dtype float32

Speed: both commands on the tiny checkpoint, each in a fresh interpreter (import time included: not importing
Transformers is the point), alternating, `--runs` times each; the median wall times and their ratio (goal <= 0.5).
Both check the same prompts (the shipped goldens' prompts, passed to the Transformers run with --token-ids) with
the same candidate (gptoss_model) and gate. What each does beyond that is what each command does by default: the
Transformers run imports Transformers and runs the reference beside the candidate, with the accumulated and
cached-decoding columns; the goldens run reads the recorded outputs and runs the isolated column only.
On a shared machine, set OMP_NUM_THREADS=1 (recorded in the output) so OpenMP spinning under others' load does not
dominate either side.
Size: goldens computed analytically from each preset's config and the default prompt lengths (goal: 20b in float32
< 100 MB), with the number of checked rows, and the estimate next to the real size of the shipped tiny goldens.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()[-500:]}")
    return seconds


def speed(runs: int, scratch: Path) -> dict:
    from gptoss_convert.goldens_files import read_manifest

    prompts = [p["token_ids"] for p in read_manifest("tiny")["prompts"]]
    token_ids = scratch / "prompts.json"
    token_ids.write_text(json.dumps(prompts))
    cli = [sys.executable, "-m", "gptoss_convert.cli", "verify", "--model", "tiny", "-q"]
    commands = {
        "transformers": cli + ["--token-ids", str(token_ids), "--report", str(scratch / "report-transformers")],
        "goldens": cli + ["--goldens", "tiny", "--report", str(scratch / "report-goldens")],
    }
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    times = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(round(timed(command, env), 3))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "commands": {name: " ".join(command[1:]) for name, command in commands.items()},
        "runs": runs,
        "seconds": times,
        "median_seconds": medians,
        "ratio_goldens_over_transformers": round(medians["goldens"] / medians["transformers"], 3),
        "goal_ratio": 0.5,
    }


def sizes() -> dict:
    from gptoss_convert.goldens import default_lengths, estimate_bytes
    from gptoss_convert.goldens_files import EXPECTED, INPUTS, read_manifest
    from gptoss_model import GPTOss_20B, GPTOss_120B

    shipped = read_manifest("tiny")
    tiny_config = shipped["checkpoint"]["config"]
    configs = {"tiny": tiny_config, "20b": GPTOss_20B().to_hf_config(), "120b": GPTOss_120B().to_hf_config()}
    table = {}
    for name, config in configs.items():
        lengths = list(default_lengths(config["sliding_window"]))
        table[name] = {"prompt_lengths": lengths, **{dtype: estimate_bytes(config, lengths, dtype)
                                                      for dtype in ("float32", "bfloat16")}}
    table["tiny"]["shipped_bytes"] = sum(shipped["files"][f]["size"] for f in (INPUTS, EXPECTED))
    table["goal_20b_float32_bytes_under"] = 100_000_000
    return table


def recorded(checkpoint: Path, dtype: str, device: str, checked: int | None, scratch: Path) -> dict:
    """Record goldens of a real (e.g. 20b-shaped) checkpoint, check their size against the estimate, replay them.
    checked: `goldens --checked-rows` (a checkpoint cut to a few layers keeps every row unless told the full one's
    count)."""
    from gptoss_convert.goldens import estimate_bytes
    from gptoss_convert.goldens_files import EXPECTED, INPUTS, read_manifest

    out = scratch / "goldens"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cli = [sys.executable, "-m", "gptoss_convert.cli"]
    record = timed(cli + ["goldens", "--model", str(checkpoint), "--out", str(out), "--dtype", dtype,
                          "--device", device, "-q"] + (["--checked-rows", str(checked)] if checked else []), env)
    manifest = read_manifest(out)
    lengths = [len(p["token_ids"]) for p in manifest["prompts"]]
    replay = timed(cli + ["verify", "--goldens", str(out), "--model", str(checkpoint), "--dtype", dtype,
                          "--device", device, "-q", "--report", str(scratch / "report-recorded")], env)
    return {"checkpoint": str(checkpoint), "dtype": dtype, "device": device, "prompt_lengths": lengths,
            "bytes": sum(manifest["files"][f]["size"] for f in (INPUTS, EXPECTED)),
            "checked_rows": manifest["tensors"]["components.rows"]["shape"][0],
            "estimate": estimate_bytes(manifest["checkpoint"]["config"], lengths, dtype, checked),
            "record_seconds": round(record, 3), "verify_goldens_seconds": round(replay, 3),
            "verify_goldens_passed": True}


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "load_average_before": os.getloadavg(), "python": platform.python_version(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "torch": torch.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (median taken)")
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    parser.add_argument("--checkpoint", type=Path, help="also record goldens of this checkpoint (e.g. 20b-shaped from "
                        "scripts/make_checkpoint.py), measure their real size and replay them")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"], help="for --checkpoint")
    parser.add_argument("--device", default="auto", help="for --checkpoint")
    parser.add_argument("--checked-rows", type=int, help="for --checkpoint: `goldens --checked-rows` (45: what 20b's "
                        "24 layers get by default)")
    parser.add_argument("--skip-speed", action="store_true", help="skip the tiny speed comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                   "size": sizes()}
        if not args.skip_speed:
            results["speed"] = speed(args.runs, Path(scratch))
        if args.checkpoint:
            results["recorded"] = recorded(args.checkpoint, args.dtype, args.device, args.checked_rows, Path(scratch))
        results["machine"]["load_average_after"] = os.getloadavg()
    text = json.dumps(results, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
