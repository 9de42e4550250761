"""How close correct, independent implementations come to verify's gates: the margins the defaults must keep.

For one checkpoint and device, runs `gptoss-convert verify` once per (candidate, reference) pair, each in its own
process (so one pair's memory is gone before the next starts), reads each report.json and writes, per pair and per
component, the worst *tolerance ratio*: measured error / gate limit (max |diff| / (atol + rtol·|ref|) in float32;
KL mean / --max-kl and the top-1 shortfall / (1 - --min-top1) for the logits in bfloat16). A ratio of 0.05 is a
20x margin; anything near 1 means the default gate would fail a correct implementation at that scale. The gated
(isolated) column decides; the accumulated (end-to-end) column is recorded beside it. It also suggests the float32
--atol that would keep every pair 10x inside the gate (10 x the largest max |diff| seen).

    python scripts/calibrate_gates.py --checkpoint tiny --out /tmp/calibration            # CPU, minutes
    python scripts/calibrate_gates.py --make 20b --checkpoint /tmp/ckpt20b --device cuda \
        --dtype float32 --dtype bfloat16 --out "$OUT/calibration"                          # the GPU run

Pairs (default): gptoss_model vs transformers, openai vs transformers, gptoss_model vs openai. `--make SHAPE`
writes a random-weight checkpoint of that shape with scripts/make_checkpoint.py first when --checkpoint is absent.
Output: OUT/calibration.json (and each run's report under OUT/PAIR-DTYPE/); docs/benchmarks.md, "Gate
calibration", records the figures.
"""

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PAIRS = ("gptoss_model/transformers", "openai/transformers", "gptoss_model/openai")
COLUMNS = ("isolated", "accumulated")
MARGIN = 10.0  # how far inside the gate a correct implementation should sit for the suggested float32 --atol


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="tiny", help="tiny, a downloaded name or a checkpoint directory")
    parser.add_argument("--make", metavar="SHAPE", help="make a SHAPE checkpoint (20b, 120b, tiny) at --checkpoint "
                                                        "first if it does not exist")
    parser.add_argument("--layers", type=int, help="with --make: how many layers (default: the shape's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", action="append", choices=("float32", "bfloat16"),
                        help="repeatable (default: float32)")
    parser.add_argument("--pair", action="append", metavar="CANDIDATE/REFERENCE",
                        help=f"repeatable (default: {', '.join(DEFAULT_PAIRS)})")
    parser.add_argument("--token-ids", metavar="FILE", help="verify's --token-ids (default: verify's default prompts)")
    parser.add_argument("--out", required=True, type=Path, help="directory for calibration.json and the reports")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if args.make and not Path(args.checkpoint).exists():
        make_checkpoint(args.make, args.layers, args.checkpoint, env)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [run_pair(pair, dtype, args, env) for dtype in (args.dtype or ["float32"]) for pair in (args.pair or DEFAULT_PAIRS)]
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(args.device),
        "checkpoint": args.checkpoint,
        "device": args.device,
        "runs": runs,
        "worst": worst_overall(runs),
        "float32_atol_for_10x_margin": float32_atol_for_margin(runs),
    }
    (args.out / "calibration.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"worst": result["worst"], "float32_atol_for_10x_margin": result["float32_atol_for_10x_margin"],
                      "runs": [summary_line(r) for r in runs]}, indent=2))
    sys.exit(0 if all(r["exit_code"] in (0, 1) for r in runs) else 2)


def make_checkpoint(shape, layers, out, env):
    command = [sys.executable, str(ROOT / "scripts/make_checkpoint.py"), "--shape", shape, "--layout", "hf", "--out", out]
    subprocess.run(command + (["--layers", str(layers)] if layers else []), check=True, env=env)


def run_pair(pair: str, dtype: str, args, env) -> dict:
    candidate, _, reference = pair.partition("/")
    report_dir = args.out / f"{candidate.replace(':', '-')}-vs-{reference}-{dtype}"
    command = [sys.executable, "-m", "gptoss_convert.cli", "verify", "--model", args.checkpoint,
               "--candidate", candidate, "--reference", reference or "transformers", "--dtype", dtype,
               "--device", args.device, "--report", str(report_dir), "--quiet"]
    if args.token_ids:
        command += ["--token-ids", args.token_ids]
    started = time.perf_counter()
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    entry = {"candidate": candidate, "reference": reference or "transformers", "dtype": dtype,
             "command": " ".join(["gptoss-convert", *command[3:]]), "exit_code": run.returncode,
             "wall_s": round(time.perf_counter() - started, 1), "message": (run.stdout + run.stderr).strip()[-400:]}
    report_file = report_dir / "report.json"
    if run.returncode in (0, 1) and report_file.is_file():
        entry.update(ratios(json.loads(report_file.read_text())))
    return entry


