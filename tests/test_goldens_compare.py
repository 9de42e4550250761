"""The file protocol from outside: an implementation writes outputs.safetensors, `gptoss-convert compare` gates it.
The worked example (examples/numpy_layer, NumPy only) runs end to end; bad files give one line and the exit code
docs/goldens.md promises."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from gptoss_convert.cli import cli
from gptoss_convert.goldens_compare import not_provided
from gptoss_convert.goldens_files import load_goldens, resolve_goldens
from gptoss_convert.tiny import tiny_checkpoint_dir

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "numpy_layer" / "run_goldens.py"


@pytest.fixture(scope="module")
def reference_outputs():
    """The goldens' own expected values under the output names: a perfect implementation."""
    goldens = load_goldens("tiny")
    return {name: goldens.expected[name].clone() for name in goldens.manifest["outputs"]}


def _compare(tmp_path, outputs: dict, *extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "outputs.safetensors"
    save_file(outputs, str(path))
    report = tmp_path / "report"
    result = CliRunner().invoke(cli, ["compare", "--goldens", "tiny", "--outputs", str(path), "--report", str(report),
                                      "-q", *extra])
    return result, report


def test_numpy_example_passes_compare_end_to_end(tmp_path):
    """A NumPy-only implementation (no torch imported by it) reads the checkpoint and inputs.safetensors, writes
    outputs.safetensors, and `gptoss-convert compare` passes it: the whole protocol, two processes."""
    outputs = tmp_path / "outputs.safetensors"
    code = (f"import sys, runpy; sys.argv = ['run_goldens.py', '--checkpoint', {str(tiny_checkpoint_dir())!r}, "
            f"'--goldens', {str(resolve_goldens('tiny'))!r}, '--out', {str(outputs)!r}]; "
            f"sys.path.insert(0, {str(EXAMPLE.parent)!r}); runpy.run_path({str(EXAMPLE)!r}, run_name='__main__'); "
            "print('torch imported:', 'torch' in sys.modules)")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "torch imported: False" in ran.stdout
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "gptoss_convert.cli", "compare", "--goldens", "tiny", "--outputs",
                             str(outputs), "--report", str(tmp_path / "report"), "-q"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "PASSED" in result.stdout
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["passed"] and not_provided(report) == []
    assert report["layers"][2]["isolated"]["attention"]["max_abs"] < 1e-4


def test_perfect_outputs_pass(tmp_path, reference_outputs):
    result, report = _compare(tmp_path, reference_outputs)
    assert result.exit_code == 0, result.output
    assert json.loads((report / "report.json").read_text())["verdict"]["passed"]


def test_a_wrong_component_fails_naming_layer_component_and_position(tmp_path, reference_outputs):
    outputs = dict(reference_outputs)
    attention = outputs["layers.2.attention"].clone()
    attention[20] += 0.01  # prompt 1, position 16: a window-edge bug's signature
    outputs["layers.2.attention"] = attention
    result, _ = _compare(tmp_path, outputs)
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "layer 2 (sliding_attention) attention" in line and "position 16" in line


def test_missing_tensors_are_not_provided_never_passed(tmp_path, reference_outputs):
    outputs = {name: t for name, t in reference_outputs.items() if not name.endswith(".moe")}
    result, report = _compare(tmp_path, outputs)
    assert result.exit_code == 0, result.output
    summary = json.loads((report / "report.json").read_text())
    assert not_provided(summary) == [f"layers.{i}.moe" for i in range(4)]
    assert summary["layers"][0]["not_provided"] == ["moe"]
    assert "moe" not in summary["layers"][0]["isolated"]
    assert "not provided" in result.stdout


def test_nan_fails(tmp_path, reference_outputs):
    outputs = dict(reference_outputs)
    outputs["layers.1.moe"] = outputs["layers.1.moe"].clone()
    outputs["layers.1.moe"][3, 5] = float("nan")
    result, _ = _compare(tmp_path, outputs)
    assert result.exit_code == 1 and "layer 1 (full_attention) moe" in result.stderr


@pytest.mark.parametrize("name, code, message", [
    ("layers.0.atention", 2, "unknown tensor 'layers.0.atention'"),  # misnamed: not the protocol, a usage error
    ("layers.9.attention", 2, "unknown tensor 'layers.9.attention'"),
])
def test_unknown_names_exit_2(tmp_path, reference_outputs, name, code, message):
    outputs = dict(reference_outputs, **{name: torch.zeros(3)})
    result, _ = _compare(tmp_path, outputs)
    assert result.exit_code == code and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_wrong_shape_exits_1_naming_the_tensor(tmp_path, reference_outputs):
    outputs = dict(reference_outputs)
    outputs["layers.1.attention"] = outputs["layers.1.attention"][:, :32].contiguous()
    result, _ = _compare(tmp_path, outputs)
    assert result.exit_code == 1
    assert "layers.1.attention has shape [24, 32], expected [24, 64]" in result.stderr


def test_empty_or_unreadable_outputs_exit_2(tmp_path):
    path = tmp_path / "outputs.safetensors"
    path.write_bytes(b"not a safetensors file")
    result = CliRunner().invoke(cli, ["compare", "--goldens", "tiny", "--outputs", str(path), "-q",
                                      "--report", str(tmp_path / "r")])
    assert result.exit_code == 2 and "not a readable safetensors file" in result.stderr
    result, _ = _compare(tmp_path, {})
    assert result.exit_code == 2 and "holds no tensors" in result.stderr


def test_tampered_goldens_exit_3_naming_the_file(tmp_path, reference_outputs):
    import shutil

    goldens = tmp_path / "goldens"
    shutil.copytree(resolve_goldens("tiny"), goldens)
    data = bytearray((goldens / "expected.safetensors").read_bytes())
    data[-5] ^= 0x10
    (goldens / "expected.safetensors").write_bytes(bytes(data))
    path = tmp_path / "outputs.safetensors"
    save_file(reference_outputs, str(path))
    result = CliRunner().invoke(cli, ["compare", "--goldens", str(goldens), "--outputs", str(path), "-q"])
    assert result.exit_code == 3
    assert "expected.safetensors: sha256" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_reports_follow_the_report_schema_and_take_a_baseline(tmp_path, reference_outputs):
    import jsonschema

    from gptoss_convert import report as report_module

    first, report = _compare(tmp_path / "a", {n: t for n, t in reference_outputs.items() if "moe" not in n})
    assert first.exit_code == 0, first.output
    summary = json.loads((report / "report.json").read_text())
    jsonschema.validate(summary, report_module.schema())
    outputs = dict(reference_outputs)
    outputs["layers.0.attention"] = outputs["layers.0.attention"] + 1e-4
    second, report = _compare(tmp_path / "b", outputs, "--baseline", str(tmp_path / "a" / "report" / "report.json"))
    assert second.exit_code == 0, second.output
    summary = json.loads((report / "report.json").read_text())
    jsonschema.validate(summary, report_module.schema())
    assert summary["baseline"]


def test_routing_weights_are_compared_per_expert_in_any_order(tmp_path, reference_outputs):
    outputs = dict(reference_outputs)
    for i in range(4):  # the same experts and weights, listed in the other order
        outputs[f"layers.{i}.expert_indices"] = outputs[f"layers.{i}.expert_indices"].flip(-1).contiguous()
        outputs[f"layers.{i}.expert_weights"] = outputs[f"layers.{i}.expert_weights"].flip(-1).contiguous()
    result, _ = _compare(tmp_path, outputs)
    assert result.exit_code == 0, result.output
    outputs["layers.0.expert_indices"] = outputs["layers.0.expert_indices"].float()
    result, _ = _compare(tmp_path, outputs)
    assert result.exit_code == 1 and "layers.0.expert_indices has dtype" in result.stderr


@pytest.mark.parametrize("option, value", [("--atol", "-1"), ("--rtol", "nan"), ("--min-top1", "2")])
def test_bad_gate_options_are_usage_errors(tmp_path, option, value):
    result = CliRunner().invoke(cli, ["compare", "--goldens", "tiny", "--outputs", str(tmp_path / "o.safetensors"),
                                      option, value])
    assert result.exit_code == 2 and option in result.stderr and len(result.stderr.strip().splitlines()) == 1
