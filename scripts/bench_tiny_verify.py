"""What the default prompts cost: `gptoss-convert verify` on the embedded tiny checkpoint with the default prompts
(8, 48 and 4,128 tokens, the last one past the 4,096-token original context, and the harmony conversation) against
the two short ones only.
Each run is a child process; CPU time is the child's user + system time (getrusage of the children), which a busy
machine inflates less than wall time.

    python scripts/bench_tiny_verify.py [--candidate SPEC] [--out FILE.json]
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHORT_PROMPTS = [list(range(3, 11)), [(7 * i + 5) % 500 for i in range(48)]]


def run(args: list, env: dict) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    done = subprocess.run([sys.executable, "-m", "gptoss_convert.cli", "verify", "--quiet", *args], env=env,
                          capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"exit_code": done.returncode, "wall_s": round(time.time() - started, 2), "cpu_s": round(cpu, 2),
            "last_line": (done.stdout.strip() or done.stderr.strip()).splitlines()[-1:]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidate", default="gptoss_model")
    parser.add_argument("--out", help="also write the results here (JSON)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with tempfile.TemporaryDirectory() as tmp:
        ids = Path(tmp) / "short.json"
        ids.write_text(json.dumps(SHORT_PROMPTS))
        common = ["--candidate", args.candidate]
        results = {
            "default prompts": run([*common, "--report", f"{tmp}/default"], env),
            "two short prompts": run([*common, "--token-ids", str(ids), "--report", f"{tmp}/short"], env),
        }
        lengths = [len(p["token_ids"]) for p in json.loads(Path(f"{tmp}/default/report.json").read_text())["prompts"]]
    out = {"date": datetime.date.today().isoformat(), "machine": platform.platform(), "cpus": os.cpu_count(),
           "omp_num_threads": env["OMP_NUM_THREADS"], "candidate": args.candidate,
           "default_prompt_lengths": lengths, "runs": results}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
