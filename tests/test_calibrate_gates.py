"""scripts/calibrate_gates.py on the tiny checkpoint (the GPU run uses a 20b-shaped one): it runs verify for a pair
of independent implementations and records, per component, measured error / gate limit."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_calibration_records_worst_tolerance_ratios(tmp_path):
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps([list(range(1, 25))]))  # crosses the tiny window (16)
    run = subprocess.run([sys.executable, str(ROOT / "scripts/calibrate_gates.py"), "--checkpoint", "tiny",
                          "--pair", "openai/transformers", "--token-ids", str(ids), "--out", str(tmp_path / "cal")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    (entry,) = result["runs"]
    assert (entry["candidate"], entry["reference"], entry["dtype"], entry["exit_code"]) == (
        "openai", "transformers", "float32", 0)
    isolated = entry["worst"]["isolated"]
    assert {"attention", "router_logits", "moe", "layer_output"} <= set(isolated)
    # OpenAI's code and Transformers' agree to float32 rounding: far inside the default 1e-3 gate, not exactly
    assert all(0 <= e["ratio"] < 0.1 for e in isolated.values())
    assert 0 < isolated["moe"]["ratio"] == isolated["moe"]["max_abs"] / entry["gates"]["atol"]
    assert result["worst"]["float32"]["moe"]["pair"] == "openai/transformers"
    assert (tmp_path / "cal" / "openai-vs-transformers-float32" / "report.json").is_file()
    suggestion = result["float32_atol_for_10x_margin"]
    assert suggestion["atol"] == 10 * suggestion["max_abs"] and suggestion["max_abs"] >= isolated["moe"]["max_abs"]