def ratios(report: dict) -> dict:
    """Worst tolerance ratio per column and component, with where it is; the logits' gates."""
    worst = {column: {} for column in COLUMNS}
    for layer in report["layers"]:
        for column in COLUMNS:
            for component, metrics in (layer.get(column) or {}).items():
                ratio = _ratio(metrics)
                if ratio is None:
                    continue  # not provided by this candidate
                best = worst[column].get(component)
                if best is None or ratio > best["ratio"]:
                    worst[column][component] = {"ratio": ratio, "max_abs": metrics.get("max_abs"),
                                                "layer": layer["index"], "attention_type": layer["attention_type"],
                                                "where": metrics.get("where")}
    return {"passed": report["passed"], "gates": gates(report), "worst": worst, "logits": logit_ratios(report),
            "versions": report.get("versions"), "candidate_described": report.get("candidate"),
            "reference_described": report.get("reference")}


def _ratio(metrics):
    if not isinstance(metrics, dict) or "tolerance_ratio" not in metrics:
        return None
    value = metrics["tolerance_ratio"]
    return math.inf if value == "inf" else (0.0 if value is None else float(value))


def gates(report: dict) -> dict:
    return {key: report.get(key) for key in ("atol", "rtol", "max_kl", "min_top1")}


def logit_ratios(report: dict) -> dict:
    logits = report["logits"]
    out = {"tolerance_ratio": _ratio(logits), "max_abs": logits.get("max_abs"), "kl_mean": logits.get("kl_mean"),
           "top1_agreement": logits.get("top1_agreement")}
    if report.get("max_kl"):
        out["kl_ratio"] = logits["kl_mean"] / report["max_kl"]
    if report.get("min_top1") is not None and report["min_top1"] < 1:
        out["top1_ratio"] = (1 - logits["top1_agreement"]) / (1 - report["min_top1"])
    return out


def worst_overall(runs: list) -> dict:
    """Per dtype and component: the worst gated (isolated) ratio over every pair."""
    worst = {}
    for run in runs:
        for component, entry in run.get("worst", {}).get("isolated", {}).items():
            slot = worst.setdefault(run["dtype"], {})
            if component not in slot or entry["ratio"] > slot[component]["ratio"]:
                slot[component] = {"ratio": entry["ratio"], "pair": f"{run['candidate']}/{run['reference']}"}
        logits = run.get("logits", {})
        for key in ("tolerance_ratio", "kl_ratio", "top1_ratio"):
            if logits.get(key) is not None:
                slot = worst.setdefault(run["dtype"], {})
                name = f"logits.{key}"
                if name not in slot or logits[key] > slot[name]["ratio"]:
                    slot[name] = {"ratio": logits[key], "pair": f"{run['candidate']}/{run['reference']}"}
    return worst


def float32_atol_for_margin(runs: list, margin: float = MARGIN) -> dict | None:
    """The smallest --atol (rtol 0) that keeps every float32 pair `margin` times inside the gate: margin x the
    largest max |diff| of any gated component or of the logits."""
    worst = None
    for run in runs:
        if run["dtype"] != "float32":
            continue
        seen = [(e.get("max_abs"), component) for component, e in run.get("worst", {}).get("isolated", {}).items()]
        seen.append((run.get("logits", {}).get("max_abs"), "logits"))
        for value, component in seen:
            if value is not None and (worst is None or value > worst["max_abs"]):
                worst = {"max_abs": value, "component": component, "pair": f"{run['candidate']}/{run['reference']}"}
    return worst and {**worst, "margin": margin, "atol": worst["max_abs"] * margin}


def summary_line(run: dict) -> str:
    isolated = run.get("worst", {}).get("isolated", {})
    worst = max(isolated.items(), key=lambda kv: kv[1]["ratio"], default=(None, {"ratio": None}))
    return (f"{run['candidate']} vs {run['reference']} ({run['dtype']}): exit {run['exit_code']}, "
            f"worst isolated ratio {worst[1]['ratio']} ({worst[0]}), {run['wall_s']} s")


def machine(device: str) -> str:
    text = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    try:
        import torch

        text += f", torch {torch.__version__}"
        if device == "cuda" and torch.cuda.is_available():
            text += f", {torch.cuda.get_device_name()}"
    except ImportError:
        pass
    return text


if __name__ == "__main__":
    main()
