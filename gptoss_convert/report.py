"""Rendering of verify's report dict (VerifyResult.to_dict()): terminal table, report.md, report.html, JUnit XML,
and writing them atomically. Nothing here measures or judges: the numbers come from compare.py and the verdict from
gate.py. The one derived mark, the PASS/FAIL of a table row, restates the float32 gate for that row (an isolated
component with tolerance_ratio > 1, or tokens routed differently for real).

The report's shape is described by data/report.schema.json (`schema()`).
"""

import html as _html
import json
import math
import os
import secrets
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

from gptoss_convert.errors import InputError
from gptoss_convert.gate import COMPONENTS

CHART_FLOOR = 1e-12  # max |diff| below this (exact zeros included) is drawn at this value on the log-scale chart
MAX_LISTED_FAILURES = 50


def schema() -> dict:
    """The JSON schema (draft 2020-12) of the report dict, shipped as gptoss_convert/data/report.schema.json."""
    text = resources.files("gptoss_convert").joinpath("data", "report.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


# ---- until issue 11's report/ package lands: the schema-2 report seen in the shape this renderer reads ----------

_NOT_PROVIDED = {"max_abs": "n/p", "mean_abs": "n/p", "rel_l2": "n/p", "nmse_db": "n/p", "tolerance_ratio": 0.0,
                 "where": {}}
_NO_ROUTER = {"same_set": 0, "tokens": 0, "near_tie": 0, "mismatched": 0, "eps": 0.0}


def _legacy(report: dict) -> dict:
    if report.get("schema_version", 1) < 2 or report.get("_legacy"):
        return report
    view = dict(report, _legacy=True)
    view["reference"] = {k: v for k, v in report["reference"].items() if isinstance(v, str)}
    view["versions"] = {**report["versions"], "candidate": f"{report['candidate']['name']} "
                        f"{report['candidate']['version']}"}
    for part in ("embedding", "final_norm", "logits"):
        if view.get(part) is None:
            view[part] = dict(_NOT_PROVIDED, kl_mean=None, kl_max=None, top1_agreement=None, top5_overlap=None)
    view["layers"] = []
    for layer in report["layers"]:
        layer = dict(layer)
        for column in ("isolated", "accumulated"):
            layer[column] = {c: (layer.get(column) or {}).get(c, _NOT_PROVIDED) for c in COMPONENTS}
        layer["router"] = {c: (layer["router"].get(c) or _NO_ROUTER) for c in ("isolated", "accumulated")}
        view["layers"].append(layer)
    return view


# ---- formatting helpers -----------------------------------------------------------------------------------------


def num(x) -> str:
    """A measured value, compactly: 0, 1.2e-07, inf; '-' for None (e.g. NMSE dB of identical tensors)."""
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    x = float(x)
    if x == 0:
        return "0"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.1e}"


def _ratio(x) -> str:
    if isinstance(x, str) or x is None:
        return num(x)
    if x == 0:
        return "0"
    return f"{x:.1e}" if x < 0.01 or x >= 1e6 else f"{x:.4g}"


def _frac(x) -> str:
    return "-" if x is None else f"{float(x):.3f}"


def _db(x) -> str:
    if x is None:
        return "-inf"  # compare.Metrics.to_dict writes -inf (identical tensors) as null
    if isinstance(x, str):
        return x
    return f"{x:.1f}"


def _limit(x) -> str:
    return "off" if x is None else f"{x:g}"


def _over_one(ratio) -> bool:
    """tolerance_ratio > 1 (the string "inf" and NaN count as over)."""
    if isinstance(ratio, str):
        return True
    return not float(ratio) <= 1.0


def _short_type(attention_type: str) -> str:
    return attention_type[: -len("_attention")] if attention_type.endswith("_attention") else attention_type


def _bytes(n) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _where(metrics: dict) -> str:
    w = metrics.get("where") or {}
    return f"prompt {w.get('prompt')}, position {w.get('position')}, channel {w.get('channel')}"


# ---- facts read off the report (no judging) ----------------------------------------------------------------------


def _float32_gate(report) -> bool:
    return report.get("dtype") == "float32"


def row_failed(layer: dict) -> bool:
    """The float32 gate restated for one layer: an isolated component over tolerance, or a real routing mismatch."""
    over = any(_over_one(m["tolerance_ratio"]) for m in layer["isolated"].values())
    return over or layer["router"]["isolated"]["mismatched"] > 0


def _routing(router: dict) -> str:
    text = f"{router['same_set']}/{router['tokens']}"
    if router["near_tie"]:
        text += f" +{router['near_tie']} tie" + ("s" if router["near_tie"] > 1 else "")
    if router["mismatched"]:
        text += f" {router['mismatched']} off"
    return text


