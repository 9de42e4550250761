"""Goldens: recorded from Transformers, shipped for the tiny checkpoint, checked without Transformers, refused (exit 3)
when they do not match their manifest or belong to another checkpoint."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch

from gptoss_convert import report as report_module
from gptoss_convert.errors import InputError, IntegrityError
from gptoss_convert.gate import Thresholds
from gptoss_convert.goldens import estimate_bytes, record_goldens
from gptoss_convert.goldens_compare import not_provided, verify_goldens
from gptoss_convert.goldens_files import EXPECTED, INPUTS, MANIFEST, load_goldens, output_names, resolve_goldens
from gptoss_convert.tiny import tiny_checkpoint_dir
from tests.load_file import load_module

SHIPPED = resolve_goldens("tiny")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """Goldens recorded now, from Transformers, with the default prompts (what the shipped ones were made with)."""
    return record_goldens("tiny", tmp_path_factory.mktemp("goldens") / "tiny", progress=False)


def test_shipped_goldens_still_match_transformers(fresh):
    shipped, now = load_goldens(SHIPPED), load_goldens(fresh)
    assert shipped.manifest["prompts"] == now.manifest["prompts"]
    assert shipped.manifest["checkpoint"]["files"] == now.manifest["checkpoint"]["files"]
    assert set(shipped.inputs) == set(now.inputs) and set(shipped.expected) == set(now.expected)
    for group in ("inputs", "expected"):
        for name, value in getattr(shipped, group).items():
            other = getattr(now, group)[name]
            if name.endswith("expert_indices"):
                assert torch.equal(value.sort(-1).values, other.sort(-1).values), name
            elif value.is_floating_point():
                # thread count and library versions change float32 rounding (~1e-5 here at |x| ~ 50), not the
                # function: a tenth of the default gate (1e-3) separates the two
                torch.testing.assert_close(value, other, atol=1e-4, rtol=0, msg=name)
            else:
                assert torch.equal(value, other), name


def test_shipped_goldens_are_small_and_cross_the_window():
    manifest = json.loads((SHIPPED / MANIFEST).read_text())
    size = sum((SHIPPED / name).stat().st_size for name in (INPUTS, EXPECTED))
    assert size < 300_000
    window = manifest["checkpoint"]["config"]["sliding_window"]
    assert max(len(p["token_ids"]) for p in manifest["prompts"]) > window
    assert manifest["dtype"] == "float32" and manifest["reference"]["name"] == "transformers"
    assert set(manifest["outputs"]) == set(output_names(4))
    assert all(entry["meaning"] for entry in manifest["tensors"].values())


def test_size_estimate_matches_the_shipped_goldens():
    manifest = json.loads((SHIPPED / MANIFEST).read_text())
    lengths = [len(p["token_ids"]) for p in manifest["prompts"]]
    estimate = estimate_bytes(manifest["checkpoint"]["config"], lengths, "float32")
    actual = sum(manifest["files"][name]["size"] for name in (INPUTS, EXPECTED))
    assert estimate["total"] <= actual <= estimate["total"] + 8_000  # + the two safetensors headers


def test_aliases_are_the_recorded_inputs(fresh):
    goldens = load_goldens(fresh)
    names = goldens.manifest["aliases"]
    assert names["layers.3.layer_output"] == "final_norm.input" and names["embedding"] == "layers.0.input"
    assert torch.equal(goldens.expected["layers.0.layer_output"], goldens.inputs["layers.1.input"])


def test_gptoss_model_passes_the_shipped_goldens():
    report, verdict = verify_goldens("tiny", None, "gptoss_model", Thresholds(), progress=False)
    assert verdict.passed, verdict.failures
    assert not_provided(report) == []
    assert report["layers"][0]["isolated"]["attention"]["max_abs"] < 1e-5
    assert report["logits"]["top1_agreement"] == 1.0
    assert report["head"]["max_abs"] < 1e-5  # its head fed the reference's final norm, as verify's "head"
    jsonschema.validate(report, report_module.schema())


def test_openais_implementation_passes_the_shipped_goldens():
    """Code nobody here wrote (OpenAI's gpt_oss.torch, through the `openai` built-in) against the shipped goldens."""
    pytest.importorskip("gpt_oss.torch.model")
    report, verdict = verify_goldens("tiny", None, "openai", Thresholds(), progress=False)
    assert verdict.passed, verdict.failures
    assert not_provided(report) == [] and report["candidate"]["name"] == "openai"


MUTANTS = sorted(p.name for p in (Path(__file__).parent / "mutants").glob("*.py") if p.name not in ("base.py",))


@pytest.mark.parametrize("mutant", MUTANTS)
def test_real_bugs_fail_against_the_shipped_goldens_where_verify_says(mutant):
    """Every mutant of tests/mutants (real bugs re-enacted) fails against goldens as it fails against Transformers:
    same layer kind, component and first failing position (window bugs: position W); the control passes. Goldens
    have no cached-decoding column: a bug only in a KV cache is out of their reach (docs/goldens.md says so)."""
    path = Path(__file__).parent / "mutants" / mutant
    module = load_module(path, f"goldens_mutant_{path.stem}")
    _, verdict = verify_goldens("tiny", None, f"{path}:CANDIDATE", Thresholds(atol=3e-5), progress=False)
    expect = getattr(module, "EXPECT", None)
    if expect is not None and expect.column == "cached":  # goldens replay full prefills: a KV-cache-only bug passes
        assert verdict.passed, verdict.failures
        return
    if expect is None:
        assert verdict.passed, verdict.failures
        return
    first = verdict.first
    assert not verdict.passed and first.attention_type == expect.attention_type
    # the routing weights come before the MoE output: a routing bug may be named there first, more precisely
    assert first.component == expect.component or (expect.component, first.component) == ("moe", "expert_weights")
    if expect.position is not None:
        assert first.first_position["position"] == expect.position


def test_verify_goldens_command_passes_without_importing_transformers(tmp_path):
    """`gptoss-convert verify --goldens tiny` (the shipped goldens, gptoss_model) passes in a fresh interpreter that
    never imports Transformers (nor huggingface_hub, nor tokenizers)."""
    report = tmp_path / "report"
    code = (
        "import sys\n"
        "from gptoss_convert.cli import cli\n"
        f"cli(['verify', '--goldens', 'tiny', '-q', '--report', {str(report)!r}])\n"
        "print([m for m in ('transformers', 'huggingface_hub', 'tokenizers') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    summary = json.loads((report / "report.json").read_text())
    assert summary["passed"] and summary["reference"]["settings"]["goldens"].endswith("goldens-tiny")


# ---- integrity: exit 3, one line naming the file ------------------------------------------------------------------


def _copy(tmp_path):
    target = tmp_path / "goldens"
    shutil.copytree(SHIPPED, target)
    return target


@pytest.mark.parametrize("name", [INPUTS, EXPECTED])
def test_a_modified_goldens_file_is_refused(tmp_path, name):
    goldens = _copy(tmp_path)
    data = bytearray((goldens / name).read_bytes())
    data[-3] ^= 0x40  # a value, not the header: the file still parses
    (goldens / name).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"{name}: sha256 .* does not match manifest.json") as caught:
        load_goldens(goldens)
    assert caught.value.exit_code == 3 and "\n" not in str(caught.value)


def test_a_truncated_goldens_file_is_refused(tmp_path):
    goldens = _copy(tmp_path)
    (goldens / EXPECTED).write_bytes((goldens / EXPECTED).read_bytes()[:1000])
    with pytest.raises(IntegrityError, match=EXPECTED):
        load_goldens(goldens)


def test_goldens_of_another_checkpoint_are_refused(tmp_path):
    checkpoint = tmp_path / "other"
    shutil.copytree(tiny_checkpoint_dir(), checkpoint)
    shard = checkpoint / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[-2] ^= 0x01  # one weight, one bit
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="do not belong to this checkpoint: its model-00002-of-00002.safetensors"):
        verify_goldens("tiny", str(checkpoint), "gptoss_model", Thresholds(), progress=False)


