"""gptoss_convert.report: the report dict against its schema, and each rendering (terminal, markdown, HTML, JUnit)
of two real reports (tests/data/report-pass.json from a clean tiny run, report-fail.json from a sabotaged MoE);
write_reports' atomicity when rendering or renaming fails."""

import copy
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest

from gptoss_convert import report
from gptoss_convert.errors import InputError
from gptoss_convert.gate import COMPONENTS

DATA = Path(__file__).parent / "data"


def load(name: str) -> dict:
    return json.loads((DATA / f"report-{name}.json").read_text())


@pytest.fixture(params=["pass", "fail"])
def sample(request):
    return load(request.param)


# ---- schema -----------------------------------------------------------------------------------------------------


def validator():
    schema = report.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_is_valid_draft_2020_12_and_accepts_both_samples(sample):
    schema = report.schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema_version"] == {"const": 2}
    errors = list(validator().iter_errors(sample))
    assert not errors, [e.message for e in errors]


def _set(d, path, value):
    *parents, last = path
    for key in parents:
        d = d[key]
    if value is _DELETE:
        del d[last]
    else:
        d[last] = value


_DELETE = object()


@pytest.mark.parametrize("path, value", [
    (("verdict",), _DELETE),
    (("passed",), "false"),
    (("schema_version",), 1),
    (("dtype",), "float16"),
    (("checkpoint", "files", 0, "sha256"), "not-a-digest"),
    (("checkpoint", "layout"), "gguf"),
    (("versions", "torch"), _DELETE),
    (("layers", 0, "attention_type"), "local"),
    (("layers", 0, "not_provided"), _DELETE),
    (("layers", 0, "isolated", "experts_selected"), {}),  # only the protocol's component names
    (("candidate", "name"), _DELETE),
    (("verdict", "first_failure", "first_position", "position"), -1),
    (("heatmap", "prompts", 0, "bucket"), 0),
    (("baseline", "rows", 0, "now"), "big"),
    (("layers", 0, "isolated", "moe", "tolerance_ratio"), "infinity"),
    (("layers", 0, "isolated", "moe", "where", "channel"), -1),
    (("layers", 0, "router", "isolated", "mismatched"), 0.5),
    (("logits", "top1_agreement"), 1.5),
    (("logits", "kl_mean"), _DELETE),
    (("embedding", "kl_mean"), 0.0),  # metrics are closed: no extra keys
    (("prompts",), []),
    (("unexpected",), 1),
])
def test_schema_rejects_mutations(path, value):
    bad = copy.deepcopy(load("fail"))
    _set(bad, path, value)
    assert not validator().is_valid(bad)


def test_schema_ties_passed_to_the_verdict():
    passed = load("pass")
    passed["passed"] = False  # top-level disagrees with the verdict
    assert not validator().is_valid(passed)
    failed = load("fail")
    failed["verdict"]["first_failure"] = None  # a failed verdict names its first failure
    assert not validator().is_valid(failed)
    failed = load("fail")
    failed["verdict"]["failures"] = []
    assert not validator().is_valid(failed)


def test_schema_accepts_inf_and_null_where_compare_writes_them():
    r = load("fail")
    m = r["layers"][1]["isolated"]["moe"]
    m["tolerance_ratio"], m["rel_l2"], m["nmse_db"] = "inf", "inf", "inf"
    r["checkpoint"]["provenance"] = {"repo_id": "openai/gpt-oss-20b", "revision": "main", "commit": "a" * 40,
                                     "layout": "hf", "files": []}
    assert validator().is_valid(r)


# ---- terminal ---------------------------------------------------------------------------------------------------


def test_terminal_table_fail_names_the_first_failure_and_marks_rows():
    r = load("fail")
    text = report.terminal_table(r)
    lines = text.splitlines()
    assert lines[-1].startswith("FAILED: layer 0 (sliding_attention) attention")
    assert lines[-1].startswith("FAILED: " + r["verdict"]["first_failure"]["message"])
    assert "starts at position 16 (the sliding window): window bug signature" in lines[-1]
    rows = [line for line in lines if re.match(r"\s*\d+\s+(sliding|full)\s", line)]
    assert len(rows) == len(r["layers"])
    assert [row.rstrip().split()[-1] for row in rows] == ["FAIL", "PASS", "FAIL", "PASS"]  # the window: sliding only
    assert "1.6e+00" in rows[0] and "attention @ 16 (W)" in rows[0]  # value, and where the failure starts
    assert any(line.startswith("logits:") and "top-1 0.911" in line for line in lines)
    assert lines[0].startswith("verify gptoss_model against transformers")
    assert any(line.startswith("baseline last-run/report.json") for line in lines)
    assert "  layer   0 sliding attention      16 (W) / 16 (W) / 16 (W)" in lines