def _total_tokens(report) -> int:
    return sum(len(p["token_ids"]) for p in report["prompts"])


def _layer_cells(report) -> list[dict]:
    """One dict of display strings per layer, shared by the terminal, markdown and HTML tables."""
    rows = []
    for layer in report["layers"]:
        iso, acc = layer["isolated"], layer["accumulated"]
        failed = row_failed(layer)
        rows.append({
            "layer": str(layer["index"]),
            "type": _short_type(layer["attention_type"]),
            "attention": num(iso["attention"]["max_abs"]),
            "router": num(iso["router_logits"]["max_abs"]),
            "moe": num(iso["moe"]["max_abs"]),
            "output": num(iso["layer_output"]["max_abs"]),
            "ratio": _ratio(iso["layer_output"]["tolerance_ratio"]),
            "routing": _routing(layer["router"]["isolated"]),
            "accumulated": num(acc["layer_output"]["max_abs"]),
            "acc_routing": _routing(layer["router"]["accumulated"]),
            "failed": failed,
            "mark": ("FAIL" if failed else "PASS") if _float32_gate(report) else "-",
        })
    return rows


def worst_layer(report) -> dict | None:
    """The layer whose isolated layer_output is furthest off: largest tolerance ratio, then largest max |diff|."""
    def key(layer):
        m = layer["isolated"]["layer_output"]
        ratio = m["tolerance_ratio"]
        worst = m["max_abs"] if not isinstance(m["max_abs"], str) else (-1.0 if m["max_abs"] == "n/p" else math.inf)
        return (math.inf if isinstance(ratio, str) else float(ratio), float(worst))

    return max(report["layers"], key=key) if report["layers"] else None


def _first_failure_where(report) -> str | None:
    """Where the first failing component's max |diff| sits (prompt, position, channel), when it is a tensor."""
    first = report["verdict"]["first_failure"]
    if not first:
        return None
    if first["layer"] is None:
        metrics = report.get(first["component"]) if first["component"] in ("embedding", "final_norm") else None
        if first["component"] == "logits" and first["metric"].startswith("max |diff|"):
            metrics = report["logits"]
    else:
        layers = [layer for layer in report["layers"] if layer["index"] == first["layer"]]
        metrics = layers[0]["isolated"].get(first["component"]) if layers else None
    return _where(metrics) if metrics else None


def _gate_description(report, ascii_only=False) -> str:
    le, ge, times, bars = ("<=", ">=", "*", "||") if ascii_only else ("≤", "≥", "·", "‖")
    parts = []
    if _float32_gate(report):
        parts.append(f"every isolated component and the final logits within atol {report['atol']:g} + "
                     f"rtol {report['rtol']:g}{times}|ref|, expert choices equal except near-ties")
    if report["max_kl"] is not None:
        parts.append(f"KL(ref{bars}ours) mean {le} {report['max_kl']:g}")
    if report["min_top1"] is not None:
        parts.append(f"top-1 agreement {ge} {report['min_top1']:g}")
    return f"{report['dtype']} gate: " + "; ".join(parts or ["nothing gated"])


def verdict_line(report, ascii_only=True) -> str:
    """'PASSED (...)' with what held, or 'FAILED: <first failure message>'."""
    verdict, logits = report["verdict"], report["logits"]
    if verdict["passed"]:
        le, ge = ("<=", ">=") if ascii_only else ("≤", "≥")
        held = []
        if _float32_gate(report):
            held.append(f"{len(report['layers'])} layers and logits within atol {report['atol']:g}, "
                        f"rtol {report['rtol']:g}")
        if report["max_kl"] is not None:
            held.append(f"KL mean {num(logits['kl_mean'])} {le} {report['max_kl']:g}")
        if report["min_top1"] is not None:
            held.append(f"top-1 {_frac(logits['top1_agreement'])} {ge} {report['min_top1']:g}")
        return f"PASSED ({report['dtype']}: " + "; ".join(held or ["nothing gated"]) + ")"
    first = verdict["first_failure"]
    message = first["message"] if first else "the verdict failed without naming a component"
    more = len(verdict["failures"]) - 1
    return f"FAILED: {message}" + (f" (and {more} more failure{'s' if more > 1 else ''})" if more > 0 else "")


# ---- terminal ---------------------------------------------------------------------------------------------------


