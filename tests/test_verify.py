"""verify end to end on the embedded tiny checkpoint: the unmodified model passes with the default prompts (one of
them past the original 4,096-token context) and with given ones. Injected bugs run as mutant candidates in
tests/test_mutants.py and tests/test_candidates.py."""

import json

import pytest
from click.testing import CliRunner

from gptoss_convert.cli import cli
from gptoss_convert.gate import Thresholds
from gptoss_convert.verify import run_verify


def run_cli(*args):
    return CliRunner().invoke(cli, ["verify", *args])


@pytest.fixture
def short_prompts(tmp_path):
    """8 and 48 tokens: both sides of the 16-token window, a second of CPU per run."""
    path = tmp_path / "ids.json"
    path.write_text(json.dumps([list(range(8)), [(7 * i + 5) % 500 for i in range(48)]]))
    return str(path)


def test_tiny_passes_with_table_and_reports(tmp_path):
    result = run_cli("--report", str(tmp_path / "r"), "--junit", str(tmp_path / "junit.xml"))
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    import jsonschema

    from gptoss_convert.report import schema

    jsonschema.validate(report, schema())  # the report a real run writes follows the published schema
    assert report["passed"] is True and len(report["layers"]) == 4
    assert [layer["attention_type"] for layer in report["layers"]] == ["sliding_attention", "full_attention"] * 2
    lengths = [len(p["token_ids"]) for p in report["prompts"]]
    window = report["checkpoint"]["config"]["sliding_window"]
    assert min(lengths) < window < lengths[1] < 4096 < lengths[2], "default prompts: both sides of the window, and " \
        "past the original context (YaRN)"
    assert report["prompts"][3]["text"].startswith("<|start|>system") and lengths[3] > window  # the harmony chat
    assert report["heatmap"]["prompts"][2]["bucket"] > 1  # the long prompt is drawn in buckets of positions
    assert "PASSED: gptoss_model against transformers" in result.output
    assert report["logits"]["max_abs"] <= 1e-3 and report["logits"]["top1_agreement"] == 1.0
    assert (tmp_path / "junit.xml").is_file() and (tmp_path / "r" / "report.html").is_file()


def test_tiny_reports_exact_float32_parity(short_prompts):
    result = run_verify("tiny", Thresholds(), progress=False, token_ids_file=short_prompts)
    assert result.passed
    for layer in result.layers:
        assert layer.router_isolated.mismatched == 0
        # the isolated column is exact up to a few 1e-6; the accumulated one carries four layers of that rounding, and
        # one token at a time through the KV cache sums in another order than a full prefill: ~1e-5 of rounding
        for column, limit in ((layer.isolated, 1e-5), (layer.accumulated, 1e-4), (layer.cached, 1e-4)):
            assert set(column) == {"attention", "router_logits", "expert_weights", "moe", "layer_output"}
            for metrics in column.values():
                assert metrics.max_abs < limit and metrics.first_over is None


# float32 parity of the correct model is a few 1e-6 on the tiny checkpoint, so the sabotage runs use a tight gate: some
# bugs are small by nature (clamping the gate from below changes gate·sigmoid(1.702·gate) by less than 5e-5 per
# channel once gate < -7), too small for the default --atol 1e-3 but 1000x above the correct model's error.
TIGHT = "3e-5"


def test_tight_gate_passes_the_correct_model(tmp_path, short_prompts):
    result = run_cli("--quiet", "--atol", TIGHT, "--token-ids", short_prompts, "--report", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output


def test_bfloat16_mode_gates_on_kl_and_top1(tmp_path, short_prompts):
    result = run_cli("--dtype", "bfloat16", "--quiet", "--token-ids", short_prompts, "--report", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["dtype"] == "bfloat16" and report["max_kl"] == 1e-2 and report["min_top1"] == 0.95


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--atol", "-1"], "--atol"),
        (["--dtype", "int8"], "--dtype"),
        (["--min-top1", "2"], "--min-top1"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_bad_options_exit_2(args, fragment):
    result = run_cli(*args)
    assert result.exit_code == 2 and fragment in result.output


def test_not_downloaded_model_exits_2_naming_download(monkeypatch, tmp_path):
    monkeypatch.setenv("GPTOSS_CONVERT_HOME", str(tmp_path))
    result = run_cli("--model", "20b")
    assert result.exit_code == 2
    assert "gptoss-convert download --model 20b" in result.output


def test_prompt_and_token_ids(tmp_path):
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps([[1, 2, 3, 4, 5], list(range(40))]))
    result = run_cli("--quiet", "--prompt", "Hello there, general verification.", "--token-ids", str(ids_file),
                     "--report", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    prompts = json.loads((tmp_path / "r" / "report.json").read_text())["prompts"]
    assert prompts[0]["text"] == "Hello there, general verification." and len(prompts[0]["token_ids"]) > 3
    assert prompts[1]["token_ids"] == [1, 2, 3, 4, 5] and len(prompts[2]["token_ids"]) == 40


def test_token_id_outside_vocabulary_exits_2(tmp_path):
    ids_file = tmp_path / "ids.json"
    ids_file.write_text("[1, 2, 99999]")
    result = run_cli("--token-ids", str(ids_file), "--report", str(tmp_path / "r"))
    assert result.exit_code == 2 and "99999" in result.output
    assert not (tmp_path / "r").exists()
