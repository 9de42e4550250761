"""verify --candidate: built-ins, a user's file, the package.module form, the whole-model fallback, broken
candidates (one line, the right exit code, no traceback), first failing positions, the cached column and
--baseline deltas. Short prompts (8 and 48 tokens, crossing the 16-token window of the tiny checkpoint) keep each
run about a second of CPU; the default long prompt has its own test in test_verify.py."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gptoss_convert.cli import cli
from gptoss_convert.errors import CandidateError
from gptoss_convert.report import schema

try:
    import jsonschema  # a test dependency (pyproject's test extra); the bare GPU machine may lack it
except ImportError:
    jsonschema = None

HERE = Path(__file__).parent
USER_PORT = HERE / "data" / "candidates" / "user_port.py"
FIXTURES = "tests.candidate_fixtures"
WINDOW = 16  # the tiny checkpoint's sliding window
LAYER_NAMES = ("attention", "router_logits", "expert_indices", "expert_weights", "moe", "layer_output")


@pytest.fixture(scope="module")
def token_ids(tmp_path_factory):
    path = tmp_path_factory.mktemp("ids") / "ids.json"
    path.write_text(json.dumps([list(range(3, 11)), [(7 * i + 5) % 500 for i in range(48)]]))
    return path


def verify(tmp_path, token_ids, *args, env=None):
    """Run the CLI; returns (result, report dict or None)."""
    report_dir = tmp_path / "r"
    result = CliRunner().invoke(cli, ["verify", "--quiet", "--token-ids", str(token_ids), "--report", str(report_dir),
                                      *map(str, args)], env=env)
    path = report_dir / "report.json"
    report = json.loads(path.read_text()) if path.is_file() else None
    if report is not None and jsonschema is not None:
        jsonschema.validate(report, schema())  # every report written here follows the published schema
    return result, report


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("spec", ["gptoss_model", "gptoss_model:fast", "gptoss_model:mxfp4", f"{FIXTURES}:factory", f"{FIXTURES}:instance",
                                  "gptoss_convert.candidates.builtin_gptoss:GptossModelCandidate"])
def test_gptoss_model_candidates_pass_and_are_named(spec, tmp_path, token_ids):
    result, report = verify(tmp_path, token_ids, "--candidate", spec)
    assert result.exit_code == 0, result.output
    assert report["candidate"]["name"].startswith("gptoss_model") and report["candidate"]["source"].endswith(".py")
    assert report["reference"]["name"] == "transformers" and report["reference"]["version"]
    assert "model.py" in report["candidate"]["source"] and "modeling_gpt_oss.py" in report["reference"]["source"]
    layer = report["layers"][0]
    assert set(layer["isolated"]) == {"attention", "router_logits", "expert_weights", "moe", "layer_output"}
    assert layer["not_provided"] == [] and layer["cached"], "gptoss_model has a KV cache: the cached column runs"
    assert layer["router"]["cached"]["mismatched"] == 0
    assert "PASSED: " + report["candidate"]["name"] + " against transformers" in result.output
    if spec == "gptoss_model:mxfp4":  # the experts it ran were packed: MXFP4Experts, from the checkpoint's values
        assert report["candidate"]["name"] == "gptoss_model:mxfp4"


def test_transformers_sdpa_fails_on_the_sinks(tmp_path, token_ids):
    """Transformers' gpt-oss declares no SDPA support: its SDPA path drops the sinks (real-bugs B9). verify says
    so at the first layer's attention, from position 0 (every row's softmax is off)."""
    result, report = verify(tmp_path, token_ids, "--candidate", "transformers:sdpa")
    assert result.exit_code == 1
    first = report["verdict"]["first_failure"]
    assert (first["layer"], first["component"], first["first_position"]["position"]) == (0, "attention", 0)
    assert "transformers:sdpa against transformers" in error_line(result)


def test_transformers_flex_attention_runs_or_says_why(tmp_path, token_ids):
    import torch

    result, report = verify(tmp_path, token_ids, "--candidate", "transformers:flex_attention")
    if torch.cuda.is_available():  # it runs there; whether it matches eager is what the report says
        assert result.exit_code in (0, 1) and report is not None, result.output
        assert report["candidate"]["settings"]["attn_implementation"] == "flex_attention"
    else:  # Transformers refuses sinks with flex attention on the CPU: a running failure, one line
        assert result.exit_code == 1
        assert error_line(result).startswith("error: candidate transformers:flex_attention: layer 0 "
                                             "(sliding_attention) run() raised ValueError: Attention sinks")


def test_user_file_candidate_passes_with_not_provided_components(tmp_path, token_ids):
    result, report = verify(tmp_path, token_ids, "--candidate", f"{USER_PORT}:UserPort")
    assert result.exit_code == 0, result.output
    assert report["candidate"] == {"name": "user-port", "version": "0.0.1", "source": str(USER_PORT),
                                   "provides": {"build_layer": True, "embed": False, "final_norm": False,
                                                "head": False, "run_model": False}}
    layer = report["layers"][1]
    assert set(layer["isolated"]) == {"attention", "layer_output"}
    assert layer["not_provided"] == ["router_logits", "expert_indices", "expert_weights", "moe"]
    assert layer["router"]["isolated"] is None and layer["cached"] == {}
    assert report["embedding"] is None and report["final_norm"] is None and report["head"] is None
    assert report["logits_path"] == "reference final_norm, reference head"


def test_whole_model_fallback_is_judged_on_hidden_states_and_logits(tmp_path, token_ids):
    result, report = verify(tmp_path, token_ids, "--candidate", f"{FIXTURES}:WholeModel")
    assert result.exit_code == 0, result.output
    layer = report["layers"][3]
    assert layer["isolated"] == {} and set(layer["accumulated"]) == {"layer_output"}
    assert report["logits_path"] == "candidate run_model()" and report["embedding"]["max_abs"] == 0


@pytest.mark.parametrize("spec, code, message", [
    (f"{HERE / 'data' / 'candidates' / 'broken_import.py'}:X", 2,
     r"candidate \S+broken_import.py:X: importing \S+ raised ModuleNotFoundError: No module named "
     r"'gptoss_port_that_is_not_installed'"),
    ("tests.candidate_fixtures:NoSuchThing", 2, r"tests.candidate_fixtures has no 'NoSuchThing' \(it defines "),
    ("no/such/file.py:X", 2, r"candidate no/such/file.py:X: no such file no/such/file.py"),
    ("just-a-name", 2, r"--candidate just-a-name: expected a built-in \(gptoss_model, "),
    (f"{FIXTURES}:Nothing", 2, r"candidate tests.candidate_fixtures:Nothing: Nothing has neither build_layer\(\) nor "
                               r"run_model\(\)"),
    (f"{FIXTURES}:BuildRaises", 2, r"candidate gptoss_model: layer 0 build_layer\(\) raised KeyError: "
                                   r"'self_attn.qkv.weight'"),
    (f"{FIXTURES}:RunRaises", 1, r"candidate gptoss_model: layer 1 \(full_attention\) run\(\) raised RuntimeError: "
                                 r"CUDA kernel not found"),
    (f"{FIXTURES}:WrongShape", 1, r"candidate gptoss_model: layer 0 \(sliding_attention\) moe has shape \[1, 7, 64\], "
                                  r"expected \[1, 8, 64\]"),
    (f"{FIXTURES}:WrongDtype", 1, r"candidate gptoss_model: layer 0 \(sliding_attention\) router_logits has dtype "
                                  r"float64, expected float32"),
])
def test_broken_candidates_fail_in_one_line(spec, code, message, tmp_path, token_ids):
    result, _ = verify(tmp_path, token_ids, "--candidate", spec)
    assert result.exit_code == code, result.output
    assert pytest.importorskip("re").search(message, error_line(result)), error_line(result)


def test_nan_is_measured_and_named_with_its_first_position(tmp_path, token_ids):
    result, report = verify(tmp_path, token_ids, "--candidate", f"{FIXTURES}:NaNFromPosition5")
    assert result.exit_code == 1
    first = report["verdict"]["first_failure"]
    assert (first["layer"], first["component"], first["metric"]) == (2, "attention", "NaN/Inf values")
    assert first["first_position"] == {"prompt": 0, "position": 5}
    assert "layer 2 (sliding_attention) attention: NaN/Inf values" in error_line(result)


def test_debug_keeps_the_traceback(tmp_path, token_ids):
    result, _ = verify(tmp_path, token_ids, "--candidate", f"{FIXTURES}:RunRaises",
                       env={"GPTOSS_CONVERT_DEBUG": "1"})
    assert isinstance(result.exception, CandidateError)
    assert isinstance(result.exception.__cause__, RuntimeError)  # the candidate's own error, with its traceback


def test_missing_components_are_not_provided_never_passed(tmp_path, token_ids):
    result, report = verify(tmp_path, token_ids, "--candidate", f"{FIXTURES}:OnlyLayerOutput")
    assert result.exit_code == 0, result.output
    for layer in report["layers"]:
        assert set(layer["isolated"]) == {"layer_output"} and "attention" in layer["not_provided"]
    junit_cases = [f for f in report["verdict"]["failures"]]
    assert junit_cases == []


def test_a_logits_only_candidate_is_judged_on_its_logits(tmp_path, token_ids):
    result, report = verify(tmp_path, token_ids, "--candidate", f"{FIXTURES}:LogitsOnly")
    assert result.exit_code == 0, result.output
    assert report["logits_path"] == "candidate run_model()" and report["logits"]["max_abs"] < 1e-3
    assert all(layer["isolated"] == {} and layer["accumulated"] == {} for layer in report["layers"])


def test_a_candidate_that_returns_nothing_does_not_pass(tmp_path, token_ids):
    result, report = verify(tmp_path, token_ids, "--candidate", f"{FIXTURES}:ReturnsNothing")
    assert result.exit_code == 1
    assert "every layer: layers that returned any component = 0, limit 1" in error_line(result)
    assert all(layer["not_provided"] == list(LAYER_NAMES) for layer in report["layers"])


def test_window_off_by_one_starts_at_the_window(tmp_path, token_ids):
    result, report = verify(tmp_path, token_ids, "--candidate", f"{FIXTURES}:WindowOffByOne")
    assert result.exit_code == 1
    first = report["verdict"]["first_failure"]
    assert (first["layer"], first["attention_type"], first["component"]) == (0, "sliding_attention", "attention")
    assert first["first_position"] == {"prompt": 1, "position": WINDOW} and first["window_signature"]
    assert f"starts at position {WINDOW} (the sliding window): window bug signature" in error_line(result)
    assert all(f["attention_type"] == "sliding_attention" for f in report["verdict"]["failures"]
               if f["layer"] is not None and f["column"] == "isolated")
    heat = report["heatmap"]["prompts"][1]["log10_ratio"][0]  # layer 0, the 48-token prompt, one cell per position
    assert max(heat[:WINDOW]) <= 0 < heat[WINDOW]


def test_cache_only_bug_fails_in_the_cached_column(tmp_path, token_ids):
    result, report = verify(tmp_path, token_ids, "--candidate", f"{FIXTURES}:CachedWindowOffByOne")
    assert result.exit_code == 1
    failures = report["verdict"]["failures"]
    assert {f["column"] for f in failures if f["layer"] is not None} == {"cached"}
    first = report["verdict"]["first_failure"]
    assert (first["layer"], first["column"], first["first_position"]["position"]) == (0, "cached", WINDOW)
    assert "(cached)" in error_line(result)


def test_baseline_adds_per_layer_deltas(tmp_path, token_ids):
    _, good = verify(tmp_path / "good", token_ids)
    result, report = verify(tmp_path / "bad", token_ids, "--candidate", f"{FIXTURES}:WindowOffByOne",
                            "--baseline", tmp_path / "good" / "r" / "report.json")
    assert result.exit_code == 1
    rows = {(r["layer"], r["column"], r["component"]): r for r in report["baseline"]["rows"]}
    row = rows[(0, "isolated", "attention")]
    assert row["baseline"] == good["layers"][0]["isolated"]["attention"]["max_abs"] == 0
    assert row["now"] > 0.01 and row["delta"] == row["now"]
    assert report["baseline"]["passed"] is True and report["baseline"]["candidate"]["name"] == "gptoss_model"


def test_unreadable_baseline_exits_2_before_running(tmp_path, token_ids):
    (tmp_path / "old.json").write_text("{not json")
    result, report = verify(tmp_path, token_ids, "--baseline", tmp_path / "old.json")
    assert result.exit_code == 2 and report is None
    assert "--baseline" in error_line(result) and "old.json" in error_line(result)


def test_unknown_reference_exits_2(tmp_path, token_ids):
    result, _ = verify(tmp_path, token_ids, "--reference", "numpy")
    assert result.exit_code == 2 and "--reference numpy: expected one of" in error_line(result)


def test_goldens_refuse_options_that_only_a_live_reference_can_honour(tmp_path):
    result = CliRunner().invoke(cli, ["verify", "--goldens", "tiny", "--chat", "Hi", "--report", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert error_line(result).startswith("error: --chat does not apply with --goldens")
    assert not (tmp_path / "r").exists()


def test_mxfp4_candidate_keeps_the_checkpoint_experts_packed():
    """gptoss_model:mxfp4 builds MXFP4Experts whose packed bytes hold exactly the values of the checkpoint's own
    blocks and scales (dequantized here by the format's formula, mxfp4.dequantize_reference), not dense matrices."""
    import torch
    from safetensors import safe_open

    from gptoss_convert import tiny_checkpoint_dir
    from gptoss_convert.candidates import load_candidate
    from gptoss_convert.candidates.protocol import Context
    from gptoss_convert.mxfp4 import dequantize_reference
    from gptoss_model.config import GPTOssConfig
    from gptoss_model.mxfp4_experts import MXFP4Experts, dequantize

    directory = tiny_checkpoint_dir()
    config = GPTOssConfig.from_hf_config(directory / "config.json")
    raw = {}
    for file in sorted(directory.glob("model-*.safetensors")):
        with safe_open(file, "pt") as f:
            raw.update({n: f.get_tensor(n) for n in f.keys() if n.startswith("model.layers.0.")})
    tensors = {n: t.float() for n, t in raw.items() if not n.endswith(("_blocks", "_scales"))}
    for projection in ("gate_up_proj", "down_proj"):
        name = f"model.layers.0.mlp.experts.{projection}"
        tensors[name] = dequantize_reference(raw[f"{name}_blocks"], raw[f"{name}_scales"], torch.float32)
    candidate, described = load_candidate("gptoss_model:mxfp4")
    assert described.name == "gptoss_model:mxfp4"
    candidate.setup(Context(directory, config, torch.float32, "cpu"))
    experts = candidate.build_layer(0, config, tensors).layer.mlp.experts
    assert isinstance(experts, MXFP4Experts)
    for projection in ("gate_up_proj", "down_proj"):
        blocks = getattr(experts, f"{projection}_blocks")
        assert blocks.dtype == torch.uint8
        values = dequantize(blocks, getattr(experts, f"{projection}_scales"), torch.float32)
        assert torch.equal(values, tensors[f"model.layers.0.mlp.experts.{projection}"])