def _align(rows: list[list[str]], right: set) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def terminal_table(report: dict) -> str:
    """A compact per-layer table (plain ASCII, aligned, under 100 columns for normal values), the final logits line
    and the verdict line last."""
    report = _legacy(report)
    n_layers, tokens = len(report["layers"]), _total_tokens(report)
    head = (f"verify: {report['dtype']} on {report['device']}, atol {report['atol']:g} rtol {report['rtol']:g}, "
            f"{n_layers} layers, {len(report['prompts'])} prompts ({tokens} tokens)")
    header = ["layer", "type", "attention", "router", "moe", "output", "routing", "accum.out", "gate"]
    table = [header] + [
        [c["layer"], c["type"], c["attention"], c["router"], c["moe"], c["output"], c["routing"], c["accumulated"],
         c["mark"]]
        for c in _layer_cells(report)
    ]
    lines = _align(table, right={0})
    # A group caption over the isolated columns: they start after "layer  type  ".
    indent = lines[0].index("attention")
    lines.insert(0, " " * indent + "isolated (ours fed the reference's input): max |diff|, routing same/tokens")
    lines.insert(0, head)
    if not _float32_gate(report):
        lines.append(f"(per-layer numbers are informational: the {report['dtype']} gate is on the final logits)")
    emb, norm, logits = report["embedding"], report["final_norm"], report["logits"]
    lines.append(f"embedding max |diff| {num(emb['max_abs'])}   final norm max |diff| {num(norm['max_abs'])}")
    lines.append(f"logits: max |diff| {num(logits['max_abs'])}   KL mean {num(logits['kl_mean'])} "
                 f"max {num(logits['kl_max'])}   top-1 {_frac(logits['top1_agreement'])}   "
                 f"top-5 {_frac(logits['top5_overlap'])}")
    lines.append(verdict_line(report, ascii_only=True))
    return "\n".join(lines)


# ---- markdown ---------------------------------------------------------------------------------------------------


def _md(text) -> str:
    """Escape text for a markdown table cell or paragraph: pipes, and HTML's < > &."""
    return _html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _code(text) -> str:
    text = str(text).replace("|", "\\|").replace("\n", " ")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _checkpoint_summary(checkpoint: dict) -> str:
    files = checkpoint.get("files") or []
    size = sum(f["size"] for f in files)
    return (f"{checkpoint['layout']} layout, {checkpoint.get('experts', '?')} experts, "
            f"{len(files)} weight file{'s' if len(files) != 1 else ''} ({_bytes(size)})")


def _config_summary(config: dict) -> str:
    parts = []
    for key, label in (("num_hidden_layers", "layers"), ("hidden_size", "hidden"), ("num_local_experts", "experts"),
                       ("num_experts_per_tok", "per token"), ("vocab_size", "vocab"),
                       ("sliding_window", "sliding window")):
        if key in config:
            parts.append(f"{label} {config[key]}")
    return ", ".join(parts)


def _provenance(provenance) -> str | None:
    if not provenance:
        return None
    commit = str(provenance.get("commit", ""))[:12]
    return f"{provenance.get('repo_id')} @ {commit} (revision {provenance.get('revision')})"


def _prompt_lengths(report) -> str:
    lengths = [len(p["token_ids"]) for p in report["prompts"]]
    return f"{len(lengths)} prompt{'s' if len(lengths) != 1 else ''}: " + ", ".join(map(str, lengths)) + \
        f" tokens ({sum(lengths)} positions)"


