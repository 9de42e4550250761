"""scripts/bench_grpo_gpu.py on the CPU with a small shape: it runs a whole GRPO step and writes its JSON."""

import json
from pathlib import Path
from tests.load_file import load_module

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_grpo_gpu.py"


def test_bench_grpo_runs_on_cpu_with_a_small_shape(tmp_path):
    bench = load_module(SCRIPT)
    out = tmp_path / "out" / "bench.json"
    args = ["--shape", "test", "--device", "cpu", "--dtype", "float32", "--group-size", "4", "--prompt-tokens", "5",
            "--new-tokens", "6", "--steps", "2", "--out", str(out)]
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    assert result["group_size"] == 4 and result["new_tokens"] == 6 and result["activation_checkpointing"]
    assert len(result["steps"]) == 2
    for step in result["steps"]:
        assert step["completion_tokens"] == 4 * 6  # no eos: every completion runs its full length
        assert step["step_s"] > 0 and step["update_s"] > 0 and step["rollout_s"] > 0
    assert 0 < result["trainable_parameters"] < result["parameters"]
