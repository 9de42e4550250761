"""The view model: verify's report dict (its verdict included) -> display-ready strings, for every renderer.

Nothing here measures or judges: numbers come from compare.py, pass/fail from the gate's verdict stored in the
report (`failed_layers` reads it, it never re-decides).
"""

import json
import math

from gptoss_model.io import format_bytes

CHART_FLOOR = 1e-12  # max |diff| below this (exact zeros included) is drawn at this value on the log-scale chart
MAX_LISTED_FAILURES = 50


# ---- numbers ----------------------------------------------------------------------------------------------------


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


def ratio(x) -> str:
    if isinstance(x, str) or x is None:
        return num(x)
    if x == 0:
        return "0"
    return f"{x:.1e}" if x < 0.01 or x >= 1e6 else f"{x:.4g}"


def fraction(x) -> str:
    return "-" if x is None else f"{float(x):.3f}"


def decibels(x) -> str:
    if x is None:
        return "-inf"  # compare.Metrics.to_dict writes -inf (identical tensors) as null
    if isinstance(x, str):
        return x
    return f"{x:.1f}"


def limit(x) -> str:
    return "off" if x is None else f"{x:g}"


def where(metrics: dict) -> str:
    location = metrics.get("where") or {}
    return f"prompt {location.get('prompt')}, position {location.get('position')}, channel {location.get('channel')}"


def short_type(attention_type: str) -> str:
    return attention_type[: -len("_attention")] if attention_type.endswith("_attention") else attention_type


# ---- facts read off the report and its verdict ------------------------------------------------------------------


def float32_gate(report) -> bool:
    """Whether the gate judged every layer (float32) or only the final logits (bfloat16)."""
    return report.get("dtype") == "float32"


def failed_layers(report) -> set:
    """The layer indices the gate's verdict names in a failure."""
    return {f["layer"] for f in report["verdict"]["failures"] if f["layer"] is not None}


NOT_PROVIDED = "n/p"  # a component the candidate does not expose: reported, never passed


def routing(router: dict | None) -> str:
    if router is None:
        return NOT_PROVIDED
    text = f"{router['same_set']}/{router['tokens']}"
    if router["near_tie"]:
        text += f" +{router['near_tie']} tie" + ("s" if router["near_tie"] > 1 else "")
    if router["mismatched"]:
        text += f" {router['mismatched']} off"
    return text


def cell(column: dict, component: str, key: str = "max_abs") -> str:
    """One number of one component of a layer's column, or n/p when the candidate did not provide it."""
    metrics = (column or {}).get(component)
    if metrics is None:
        return NOT_PROVIDED
    return ratio(metrics[key]) if key == "tolerance_ratio" else num(metrics[key])


def position(where_from: dict | None, window: int | None) -> str:
    """A first failing position: '16 (W)' when it is the sliding window (the window-bug signature), '-' if none."""
    if not where_from:
        return "-"
    text = str(where_from["position"])
    return text + " (W)" if window is not None and where_from["position"] == window else text


def first_failing(report, layer: dict) -> str:
    """The verdict's first failure in this layer: 'attention @ 16 (W)', or '-'."""
    mine = [f for f in report["verdict"]["failures"] if f["layer"] == layer["index"]]
    if not mine:
        return "-"
    first = mine[0]
    column = "" if first.get("column", "isolated") == "isolated" else f" ({first['column']})"
    return f"{first['component']}{column} @ {position(first.get('first_position'), report.get('sliding_window'))}"


def layer_rows(report) -> list[dict]:
    """One dict of display strings per layer, shared by the terminal, markdown and HTML tables."""
    failed, gated = failed_layers(report), float32_gate(report)
    rows = []
    for layer in report["layers"]:
        isolated, accumulated, cached = layer["isolated"], layer["accumulated"], layer.get("cached") or {}
        row_failed = gated and layer["index"] in failed
        rows.append({
            "layer": str(layer["index"]),
            "type": short_type(layer["attention_type"]),
            "attention": cell(isolated, "attention"),
            "router": cell(isolated, "router_logits"),
            "weights": cell(isolated, "expert_weights"),
            "moe": cell(isolated, "moe"),
            "output": cell(isolated, "layer_output"),
            "ratio": cell(isolated, "layer_output", "tolerance_ratio"),
            "routing": routing(layer["router"].get("isolated")),
            "accumulated": cell(accumulated, "layer_output"),
            "acc_routing": routing(layer["router"].get("accumulated")),
            "cached": cell(cached, "layer_output") if cached else "no cache",
            "first": first_failing(report, layer),
            "not_provided": ", ".join(layer.get("not_provided") or []) or "-",
            "failed": row_failed,
            "mark": ("FAIL" if row_failed else "PASS") if gated else "-",
        })
    return rows