def test_goldens_dtype_must_match_the_gate(tmp_path):
    with pytest.raises(InputError, match="recorded in float32; use --dtype float32"):
        verify_goldens("tiny", None, "gptoss_model", Thresholds(dtype="bfloat16"), progress=False)


def test_missing_goldens_directory_is_a_usage_error(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        load_goldens(tmp_path / "nowhere")


def test_out_exists_needs_force_and_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "g"
    out.mkdir()
    with pytest.raises(InputError, match="already exists"):
        record_goldens("tiny", out, progress=False)
    import safetensors.torch

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError):
        record_goldens("tiny", tmp_path / "h", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def test_a_whole_model_candidate_is_judged_on_its_end_to_end_states():
    spec = f"{Path(__file__).parent / 'data' / 'goldens' / 'whole_model.py'}:CANDIDATE"
    report, verdict = verify_goldens("tiny", None, spec, Thresholds(), progress=False)
    assert verdict.passed, verdict.failures
    layer = report["layers"][3]
    assert layer["isolated"] == {} and layer["accumulated"]["layer_output"]["max_abs"] < 1e-4
    assert "layers.0.attention" in not_provided(report) and "logits" not in not_provided(report)


def test_goldens_command_records_given_prompts(tmp_path):
    from click.testing import CliRunner

    from gptoss_convert.cli import cli

    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps([[1, 2, 3], list(range(40, 60))]))
    out = tmp_path / "g"
    result = CliRunner().invoke(cli, ["goldens", "--out", str(out), "--token-ids", str(ids), "-q"])
    assert result.exit_code == 0, result.output
    assert "23 rows of 2 prompt(s)" in result.stdout
    goldens = load_goldens(out)
    assert goldens.inputs["positions"].tolist() == [0, 1, 2] + list(range(20))
    assert goldens.expected["layers.1.attention"].shape == (23, 64)
    again = CliRunner().invoke(cli, ["goldens", "--out", str(out), "-q"])
    assert again.exit_code == 2 and "already exists (use --force" in again.stderr


def test_bfloat16_goldens_are_stored_as_computed_and_gate_on_the_logits(tmp_path):
    out = record_goldens("tiny", tmp_path / "bf16", dtype="bfloat16", progress=False)
    goldens = load_goldens(out)
    assert goldens.expected["layers.0.attention"].dtype == torch.bfloat16
    assert goldens.inputs["layers.2.input"].dtype == torch.bfloat16
    lengths = [len(p["token_ids"]) for p in goldens.manifest["prompts"]]
    size = sum(goldens.manifest["files"][name]["size"] for name in (INPUTS, EXPECTED))
    estimate = estimate_bytes(goldens.manifest["checkpoint"]["config"], lengths, "bfloat16")["total"]
    assert estimate <= size <= estimate + 8_000
    report, verdict = verify_goldens(out, None, "gptoss_model", Thresholds(dtype="bfloat16"), progress=False)
    assert verdict.passed and report["logits"]["top1_agreement"] == 1.0