def test_terminal_table_pass():
    r = load("pass")
    text = report.terminal_table(r)
    lines = text.splitlines()
    assert lines[-1].startswith("PASSED")
    rows = [line for line in lines if re.match(r"\s*\d+\s+(sliding|full)\s", line)]
    assert len(rows) == len(r["layers"])
    assert [row.split()[1] for row in rows] == ["sliding", "full", "sliding", "full"]
    assert all(row.rstrip().endswith("PASS") and "56/56" in row for row in rows)
    assert "9.5e-06" in rows[0] and " 0 " in rows[1]  # the cached column's rounding; isolated exact
    assert lines[1].startswith("  candidate: gptoss_model 0.1.0 (") and lines[2].startswith("  reference: transformers")
    assert max(len(line) for line in lines[3:]) <= 100  # lines 1-2 hold file paths
    assert text.isascii()


def _gate_failure(layer: int, attention_type: str, component: str, metric: str) -> dict:
    """A failure as gate.Verdict.to_dict() writes it."""
    message = f"layer {layer} ({attention_type}) {component}: {metric} = inf, limit 0.001"
    return {"layer": layer, "attention_type": attention_type, "component": component, "metric": metric,
            "value": "inf", "limit": 0.001, "message": message}


def test_terminal_row_marks_follow_the_float32_gate():
    r = load("pass")
    r["layers"][2]["router"]["isolated"].update(same_set=53, near_tie=2, mismatched=1)
    r["layers"][3]["isolated"]["attention"]["tolerance_ratio"] = "inf"
    # the gate's verdict on these numbers (the report renders it, it never re-decides)
    r["verdict"]["failures"] = [_gate_failure(2, "sliding_attention", "experts_selected", "tokens routed differently"),
                                _gate_failure(3, "full_attention", "attention", "max |diff|")]
    r["verdict"]["passed"], r["verdict"]["first_failure"] = False, r["verdict"]["failures"][0]
    rows = [line for line in report.terminal_table(r).splitlines() if re.match(r"\s*\d+\s+(sliding|full)\s", line)]
    assert [row.split()[-1] for row in rows] == ["PASS", "PASS", "FAIL", "FAIL"]
    assert "53/56 +2 ties 1 off" in rows[2]
    r["dtype"], r["max_kl"], r["min_top1"] = "bfloat16", 0.01, 0.95  # bf16 gates on logits only: no row marks
    r["verdict"] = load("pass")["verdict"]  # and its verdict on these logits: passed
    text = report.terminal_table(r)
    assert "FAIL" not in text and "informational" in text


# ---- markdown ---------------------------------------------------------------------------------------------------


def test_markdown_fail():
    r = load("fail")
    md = report.markdown(r)
    assert md.startswith("## ❌ gptoss-convert verify: FAILED")
    assert "layer 0 (sliding_attention) attention" in md
    first = r["verdict"]["first_failure"]
    assert "window bug signature" in first["message"] and first["first_position"]["position"] == 16
    where = r["layers"][0]["isolated"]["attention"]["where"]
    assert f"prompt {where['prompt']}, position {where['position']}, channel {where['channel']}" in md
    assert "| layer | type |" in md
    rows = [line for line in md.splitlines() if re.match(r"\| \d+ \| (sliding|full) \|", line) and line.count("|") > 10]
    assert len(rows) == 4 and [row.endswith("❌ |") for row in rows] == [True, False, True, False]
    assert "attention @ 16 (W)" in rows[0]
    assert "worst layer" in md and "layer 0 (sliding_attention)" in md  # largest isolated layer-output ratio
    assert "8, 48 tokens" in md  # prompt lengths
    assert "transformers 5.24.0" in md and "float32 / cpu" in md
    assert "| candidate | gptoss_model 0.1.0 (/work/main/gptoss_model/model.py) |" in md
    assert f"All {len(r['verdict']['failures'])} failures" in md
    assert "### First failing positions" in md and "| 0 | sliding | attention | 16 (W) |" in md
    assert "### Baseline" in md and "| 0 | layer_output | 0 | 2.9e+01 |" in md


