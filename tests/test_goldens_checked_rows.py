"""Checked rows: large goldens keep each layer's components at a subset of rows (components.rows) and every layer's
input and output at all rows. Window bugs still fail at position W, per component; reports name true positions;
`compare` takes components at every row or at the checked rows; 20b float32 goldens stay under 100 MB."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from gptoss_convert.cli import cli
from gptoss_convert.errors import InputError
from gptoss_convert.gate import Thresholds
from gptoss_convert.goldens import FIRST_POSITIONS, checked_count, checked_rows, default_lengths, estimate_bytes
from gptoss_convert.goldens_compare import verify_goldens
from gptoss_convert.goldens_files import CHECKED, EXPECTED, INPUTS, MANIFEST, load_goldens, resolve_goldens
from gptoss_model import GPTOss_20B, GPTOss_120B
from tests.load_file import load_module

MUTANT_DIR = Path(__file__).parent / "mutants"
KEPT = 16  # of the tiny goldens' 24 rows (4 + 20 tokens): the 14 required ones and 2 spread


def _required_positions(length: int, window: int) -> set[int]:
    near = set(range(max(0, window - 2), min(window + 3, length))) if length > window else set()
    return set(range(min(FIRST_POSITIONS, length))) | {length - 1} | near


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """Tiny goldens with components at 16 of the 24 rows (`goldens --checked-rows 16`)."""
    out = tmp_path_factory.mktemp("subset") / "g"
    result = CliRunner().invoke(cli, ["goldens", "--out", str(out), "--checked-rows", str(KEPT), "-q"])
    assert result.exit_code == 0, result.output
    assert "24 rows of 2 prompt(s) (components at 16 checked rows)" in result.stdout
    return out


@pytest.fixture(scope="module")
def every_row_outputs():
    """Every output name at every row: the shipped goldens (all rows checked), the same prompts and checkpoint."""
    shipped = load_goldens("tiny")
    assert len(shipped.checked) == len(shipped.rows)
    return {name: shipped.expected[name].clone() for name in shipped.manifest["outputs"]}


def test_20b_float32_goldens_stay_under_100_mb_and_check_the_window_edge():
    config = GPTOss_20B().to_hf_config()
    lengths = list(default_lengths(config["sliding_window"]))
    estimate = estimate_bytes(config, lengths, "float32")
    assert estimate["total"] < 90_000_000 and estimate["checked_rows"] == checked_count(config) < estimate["rows"]
    rows = checked_rows(config, lengths)
    window, short = config["sliding_window"], lengths[0]
    assert {0, 1, 2, 3, short - 1} <= set(rows)  # the short prompt: its start and its last row
    long_prompt = {r - short for r in rows if r >= short}
    assert {0, 1, 2, 3, window - 2, window - 1, window, window + 1, window + 2, lengths[1] - 1} <= long_prompt
    assert estimate_bytes(config, lengths, "bfloat16")["total"] < estimate["total"] // 2 + 1_000_000
    big = GPTOss_120B().to_hf_config()  # the same rule, fewer rows per layer (more layers, more experts)
    assert len(checked_rows(big, lengths)) < len(rows)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(lengths=st.lists(st.integers(1, 60), min_size=1, max_size=4), window=st.integers(1, 40),
       count=st.integers(0, 200))
def test_checked_rows_keep_the_required_rows_and_the_count_asked(lengths, window, count):
    rows = checked_rows({"sliding_window": window}, lengths, count)
    total = sum(lengths)
    assert rows == sorted(set(rows)) and all(0 <= r < total for r in rows)
    start, required = 0, set()
    for n in lengths:
        required |= {start + p for p in _required_positions(n, window)}
        start += n
    assert required <= set(rows)
    assert len(rows) == (total if count >= total else max(count, len(required)))


def test_subset_goldens_store_components_at_the_checked_rows_only(subset):
    goldens = load_goldens(subset)
    checked = goldens.checked
    assert len(checked) == KEPT and len(goldens.rows) == 24
    positions = [goldens.rows[r] for r in checked]
    assert {(1, p) for p in (0, 1, 2, 3, 14, 15, 16, 17, 18, 19)} <= set(positions)
    shipped = load_goldens("tiny")  # all rows: the subset is the same values at the checked rows
    for component in CHECKED:
        name = f"layers.2.{component}"
        assert goldens.expected[name].shape[0] == KEPT
        torch.testing.assert_close(goldens.expected[name], shipped.expected[name][checked], atol=1e-4, rtol=0)
    assert goldens.inputs["layers.2.input"].shape == (24, 64)
    assert goldens.expected["layers.2.layer_output"].shape == (24, 64)
    size = sum(goldens.manifest["files"][name]["size"] for name in (INPUTS, EXPECTED))
    lengths = [len(p["token_ids"]) for p in goldens.manifest["prompts"]]
    estimate = estimate_bytes(goldens.manifest["checkpoint"]["config"], lengths, "float32", KEPT)
    assert estimate["checked_rows"] == KEPT and estimate["total"] <= size <= estimate["total"] + 8_000


@pytest.mark.parametrize("mutant", ["window_off_by_one", "b01_window_inclusive", "b06_no_window", "b16_plain_rope",
                                    "b14_interleaved_rotary", "b19_router_bias_ignored", "control"])
def test_mutants_fail_against_subset_goldens_at_their_true_position(subset, mutant):
    """As against the every-row goldens: same layer kind, component and first failing position (W for window bugs),
    a position in its prompt (position 16 is the 11th checked row here, not the 17th)."""
    path = MUTANT_DIR / f"{mutant}.py"
    expect = getattr(load_module(path, f"subset_mutant_{mutant}"), "EXPECT", None)
    report, verdict = verify_goldens(subset, None, f"{path}:CANDIDATE", Thresholds(atol=3e-5), progress=False)
    if expect is None:
        assert verdict.passed, verdict.failures
        return
    first = verdict.first
    assert not verdict.passed and (first.attention_type, first.component) == (expect.attention_type, expect.component)
    if expect.position is not None:
        assert first.first_position["position"] == expect.position
    if expect.position == 16:
        assert first.window_signature and "starts at position 16 (the sliding window)" in first.describe()
    layer = report["layers"][first.layer]
    assert len(report["heatmap"]["prompts"][1]["log10_ratio"][first.layer]) == 20  # every position of the prompt
    assert layer["isolated"]["layer_output"]["tolerance_ratio"] > 1  # the layer output, at every row, fails too


def _compare(tmp_path, goldens, outputs):
    path = tmp_path / "outputs.safetensors"
    save_file(outputs, str(path))
    return CliRunner().invoke(cli, ["compare", "--goldens", str(goldens), "--outputs", str(path), "-q",
                                    "--report", str(tmp_path / "report")])


def test_compare_takes_components_at_every_row_or_at_the_checked_rows(tmp_path, subset, every_row_outputs):
    result = _compare(tmp_path, subset, every_row_outputs)
    assert result.exit_code == 0, result.output
    goldens = load_goldens(subset)
    at_checked = {name: goldens.expected[name].clone() for name in goldens.manifest["outputs"]}
    result = _compare(tmp_path, subset, at_checked)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "report" / "report.json").read_text())["layers"][0]["not_provided"] == []


def test_compare_names_the_true_position_of_a_wrong_component_given_at_every_row(tmp_path, subset, every_row_outputs):
    outputs = dict(every_row_outputs)
    attention = outputs["layers.2.attention"].clone()
    attention[4 + 17] += 0.01  # prompt 1, position 17: a checked row
    attention[4 + 10] += 0.01  # position 10: not a checked row, so not compared (its layer output is)
    outputs["layers.2.attention"] = attention
    result = _compare(tmp_path, subset, outputs)
    assert result.exit_code == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "layer 2 (sliding_attention) attention" in line and "first failing position 17 (prompt 1)" in line


def test_compare_refuses_components_at_another_number_of_rows(tmp_path, subset, every_row_outputs):
    outputs = dict(every_row_outputs, **{"layers.1.moe": every_row_outputs["layers.1.moe"][:20].contiguous()})
    result = _compare(tmp_path, subset, outputs)
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    expected = "expected [16, 64] (the checked rows) or [24, 64] (every row)"
    assert f"layers.1.moe has shape [20, 64], {expected}" in result.stderr
    outputs = dict(every_row_outputs, **{"layers.1.layer_output": every_row_outputs["layers.1.layer_output"][:16]})
    result = _compare(tmp_path, subset, outputs)  # a layer output is kept at every row: only [24, 64] is right
    assert result.exit_code == 1 and "layers.1.layer_output has shape [16, 64], expected [24, 64]" in result.stderr


def test_goldens_of_another_format_version_are_an_input_error(tmp_path, every_row_outputs):
    """Format 1 stored components at every row without components.rows: the files are intact, this version does not
    read them (exit 2, one line, what to do), as for our own checkpoint format."""
    goldens = tmp_path / "old"
    shutil.copytree(resolve_goldens("tiny"), goldens)
    manifest = json.loads((goldens / MANIFEST).read_text())
    (goldens / MANIFEST).write_text(json.dumps(dict(manifest, format_version=1)))
    with pytest.raises(InputError, match=r"manifest.json: format_version 1, this gptoss-convert reads 2; record"):
        load_goldens(goldens)
    result = _compare(tmp_path, goldens, every_row_outputs)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "format_version 1" in result.stderr


def test_checked_rows_option_must_be_positive(tmp_path):
    result = CliRunner().invoke(cli, ["goldens", "--out", str(tmp_path / "g"), "--checked-rows", "0", "-q"])
    assert result.exit_code == 2 and "--checked-rows" in result.stderr and not (tmp_path / "g").exists()