def markdown(report: dict) -> str:
    """A summary for a GitHub Actions job summary ($GITHUB_STEP_SUMMARY) or a PR comment."""
    report = _legacy(report)
    verdict, logits, ckpt, versions = report["verdict"], report["logits"], report["checkpoint"], report["versions"]
    passed = verdict["passed"]
    out = [f"## {'✅' if passed else '❌'} gptoss-convert verify: {'PASSED' if passed else 'FAILED'}", ""]
    if passed:
        out.append(f"All gates hold ({_md(_gate_description(report))}).")
    else:
        first = verdict["first_failure"]
        where = _first_failure_where(report)
        message = first["message"] if first else "the verdict failed without naming a component"
        out.append(f"**First failure:** {_md(message)}" + (f" (at {where})" if where else "") + ". "
                   f"{len(verdict['failures'])} failure{'s' if len(verdict['failures']) != 1 else ''} in all.")
    out.append("")
    worst = worst_layer(report)
    if worst is not None:
        m = worst["isolated"]["layer_output"]
        worst_text = (f"layer {worst['index']} ({worst['attention_type']}): isolated layer output max \\|diff\\| "
                      f"{num(m['max_abs'])}, tolerance ratio {_ratio(m['tolerance_ratio'])}, at {_where(m)}")
    else:
        worst_text = "no layers"
    summary = [
        ["gate", _md(_gate_description(report))],
        ["thresholds", f"atol {report['atol']:g}, rtol {report['rtol']:g}, max KL {_limit(report['max_kl'])}, "
                       f"min top-1 {_limit(report['min_top1'])}"],
        ["dtype / device", f"{_md(report['dtype'])} / {_md(report['device'])}"],
        ["checkpoint", f"{_code(ckpt['path'])}: {_md(_checkpoint_summary(ckpt))}"],
        ["model", _md(_config_summary(ckpt.get("config") or {}))],
    ]
    if _provenance(ckpt.get("provenance")):
        summary.append(["downloaded from", _md(_provenance(ckpt["provenance"]))])
    summary += [
        ["versions", _md(", ".join(f"{k} {v}" for k, v in versions.items()))],
        ["reference", _md(", ".join(f"{k} {v}" for k, v in report["reference"].items()))],
        ["prompts", _md(_prompt_lengths(report))],
        ["worst layer", worst_text],
        ["time", f"{report['timing']['seconds']:g} s, peak RSS {_bytes(report['timing']['peak_rss_bytes'])}"],
    ]
    out += _md_table(["", ""], summary)
    out += ["", "### Layers", "",
            "Isolated: ours fed the reference's input, so a bug shows at its own layer. Accumulated: ours fed its "
            "own previous output (end-to-end drift). Numbers are max \\|diff\\|; routing is tokens with the same "
            "expert set / tokens (+ near-ties).", ""]
    gate_header = "float32 gate" if _float32_gate(report) else "gate (float32 only)"
    rows = []
    for c in _layer_cells(report):
        mark = ("❌" if c["failed"] else "✅") if _float32_gate(report) else "—"
        rows.append([c["layer"], c["type"], c["attention"], c["router"], c["moe"], c["output"], c["ratio"],
                     c["routing"], c["accumulated"], c["acc_routing"], mark])
    out += _md_table(["layer", "type", "attention", "router logits", "moe", "layer output", "tol. ratio", "routing",
                      "accum. output", "accum. routing", gate_header], rows)
    out += ["", "### Final logits and model-level tensors", ""]
    model_rows = []
    for name, label in (("embedding", "embedding"), ("final_norm", "final norm (isolated)"),
                        ("logits", "logits (accumulated)")):
        m = report[name]
        model_rows.append([label, num(m["max_abs"]), num(m["mean_abs"]), num(m["rel_l2"]), _db(m["nmse_db"]),
                           _ratio(m["tolerance_ratio"])])
    out += _md_table(["", "max \\|diff\\|", "mean \\|diff\\|", "rel L2", "NMSE dB", "tol. ratio"], model_rows)
    out += ["", f"Logits: KL(ref‖ours) mean {num(logits['kl_mean'])}, max {num(logits['kl_max'])} (nats); "
                f"top-1 agreement {_frac(logits['top1_agreement'])}; top-5 overlap {_frac(logits['top5_overlap'])}."]
    if verdict["failures"]:
        listed = verdict["failures"][:MAX_LISTED_FAILURES]
        out += ["", f"<details><summary>All {len(verdict['failures'])} failures</summary>", ""]
        out += [f"- {_md(f['message'])}" for f in listed]
        if len(verdict["failures"]) > len(listed):
            out.append(f"- … and {len(verdict['failures']) - len(listed)} more (see report.json)")
        out += ["", "</details>"]
    out += ["", "Full report: `report.html` (chart, files and checksums) and `report.json` in the report directory.",
            ""]
    return "\n".join(out)


# ---- HTML -------------------------------------------------------------------------------------------------------


def esc(text) -> str:
    return _html.escape(str(text), quote=True)