def test_markdown_pass_and_table_cells_escape_pipes():
    md = report.markdown(load("pass"))
    assert md.startswith("## ✅ gptoss-convert verify: PASSED")
    for line in md.splitlines():
        if line.startswith("|"):  # every table line has the same number of unescaped pipes as its header
            assert "|diff|" not in line
    header = next(line for line in md.splitlines() if line.startswith("| layer |"))
    width = len(re.findall(r"(?<!\\)\|", header))
    rows = [line for line in md.splitlines() if re.match(r"\| \d+ \|", line)]
    assert all(len(re.findall(r"(?<!\\)\|", row)) == width for row in rows)


# ---- HTML -------------------------------------------------------------------------------------------------------


class StrictParser(HTMLParser):
    """Fails on unbalanced tags, and records what an external reference would look like."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "col", "source", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.tags, self.problems, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_html(text: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(text)
    parser.close()
    assert not parser.problems, parser.problems[:5]
    assert not parser.stack, parser.stack
    return parser


def test_html_is_well_formed_self_contained_and_has_a_log_chart(sample):
    page = report.html(sample)
    parser = parse_html(page)
    assert page.startswith("<!DOCTYPE html>")
    assert "<svg" in page and "log scale" in page
    tags = [t for t, _ in parser.tags]
    assert "script" not in tags and "link" not in tags and "img" not in tags and "iframe" not in tags
    assert not any("src" in attrs or "href" in attrs for _, attrs in parser.tags)
    assert "http" not in page and "url(" not in page and "@import" not in page
    text = "".join(parser.text)
    assert "1e-12" in text  # the floor zeros are clamped to, said in the caption
    assert f"atol {sample['atol']:g}" in text
    for f in sample["checkpoint"]["files"]:
        assert f["sha256"] in text
    assert sample["reference"]["version"] in text and sample["candidate"]["name"] in text
    assert "Error by layer and position" in text and page.count('aria-label="layer x position error') == len(
        sample["prompts"])
    assert text.count("sliding") >= 2 and "KL(ref‖ours) mean" in text
    assert ("FAILED" in text) != sample["verdict"]["passed"]


def test_html_chart_has_one_polyline_per_series_and_stays_in_its_box():
    r = load("fail")
    svg = report.svg_chart(r)
    assert svg.count("<polyline") == 4
    width, height = map(float, re.search(r'viewBox="0 0 (\d+) (\d+)"', svg).groups())
    for name, value in re.findall(r'\b(x|y|x1|x2|y1|y2|cx|cy)="(-?[\d.]+)"', svg):
        limit = width if name.startswith(("x", "cx")) else height
        assert 0 <= float(value) <= limit, (name, value)
    for coords in re.findall(r'points="([^"]+)"', svg):
        for pair in coords.split():
            x, y = map(float, pair.split(","))
            assert 0 <= x <= width and 0 <= y <= height
    # Zeros (the full layers, untouched by the window bug) are drawn at the floor, the lowest gridline.
    assert "1e-12" in svg
    assert "layer 1 isolated attention: max |diff| 0" in svg


def test_html_escapes_every_string():
    r = load("fail")
    evil = '<script>alert("x")</script> & "quotes"'
    r["checkpoint"]["path"] = evil
    r["checkpoint"]["files"][0]["path"] = evil
    r["prompts"][0]["text"] = evil
    r["verdict"]["first_failure"]["message"] = evil
    r["versions"]["torch"] = evil
    page = report.html(r)
    parse_html(page)
    assert "<script" not in page
    assert "&lt;script&gt;" in page


class TableRows(HTMLParser):
    """The rows of each <table> (cells as text), the <svg> elements and every attribute value of the page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables, self.svgs, self.attribute_values, self._cell = [], 0, [], None

    def handle_starttag(self, tag, attrs):
        self.attribute_values += [value or "" for _, value in attrs]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables:
            self._cell = []
        elif tag == "svg":
            self.svgs += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_html_dom_one_row_per_layer_the_verdict_the_chart_and_nothing_external(sample):
    page = report.html(sample)
    dom = TableRows()
    dom.feed(page)
    layers_table = next(t for t in dom.tables if t[0][:2] == ["layer", "type"])
    body = layers_table[1:]
    assert [row[0] for row in body] == [str(layer["index"]) for layer in sample["layers"]]
    failed = {f["layer"] for f in sample["verdict"]["failures"] if f["layer"] is not None}
    assert [row[-1] for row in body] == ["FAIL" if layer["index"] in failed else "PASS" for layer in sample["layers"]]
    verdict = "PASSED" if sample["verdict"]["passed"] else "FAILED"
    assert f"<h1>{'✅' if sample['verdict']['passed'] else '❌'} gptoss-convert verify: {verdict}</h1>" in page
    assert dom.svgs == 1 + len(sample["prompts"])  # the chart, and one heat-map per prompt
    assert not [v for v in dom.attribute_values if re.match(r"\s*(https?:|//|file:|data:)", v)]