def position_rows(report) -> list[dict]:
    """Per layer and component: the first position over the tolerance in each column ('-' none, 'n/p')."""
    from gptoss_convert.gate import COMPONENTS

    window, rows = report.get("sliding_window"), []
    for layer in report["layers"]:
        for component in COMPONENTS:
            columns = {}
            for column in ("isolated", "accumulated", "cached"):
                values = layer.get(column) or {}
                if component == "expert_indices":
                    router = layer["router"].get(column)
                    columns[column] = position(router["first_mismatch"], window) if router else NOT_PROVIDED
                else:
                    metrics = values.get(component)
                    columns[column] = position(metrics.get("first_over"), window) if metrics else NOT_PROVIDED
            if any(v not in ("-", NOT_PROVIDED) for v in columns.values()):
                rows.append({"layer": str(layer["index"]), "type": short_type(layer["attention_type"]),
                             "component": component, **columns})
    return rows


def _judged_output(layer: dict) -> tuple[str, dict | None]:
    """(column, layer_output metrics) of the column the gate judged: isolated, or accumulated for a whole-model
    candidate."""
    for column in ("isolated", "accumulated"):
        if (layer.get(column) or {}).get("layer_output"):
            return column, layer[column]["layer_output"]
    return "isolated", None


def as_float(x) -> float:
    return math.inf if isinstance(x, str) else float(x)


def worst_layer(report) -> dict | None:
    """The layer whose judged layer_output is furthest off: largest tolerance ratio, then largest max |diff|."""
    measured = [layer for layer in report["layers"] if _judged_output(layer)[1]]

    def key(layer):
        metrics = _judged_output(layer)[1]
        return (as_float(metrics["tolerance_ratio"]), as_float(metrics["max_abs"]))

    return max(measured, key=key) if measured else None


def worst_layer_text(report) -> str:
    worst = worst_layer(report)
    if worst is None:
        return "no layer output provided"
    column, metrics = _judged_output(worst)
    return (f"layer {worst['index']} ({worst['attention_type']}): {column} layer output max |diff| "
            f"{num(metrics['max_abs'])}, tolerance ratio {ratio(metrics['tolerance_ratio'])}, at {where(metrics)}")


def first_failure_where(report) -> str | None:
    """Where the first failing component's max |diff| sits (prompt, position, channel), when it is a tensor."""
    first = report["verdict"]["first_failure"]
    if not first:
        return None
    if first["layer"] is None:
        metrics = report.get(first["component"]) if first["component"] in ("embedding", "final_norm", "head") else None
        if first["component"] == "logits" and first["metric"].startswith("max |diff|"):
            metrics = report["logits"]
    else:
        layers = [layer for layer in report["layers"] if layer["index"] == first["layer"]]
        column = first.get("column", "isolated")
        metrics = (layers[0].get(column) or {}).get(first["component"]) if layers else None
    return where(metrics) if metrics else None


def gate_description(report, ascii_only=False) -> str:
    le, ge, times, bars = ("<=", ">=", "*", "||") if ascii_only else ("≤", "≥", "·", "‖")
    parts = []
    if float32_gate(report):
        parts.append(f"every provided component (isolated and cached columns) and the final logits within atol "
                     f"{report['atol']:g} + rtol {report['rtol']:g}{times}|ref|, expert choices equal except "
                     "near-ties")
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
        if float32_gate(report):
            held.append(f"{len(report['layers'])} layers and logits within atol {report['atol']:g}, "
                        f"rtol {report['rtol']:g}")
        if report["max_kl"] is not None and logits:
            held.append(f"KL mean {num(logits['kl_mean'])} {le} {report['max_kl']:g}")
        if report["min_top1"] is not None and logits:
            held.append(f"top-1 {fraction(logits['top1_agreement'])} {ge} {report['min_top1']:g}")
        return f"PASSED ({report['dtype']}: " + "; ".join(held or ["nothing gated"]) + ")"
    first = verdict["first_failure"]
    message = first["message"] if first else "the verdict failed without naming a component"
    more = len(verdict["failures"]) - 1
    return f"FAILED: {message}" + (f" (and {more} more failure{'s' if more > 1 else ''})" if more > 0 else "")


# ---- summaries --------------------------------------------------------------------------------------------------


def checkpoint_summary(checkpoint: dict) -> str:
    files = checkpoint.get("files") or []
    size = sum(f["size"] for f in files)
    return (f"{checkpoint['layout']} layout, {checkpoint.get('experts', '?')} experts, "
            f"{len(files)} weight file{'s' if len(files) != 1 else ''} ({format_bytes(size)})")


def config_summary(config: dict) -> str:
    parts = []
    for key, label in (("num_hidden_layers", "layers"), ("hidden_size", "hidden"), ("num_local_experts", "experts"),
                       ("num_experts_per_tok", "per token"), ("vocab_size", "vocab"),
                       ("sliding_window", "sliding window")):
        if key in config:
            parts.append(f"{label} {config[key]}")
    return ", ".join(parts)


def provenance_summary(provenance) -> str | None:
    if not provenance:
        return None
    commit = str(provenance.get("commit", ""))[:12]
    return f"{provenance.get('repo_id')} @ {commit} (revision {provenance.get('revision')})"