_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1f2328; }
main { max-width: 1100px; margin: 0 auto; padding: 0 20px 40px; }
.banner { padding: 18px 24px; color: #fff; }
.banner h1 { margin: 0 0 4px; font-size: 22px; }
.banner p { margin: 0; }
.banner.pass { background: #1a7f37; }
.banner.fail { background: #cf222e; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; }
td.l, th.l { text-align: left; }
tr.fail td { background: #ffebe9; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
dl.kv { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dl.kv dt { font-weight: 600; }
dl.kv dd { margin: 0; }
figure { margin: 8px 0; }
figcaption { color: #57606a; font-size: 12.5px; }
.muted { color: #57606a; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; }
"""

# series: label, column, component, colour, dash pattern, marker
_SERIES = (
    ("isolated layer output", "isolated", "layer_output", "#0969da", "", "circle"),
    ("accumulated layer output", "accumulated", "layer_output", "#bc4c00", "6 3", "square"),
    ("isolated attention", "isolated", "attention", "#1a7f37", "2 3", "triangle"),
    ("isolated moe", "isolated", "moe", "#8250df", "8 3 2 3", "diamond"),
)


def _marker(shape: str, x: float, y: float, colour: str, title: str) -> str:
    r = 3.5
    if shape == "circle":
        body = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{colour}">'
        end = "</circle>"
    elif shape == "square":
        body = f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r}" height="{2 * r}" fill="{colour}">'
        end = "</rect>"
    else:
        pts = ([(x, y - r - 1), (x + r + 1, y + r), (x - r - 1, y + r)] if shape == "triangle"
               else [(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)])
        body = f'<polygon points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}" fill="{colour}">'
        end = "</polygon>"
    return f"{body}<title>{esc(title)}</title>{end}"


def _chart_value(x) -> tuple[float, str]:
    """(value to plot, text for its tooltip): zeros and tiny values go to CHART_FLOOR, inf to the top."""
    if isinstance(x, str) or x is None or math.isinf(float(x)) or math.isnan(float(x)):
        return math.inf, num(x)
    x = float(x)
    return max(x, CHART_FLOOR), num(x)


def svg_chart(report: dict) -> str:
    """Per-layer max |diff| on a log scale, with a line at atol; an inline SVG (no scripts)."""
    report = _legacy(report)
    layers = report["layers"]
    n = max(len(layers), 1)
    atol = float(report["atol"])
    width, height = 860, 400
    left, right, top, bottom = 72, 86, 16, 72
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [_chart_value(layer[col][comp]["max_abs"])[0] for layer in layers for _, col, comp, *_ in _SERIES]
    finite = [v for v in values if math.isfinite(v)] + ([atol] if atol > 0 else [])
    hi = max(finite + [CHART_FLOOR * 10])
    lo = min(finite + [hi / 10])
    top_dec = math.ceil(math.log10(hi) + 1e-9)
    bot_dec = min(math.floor(math.log10(lo)), top_dec - 1)
    if top_dec - bot_dec < 2:
        bot_dec = top_dec - 2

    def y_of(v: float) -> float:
        if not math.isfinite(v):
            return top
        return top + (top_dec - math.log10(v)) / (top_dec - bot_dec) * plot_h

    def x_of(i: int) -> float:
        return left + (i + 0.5) * plot_w / n

    parts = [f'<svg role="img" aria-label="per-layer max |diff|, log scale" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="system-ui, sans-serif" font-size="11">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#d0d7de"/>']
    band = plot_w / n
    for i, layer in enumerate(layers):
        if _float32_gate(report) and row_failed(layer):
            parts.append(f'<rect x="{left + i * band:.1f}" y="{top}" width="{band:.1f}" height="{plot_h}" '
                         f'fill="#ffebe9"><title>layer {layer["index"]} fails the float32 gate</title></rect>')
    step = 1 if top_dec - bot_dec <= 14 else 2
    for dec in range(bot_dec, top_dec + 1):
        y = y_of(10.0 ** dec)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eaeef2"/>')
        if (dec - bot_dec) % step == 0:
            parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">1e{dec}</text>')
    label_every = max(1, math.ceil(n / 36))
    for i, layer in enumerate(layers):
        if i % label_every == 0:
            parts.append(f'<text x="{x_of(i):.1f}" y="{top + plot_h + 15}" text-anchor="middle">'
                         f'{layer["index"]}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 32}" text-anchor="middle">layer</text>')
    parts.append(f'<text transform="translate(16 {top + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 f'max |diff| (log scale)</text>')
    if atol > 0:
        y = y_of(atol)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#cf222e" '
                     f'stroke-width="1.5" stroke-dasharray="5 4"><title>atol {atol:g}</title></line>')
        parts.append(f'<text x="{left + plot_w + 6}" y="{y + 4:.1f}" fill="#cf222e">atol {atol:g}</text>')
    for label, col, comp, colour, dash, shape in reversed(_SERIES):  # the isolated layer output on top
        points = []
        for i, layer in enumerate(layers):
            value, text = _chart_value(layer[col][comp]["max_abs"])
            points.append((x_of(i), y_of(value), f"layer {layer['index']} {label}: max |diff| {text}"))
        if len(points) > 1:
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in points)
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"{dash_attr}/>')
        parts += [_marker(shape, x, y, colour, title) for x, y, title in points]
    for k, (label, _col, _comp, colour, dash, shape) in enumerate(_SERIES):
        legend_x, y = left + k * 190, height - 12
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<line x1="{legend_x}" y1="{y}" x2="{legend_x + 22}" y2="{y}" stroke="{colour}" '
                     f'stroke-width="1.5"{dash_attr}/>')
        parts.append(_marker(shape, legend_x + 11, y, colour, label))
        parts.append(f'<text x="{legend_x + 27}" y="{y + 4}">{esc(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _html_table(header: list[str], rows: list[list[str]], classes: list[str] | None = None,
                left_cols: tuple = ()) -> str:
    """header and row cells are already-escaped HTML."""
    def cls(i):
        return ' class="l"' if i in left_cols else ""

    out = ["<table>", "<thead><tr>" + "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(header)) + "</tr></thead>",
           "<tbody>"]
    for k, row in enumerate(rows):
        row_cls = f' class="{classes[k]}"' if classes and classes[k] else ""
        out.append(f"<tr{row_cls}>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row)) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def _dl(pairs: list[tuple[str, str]]) -> str:
    """pairs of (label, already-escaped HTML)."""
    return '<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def html(report: dict) -> str:
    """One self-contained HTML page: inline CSS and an inline SVG chart, no scripts, no external resources."""
    report = _legacy(report)
    verdict, logits, ckpt = report["verdict"], report["logits"], report["checkpoint"]
    passed = verdict["passed"]
    title = f"gptoss-convert verify: {'PASSED' if passed else 'FAILED'}"
    if passed:
        banner_text = esc(_gate_description(report)) + " — all hold."
    else:
        first = verdict["first_failure"]
        where = _first_failure_where(report)
        banner_text = "First failure: " + esc(first["message"] if first else "the verdict failed") + \
            (f" (at {esc(where)})" if where else "") + f". {len(verdict['failures'])} failure(s) in all."
    body = [f'<header class="banner {"pass" if passed else "fail"}"><h1>{"✅" if passed else "❌"} {esc(title)}</h1>'
            f"<p>{banner_text}</p></header>", "<main>"]

    worst = worst_layer(report)
    worst_text = "no layers"
    if worst is not None:
        m = worst["isolated"]["layer_output"]
        worst_text = (f"layer {worst['index']} ({worst['attention_type']}): isolated layer output max |diff| "
                      f"{num(m['max_abs'])}, tolerance ratio {_ratio(m['tolerance_ratio'])}, at {_where(m)}")
    body += ["<h2>Summary</h2>", _dl([
        ("gate", esc(_gate_description(report))),
        ("thresholds", esc(f"atol {report['atol']:g}, rtol {report['rtol']:g}, max KL {_limit(report['max_kl'])}, "
                           f"min top-1 {_limit(report['min_top1'])}")),
        ("dtype / device", esc(f"{report['dtype']} / {report['device']}")),
        ("checkpoint", f"<code>{esc(ckpt['path'])}</code> ({esc(_checkpoint_summary(ckpt))})"),
        ("prompts", esc(_prompt_lengths(report))),
        ("worst layer", esc(worst_text)),
        ("reference", esc(", ".join(f"{k} {v}" for k, v in report["reference"].items()))),
        ("time", esc(f"{report['timing']['seconds']:g} s, peak RSS {_bytes(report['timing']['peak_rss_bytes'])}")),
    ])]

    body += ["<h2>Per-layer error</h2>", "<figure>", svg_chart(report),
             f"<figcaption>max |diff| per layer on a log scale. Values below {CHART_FLOOR:g}, exact zeros included, "
             f"are drawn at {CHART_FLOOR:g} (the floor of the scale); infinite values at the top edge. The dashed red "
             f"line is atol = {float(report['atol']):g}"
             + (f" (the tolerance is atol + rtol·|ref| with rtol = {report['rtol']:g})" if report["rtol"] else "")
             + (". Shaded layers fail the float32 gate." if _float32_gate(report) else
                f"; the {esc(report['dtype'])} gate is on the final logits, so per-layer numbers are informational.")
             + " Hover a point for its value.</figcaption>", "</figure>"]

    rows, classes = [], []
    for c in _layer_cells(report):
        rows.append([esc(c[k]) for k in ("layer", "type", "attention", "router", "moe", "output", "ratio", "routing",
                                           "accumulated", "acc_routing", "mark")])
        classes.append("fail" if c["failed"] and _float32_gate(report) else "")
    body += ["<h2>Layers</h2>",
             '<p class="muted">Isolated: ours fed the reference\'s input (a bug shows at its own layer). Accumulated: '
             "ours fed its own previous output (end-to-end drift). Numbers are max |diff|; routing is tokens with the "
             "same expert set / tokens, + near-ties (a flip between experts whose reference logits are within a few "
             "ulps).</p>",
             _html_table(["layer", "type", "attention", "router logits", "moe", "layer output", "tol. ratio",
                          "routing", "accum. output", "accum. routing",
                          "float32 gate" if _float32_gate(report) else "gate"],
                         rows, classes, left_cols=(1, 7, 9))]

    model_rows = []
    for name, label in (("embedding", "embedding"), ("final_norm", "final norm (isolated)"),
                        ("logits", "logits (accumulated)")):
        m = report[name]
        model_rows.append([esc(label), esc(num(m["max_abs"])), esc(_where(m)), esc(num(m["mean_abs"])),
                           esc(num(m["rel_l2"])), esc(_db(m["nmse_db"])), esc(_ratio(m["tolerance_ratio"]))])
    body += ["<h2>Final logits</h2>",
             _html_table(["", "max |diff|", "at", "mean |diff|", "rel L2", "NMSE dB", "tol. ratio"], model_rows,
                         left_cols=(0, 2)),
             _html_table(["KL(ref‖ours) mean", "KL max", "top-1 agreement", "top-5 overlap"],
                         [[esc(num(logits["kl_mean"])), esc(num(logits["kl_max"])),
                           esc(_frac(logits["top1_agreement"])), esc(_frac(logits["top5_overlap"]))]])]

    if verdict["failures"]:
        listed = verdict["failures"][:MAX_LISTED_FAILURES]
        items = "".join(f"<li>{esc(f['message'])}</li>" for f in listed)
        if len(verdict["failures"]) > len(listed):
            items += f"<li>… and {len(verdict['failures']) - len(listed)} more (see report.json)</li>"
        body += [f"<h2>Failures ({len(verdict['failures'])})</h2>", f"<ol>{items}</ol>"]

    files = ckpt.get("files") or []
    pairs = [("path", f"<code>{esc(ckpt['path'])}</code>"), ("layout", esc(ckpt["layout"])),
             ("experts", esc(ckpt.get("experts", "?"))), ("model", esc(_config_summary(ckpt.get("config") or {})))]
    if _provenance(ckpt.get("provenance")):
        pairs.append(("downloaded from", esc(_provenance(ckpt["provenance"]))))
    body += ["<h2>Checkpoint</h2>", _dl(pairs),
             _html_table(["file", "size", "sha256"],
                         [[f"<code>{esc(f['path'])}</code>", esc(f"{f['size']:,}"), f"<code>{esc(f['sha256'])}</code>"]
                          for f in files], left_cols=(0, 2)),
             "<details><summary>config</summary><pre>"
             + esc(json.dumps(ckpt.get("config"), indent=2, sort_keys=True)) + "</pre></details>"]
    if ckpt.get("provenance"):
        body.append("<details><summary>download manifest</summary><pre>"
                    + esc(json.dumps(ckpt["provenance"], indent=2, sort_keys=True)) + "</pre></details>")

    prompt_rows = []
    for i, p in enumerate(report["prompts"]):
        ids = p["token_ids"]
        shown = " ".join(map(str, ids[:24])) + (" …" if len(ids) > 24 else "")
        prompt_rows.append([esc(i), esc(len(ids)), esc(p["text"] if p["text"] is not None else "(token ids)"),
                            f'<span class="mono">{esc(shown)}</span>'])
    body += ["<h2>Prompts</h2>", _html_table(["prompt", "tokens", "text", "token ids"], prompt_rows,
                                             left_cols=(2, 3))]

    body += ["<h2>Versions</h2>", _dl([(k, esc(v)) for k, v in report["versions"].items()]), "</main>"]
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>",
        "<body>", *body, "</body>", "</html>", "",
    ])


# ---- JUnit ------------------------------------------------------------------------------------------------------


def _metrics_text(m: dict) -> str:
    return (f"max |diff| {num(m['max_abs'])} at {_where(m)}; mean |diff| {num(m['mean_abs'])}; "
            f"rel L2 {num(m['rel_l2'])}; NMSE dB {_db(m['nmse_db'])}; tolerance ratio {_ratio(m['tolerance_ratio'])}")


def _router_text(r: dict) -> str:
    return (f"{r['same_set']}/{r['tokens']} tokens with the same expert set, {r['near_tie']} near-ties, "
            f"{r['mismatched']} mismatched (near-tie eps {num(r['eps'])})")


def junit(report: dict) -> str:
    """JUnit XML: one test case per layer and component, plus embedding, final_norm and logits. A case fails exactly
    when the verdict lists a failure for its (layer, component)."""
    report = _legacy(report)
    by_case: dict = {}
    for failure in report["verdict"]["failures"]:
        by_case.setdefault((failure["layer"], failure["component"]), []).append(failure)
    width = max(2, len(str(max((layer["index"] for layer in report["layers"]), default=0))))
    cases = []  # (classname, name, text, failures)
    for layer in report["layers"]:
        classname = f"verify.layer_{layer['index']:0{width}d}_{_short_type(layer['attention_type'])}"
        for component in COMPONENTS:
            if component == "expert_indices":
                text = _router_text(layer["router"]["isolated"])
            else:
                text = _metrics_text(layer["isolated"][component])
            cases.append((classname, component, text, by_case.pop((layer["index"], component), [])))
    for name in ("embedding", "final_norm", "logits"):
        text = _metrics_text(report[name])
        if name == "logits":
            logits = report["logits"]
            text += (f"; KL mean {num(logits['kl_mean'])}, max {num(logits['kl_max'])}; top-1 "
                     f"{_frac(logits['top1_agreement'])}; top-5 {_frac(logits['top5_overlap'])}")
        cases.append(("verify.model", name, text, by_case.pop((None, name), [])))
    for (layer, component), failures in by_case.items():  # failures of no known case are never dropped
        cases.append(("verify.model" if layer is None else f"verify.layer_{layer:0{width}d}", component, "", failures))

    seconds = f"{float(report['timing']['seconds']):.3f}"
    n_failed = sum(1 for case in cases if case[3])
    root = ET.Element("testsuites", name="gptoss-convert verify", tests=str(len(cases)), failures=str(n_failed),
                      errors="0", time=seconds)
    suite = ET.SubElement(root, "testsuite", name=f"gptoss-convert verify ({report['dtype']}, {report['device']})",
                          tests=str(len(cases)), failures=str(n_failed), errors="0", skipped="0", time=seconds)
    props = ET.SubElement(suite, "properties")
    for key, value in (("checkpoint", report["checkpoint"]["path"]), ("layout", report["checkpoint"]["layout"]),
                       ("dtype", report["dtype"]), ("device", report["device"]), ("atol", report["atol"]),
                       ("rtol", report["rtol"]), ("max_kl", report["max_kl"]), ("min_top1", report["min_top1"]),
                       *((f"version.{k}", v) for k, v in report["versions"].items())):
        ET.SubElement(props, "property", name=key, value="" if value is None else str(value))
    for classname, name, text, failures in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name)
        if failures:
            failure = ET.SubElement(case, "failure", message=failures[0]["message"], type=failures[0]["metric"])
            failure.text = "\n".join(f["message"] for f in failures) + ("\n" + text if text else "")
        if text:
            ET.SubElement(case, "system-out").text = text
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ---- writing ----------------------------------------------------------------------------------------------------


def _temp_write(target: Path, text: str) -> Path:
    """Write text to a fresh temporary file beside `target` (same filesystem, so os.replace is atomic)."""
    temp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def write_reports(report: dict, directory, junit_path=None) -> list[Path]:
    """Write report.json, report.md and report.html into `directory` (created if needed), and JUnit XML to
    `junit_path` if given. Returns [report.json, report.md, report.html(, junit)].

    Everything is rendered first, then written to temporary files beside their targets, then renamed into place
    (report.json last). An exception or Ctrl-C at any point removes the temporary files and leaves any previous
    report file untouched: a report file on disk is always complete. OSErrors become InputError naming the path."""
    directory = Path(directory)
    json_path, md_path, html_path = directory / "report.json", directory / "report.md", directory / "report.html"
    rendered = [(md_path, markdown(report)), (html_path, html(report))]
    if junit_path is not None:
        junit_path = Path(junit_path)
        rendered.append((junit_path, junit(report)))
    rendered.append((json_path, json.dumps(report, indent=2) + "\n"))

    if directory.exists() and not directory.is_dir():
        raise InputError(f"--report {directory}: exists and is not a directory; expected a directory for the reports")
    created = []
    temps: list[tuple[Path, Path]] = []
    current = None
    try:
        for path, _ in rendered:
            current = path.parent
            missing = [p for p in [current, *current.parents] if not p.exists()]
            current.mkdir(parents=True, exist_ok=True)
            created += [p for p in missing if p not in created]
        for path, text in rendered:
            current = path
            temps.append((_temp_write(path, text), path))
        for temp, path in temps:
            current = path
            os.replace(temp, path)
    except BaseException as error:
        for temp, _ in temps:
            temp.unlink(missing_ok=True)
        for folder in sorted(created, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only if still empty
            except OSError:
                pass
        if isinstance(error, OSError):
            reason = error.strerror or str(error)
            raise InputError(f"cannot write the report to {current}: {reason}") from error
        raise
    written = [json_path, md_path, html_path]
    return written + ([junit_path] if junit_path is not None else [])