def test_heatmap_shows_the_window_edge():
    """The fail sample is a window off by one: on the sliding layers the 48-token prompt is within the tolerance up
    to position 15 and over it from position 16 (W) on; the full layers stay clean; W is marked."""
    from gptoss_convert.report.heatmap import colour, heatmap_view

    grid = heatmap_view(load("fail"))[1]
    assert grid["length"] == 48 and grid["bucket"] == 1 and grid["marker"] is not None
    over = {"#ffb8b0", "#fa4549", "#82071e"}

    def row(layer):
        return [c["colour"] for c in grid["cells"] if c["title"].startswith(f"layer {layer},")]

    assert not over & set(row(0)[:16]) and row(0)[16] in over
    assert not over & set(row(1)) and not over & set(row(3))
    assert colour(-12) == "#eaeef2" and colour(0.5) in over
    assert "positions" not in grid["cells"][0]["title"] and "position 0:" in grid["cells"][0]["title"]


def test_html_screenshot_in_headless_chromium(tmp_path, sample):
    """The page as a browser draws it, offline: the banner in the verdict's colour, the failing rows shaded."""
    import shutil
    import subprocess

    image_module = pytest.importorskip("PIL.Image")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed")
    page, shot = tmp_path / "report.html", tmp_path / "report.png"
    page.write_text(report.html(sample), encoding="utf-8")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", f"--screenshot={shot}",
                    "--window-size=1400,2000", page.as_uri()], capture_output=True, timeout=120, check=True)
    image = image_module.open(shot).convert("RGB")
    assert image.size == (1400, 2000)
    banner = (0x1A, 0x7F, 0x37) if sample["verdict"]["passed"] else (0xCF, 0x22, 0x2E)
    assert image.getpixel((5, 5)) == banner
    colours = {colour for _, colour in image.getcolors(maxcolors=1 << 20)}
    assert ((0xFF, 0xEB, 0xE9) in colours) != sample["verdict"]["passed"]  # shaded failing rows and chart bands


# ---- JUnit ------------------------------------------------------------------------------------------------------


def failed_cases(root):
    return {(case.get("classname"), case.get("name")) for case in root.iter("testcase") if case.find("failure") is not None}


def test_junit_one_case_per_layer_and_component_failures_match_the_verdict(sample):
    root = ET.fromstring(report.junit(sample))
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = list(suite.iter("testcase"))
    n_layers = len(sample["layers"])
    assert len(cases) == n_layers * len(COMPONENTS) + 4
    assert int(suite.get("tests")) == len(cases)
    assert float(suite.get("time")) == pytest.approx(sample["timing"]["seconds"])
    names = {(c.get("classname"), c.get("name")) for c in cases}
    assert ("verify.layer_00_sliding", "moe") in names and ("verify.layer_03_full", "expert_indices") in names
    assert {n for c, n in names if not c.startswith("verify.layer_")} == {"embedding", "final_norm", "head", "logits"}
    expected = set()
    for f in sample["verdict"]["failures"]:
        if f["layer"] is None:
            expected.add(("verify.model", f["component"]))
        else:
            expected.add((f"verify.layer_{f['layer']:02d}_{f['attention_type'].split('_')[0]}", f["component"]))
    assert failed_cases(suite) == expected
    assert int(suite.get("failures")) == len(expected)


