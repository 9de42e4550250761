"""scripts/train.py end to end on the tiny checkpoint (short runs): JSON + PNG outputs, bad input as one line with
exit code 2 and saved adapters left intact, and a merged fine-tuned model that still passes `gptoss-convert verify`."""

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from gptoss_convert.cli import cli
from gptoss_convert.tiny import tiny_checkpoint_dir
from tests.load_file import load_module

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train.py"


@pytest.fixture(scope="module")
def script():
    return load_module(SCRIPT, "train_script")


def run(script, capsys, *args):
    code = script.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# reward functions the bad-input tests import by name (--reward tests.test_train_cli:NAME)
def raising_reward(prompt, completion):
    raise RuntimeError("judge offline")


def nan_reward(prompt, completion):
    return math.nan


@pytest.mark.parametrize("command, steps", [("sft", 6), ("grpo", 3), ("ppo", 3)])
def test_short_runs_write_json_and_png(script, capsys, tmp_path, command, steps):
    code, out, err = run(script, capsys, command, "--seed", 1, "--steps", steps, "--json", tmp_path / "r.json")
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["metric"] == ("loss" if command == "sft" else "reward")
    assert result["steps"] == steps == len(result["curve"]) and result["wall_s"] > 0
    values = [r[result["metric"]] for r in result["curve"]]
    assert result["first"] == pytest.approx(sum(values[:5]) / len(values[:5]))
    assert result["last"] == pytest.approx(sum(values[-5:]) / len(values[-5:]))
    if command == "sft":
        assert values[-1] < values[0]  # six steps are enough to see the masked loss fall
    else:
        assert all(0.0 <= v <= 1.0 for v in values)
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{command}: {result['metric']}" in out and f"{command}:" in err  # the summary line and the progress bar


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def saved_adapters(script, tmp_path_factory):
    """The bytes of an adapter file a good earlier run saved."""
    path = tmp_path_factory.mktemp("earlier") / "adapters.safetensors"
    assert script.main(["grpo", "--steps", "1", "--save-adapters", str(path)]) == 0
    return path.read_bytes()


@pytest.mark.parametrize("case, message", [
    ("empty", "the dataset is empty"),
    ("no-assistant", "conversation 1 has no assistant turn"),
    ("raising", "the reward function raised RuntimeError on sample 0: judge offline"),
    ("nan", "the reward function returned nan for sample 0"),
    ("bad-prompt", "prompt 1: expected token ids in 0..511, got [1, 2, 9999]"),
])
def test_bad_input_is_one_line_exit_2_and_saved_adapters_stay(script, capsys, tmp_path, saved_adapters, case, message):
    adapters = tmp_path / "adapters.safetensors"
    adapters.write_bytes(saved_adapters)
    before = adapters.read_bytes()
    conversations = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                     [{"role": "user", "content": "hi"}]]
    args = {
        "empty": ["sft", "--data", write_jsonl(tmp_path / "empty.jsonl", [])],
        "no-assistant": ["sft", "--data", write_jsonl(tmp_path / "bad.jsonl", conversations)],
        "raising": ["grpo", "--reward", "tests.test_train_cli:raising_reward"],
        "nan": ["ppo", "--reward", "tests.test_train_cli:nan_reward"],
        "bad-prompt": ["grpo", "--prompts", write_jsonl(tmp_path / "prompts.jsonl", [[5, 6], [1, 2, 9999]])],
    }[case]
    code, out, err = run(script, capsys, *args, "--steps", 2, "--save-adapters", adapters,
                         "--json", tmp_path / "r.json")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith(f"error: {message}") and "Traceback" not in err
    assert adapters.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".json", ".png")) == []  # no result written
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_merged_fine_tuned_model_passes_verify(script, capsys, tmp_path):
    merged = tmp_path / "merged"
    code, _, err = run(script, capsys, "sft", "--steps", 3, "--lora-targets", "attention,router,experts",
                       "--merge-to", merged)
    assert code == 0, err
    tiny = {}
    for shard in Path(tiny_checkpoint_dir()).glob("model-*.safetensors"):
        tiny.update(load_file(shard))
    ours = {}
    for shard in merged.glob("model-*.safetensors"):
        ours.update(load_file(shard))
    changed = [n for n in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.router.weight")
               if not torch.equal(ours[n], tiny[n].to(ours[n].dtype))]
    assert changed, "training must have changed the weights"
    report = tmp_path / "report"
    result = CliRunner().invoke(cli, ["verify", "--model", str(merged), "--quiet", "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output