def prompt_lengths(report) -> str:
    lengths = [len(p["token_ids"]) for p in report["prompts"]]
    return (f"{len(lengths)} prompt{'s' if len(lengths) != 1 else ''}: " + ", ".join(map(str, lengths))
            + f" tokens ({sum(lengths)} positions)")


# ---- the view model ---------------------------------------------------------------------------------------------

MODEL_TENSORS = (("embedding", "embedding"), ("final_norm", "final norm (isolated)"), ("head", "LM head (isolated)"),
                 ("logits", "logits (accumulated)"))


def implementation(described: dict) -> str:
    """'gptoss_model 0.1.0 (/path/model.py)', plus settings such as Transformers' attention path."""
    settings = ", ".join(f"{k} {v}" for k, v in (described.get("settings") or {}).items())
    return (f"{described['name']} {described['version']} ({described['source']})"
            + (f"; {settings}" if settings else ""))


def view_model(report: dict) -> dict:
    """Everything the Markdown and HTML templates show, as display-ready strings (unescaped: escaping is the
    template engine's job)."""
    from gptoss_convert.report.deltas import baseline_view

    verdict, logits, checkpoint = report["verdict"], report["logits"], report["checkpoint"]
    first = verdict["first_failure"]
    listed = verdict["failures"][:MAX_LISTED_FAILURES]
    timing = report["timing"]
    return {
        "passed": verdict["passed"],
        "title": f"gptoss-convert verify: {'PASSED' if verdict['passed'] else 'FAILED'}",
        "gate": gate_description(report),
        "first_failure": first["message"] if first else "the verdict failed without naming a component",
        "first_failure_where": first_failure_where(report),
        "failure_count": len(verdict["failures"]),
        "failures": [f["message"] for f in listed],
        "failures_not_listed": len(verdict["failures"]) - len(listed),
        "thresholds": (f"atol {report['atol']:g}, rtol {report['rtol']:g}, max KL {limit(report['max_kl'])}, "
                       f"min top-1 {limit(report['min_top1'])}"),
        "atol": f"{float(report['atol']):g}",
        "rtol": f"{report['rtol']:g}" if report["rtol"] else None,
        "chart_floor": f"{CHART_FLOOR:g}",
        "dtype": report["dtype"],
        "device": report["device"],
        "float32_gate": float32_gate(report),
        "checkpoint": _checkpoint_view(checkpoint),
        "versions": report["versions"],
        "versions_line": ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
        "candidate": implementation(report["candidate"]),
        "reference": implementation(report["reference"]),
        "pair": f"{report['candidate']['name']} against {report['reference']['name']}",
        "logits_path": report.get("logits_path") or "",
        "window": report.get("sliding_window"),
        "position_rows": position_rows(report),
        "baseline": baseline_view(report),  # report/deltas.py
        "prompts": prompt_lengths(report),
        "prompt_rows": [_prompt_view(i, p) for i, p in enumerate(report["prompts"])],
        "worst_layer": worst_layer_text(report),
        "time": f"{timing['seconds']:g} s, peak RSS {format_bytes(timing['peak_rss_bytes'])}",
        "layers": layer_rows(report),
        "model_rows": [_tensor_view(label, report.get(name)) for name, label in MODEL_TENSORS],
        "logits": {"kl_mean": num(logits["kl_mean"]), "kl_max": num(logits["kl_max"]),
                   "top1": fraction(logits["top1_agreement"]), "top5": fraction(logits["top5_overlap"])}
        if logits else None,
    }


def _checkpoint_view(checkpoint: dict) -> dict:
    provenance = checkpoint.get("provenance")
    return {
        "path": checkpoint["path"],
        "layout": checkpoint["layout"],
        "experts": checkpoint.get("experts", "?"),
        "summary": checkpoint_summary(checkpoint),
        "model": config_summary(checkpoint.get("config") or {}),
        "downloaded_from": provenance_summary(provenance),
        "files": [{"path": f["path"], "size": f"{f['size']:,}", "sha256": f["sha256"]}
                  for f in checkpoint.get("files") or []],
        "config_json": json.dumps(checkpoint.get("config"), indent=2, sort_keys=True),
        "manifest_json": json.dumps(provenance, indent=2, sort_keys=True) if provenance else None,
    }


def _prompt_view(index: int, prompt: dict) -> dict:
    ids = prompt["token_ids"]
    return {"index": index, "tokens": len(ids), "text": prompt["text"] if prompt["text"] is not None else "(token ids)",
            "ids": " ".join(map(str, ids[:24])) + (" …" if len(ids) > 24 else "")}


def _tensor_view(label: str, metrics: dict | None) -> dict:
    if metrics is None:
        return {"label": label, **{k: NOT_PROVIDED for k in ("max_abs", "where", "mean_abs", "rel_l2", "nmse_db",
                                                             "ratio")}}
    return {"label": label, "max_abs": num(metrics["max_abs"]), "where": where(metrics),
            "mean_abs": num(metrics["mean_abs"]), "rel_l2": num(metrics["rel_l2"]),
            "nmse_db": decibels(metrics["nmse_db"]), "ratio": ratio(metrics["tolerance_ratio"])}