def test_junit_failure_messages_and_router_cases():
    r = load("fail")
    r["layers"][2]["router"]["isolated"].update(same_set=50, mismatched=6)
    r["verdict"]["failures"].append({
        "layer": 2, "attention_type": "sliding_attention", "component": "expert_indices",
        "metric": "tokens routed differently (not near-ties)", "value": 6, "limit": 0, "column": "isolated",
        "first_position": None, "window_signature": False,
        "message": "layer 2 (sliding_attention) expert_indices: tokens routed differently (not near-ties) = 6, limit 0",
    })
    r["verdict"]["failures"].append({  # two failures of one case (logits: max |diff| and KL) -> one failed case
        "layer": None, "attention_type": None, "component": "logits", "metric": "KL(ref||ours) mean",
        "value": 0.285, "limit": 0.01, "message": "final logits: KL(ref||ours) mean = 0.2851, limit 0.01"})
    root = ET.fromstring(report.junit(r))
    by_name = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    router = by_name[("verify.layer_02_sliding", "expert_indices")].find("failure")
    assert router is not None and "routed differently" in router.get("message")
    attention = by_name[("verify.layer_00_sliding", "attention")].find("failure")
    assert attention.get("message") == r["verdict"]["first_failure"]["message"]
    assert "first failing position 16 (W)" in attention.text
    logits = by_name[("verify.model", "logits")].find("failure")
    assert "KL(ref||ours) mean" in logits.text and "max |diff|" in logits.get("message")
    assert by_name[("verify.model", "embedding")].find("failure") is None


# ---- write_reports ----------------------------------------------------------------------------------------------


def test_write_reports_writes_every_file(tmp_path, sample):
    out = tmp_path / "a" / "verify-report"
    written = report.write_reports(sample, out, junit_path=out / "junit.xml")
    assert written == [out / "report.json", out / "report.md", out / "report.html", out / "junit.xml"]
    assert json.loads((out / "report.json").read_text()) == sample
    assert (out / "report.md").read_text(encoding="utf-8") == report.markdown(sample)
    assert (out / "report.html").read_text(encoding="utf-8") == report.html(sample)
    ET.parse(out / "junit.xml")
    assert sorted(p.name for p in out.iterdir()) == ["junit.xml", "report.html", "report.json", "report.md"]
    assert report.write_reports(sample, out) == written[:3]  # again, over the previous ones, without JUnit


def test_write_reports_junit_elsewhere(tmp_path):
    junit_path = tmp_path / "junit" / "results.xml"
    written = report.write_reports(load("pass"), tmp_path / "r", junit_path=str(junit_path))
    assert written[-1] == junit_path and junit_path.is_file()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*")) if directory.exists() else []


def test_write_reports_render_failure_writes_nothing(tmp_path, monkeypatch):
    def boom(_report):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(report, "html", boom)
    out = tmp_path / "verify-report"
    with pytest.raises(RuntimeError, match="renderer crashed"):
        report.write_reports(load("fail"), out, junit_path=out / "junit.xml")
    assert leftovers(out) == []


@pytest.mark.parametrize("exception", [KeyboardInterrupt, OSError])
def test_write_reports_interrupted_before_rename_leaves_no_temp_and_the_old_report(tmp_path, monkeypatch, exception):
    out = tmp_path / "verify-report"
    report.write_reports(load("pass"), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    calls = []

    def interrupted_replace(src, dst):  # every temporary file is written by now; the first rename is interrupted
        calls.append((src, dst))
        raise exception("interrupted")

    monkeypatch.setattr(report.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt if exception is KeyboardInterrupt else InputError):
        report.write_reports(load("fail"), out, junit_path=out / "junit.xml")
    assert calls and Path(calls[0][0]).name.endswith(".tmp")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old, complete files; no temp, no junit


def test_write_reports_json_failure_keeps_the_previous_report(tmp_path, monkeypatch):
    out = tmp_path / "verify-report"
    report.write_reports(load("pass"), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken_dumps(*args, **kwargs):
        raise ValueError("Out of range float values are not JSON compliant")

    monkeypatch.setattr(report.json, "dumps", broken_dumps)
    with pytest.raises(ValueError):
        report.write_reports(load("fail"), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_write_reports_failure_while_writing_a_temp_file_cleans_up(tmp_path, monkeypatch):
    out = tmp_path / "verify-report"
    real_fsync, seen = report.os.fsync, []

    def flaky_fsync(fd):  # the first temp file is complete, the second dies mid-write
        seen.append(fd)
        if len(seen) == 2:
            raise KeyboardInterrupt
        real_fsync(fd)

    monkeypatch.setattr(report.os, "fsync", flaky_fsync)
    with pytest.raises(KeyboardInterrupt):
        report.write_reports(load("fail"), out)
    assert len(seen) == 2
    assert leftovers(out) == []
    assert not out.exists()  # the directory it created, empty, is removed too


def test_write_reports_onto_a_file_is_an_input_error(tmp_path):
    target = tmp_path / "verify-report"
    target.write_text("not a directory")
    with pytest.raises(InputError, match="not a directory"):
        report.write_reports(load("pass"), target)
    assert target.read_text() == "not a directory"
