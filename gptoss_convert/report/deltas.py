"""verify --baseline in the reports: the per-layer deltas of report["baseline"] (gptoss_convert/baseline.py) as
display strings. A regression between two commits of a candidate reads as this table."""

from gptoss_convert.report.view import as_float, implementation, num, ratio


def baseline_rows(report) -> list[dict]:
    """verify --baseline: per layer, the judged layer output then and now, and the component whose max |diff| grew
    the most (a regression between two commits reads as this table)."""
    baseline = report.get("baseline")
    if not baseline:
        return []
    by_layer: dict = {}
    for row in baseline["rows"]:
        by_layer.setdefault(row["layer"], []).append(row)
    rows = []
    for layer, entries in by_layer.items():
        output = next((r for r in entries if r["component"] in ("layer_output", "logits") and r["column"] in
                       ("isolated", "model")), entries[0])
        grown = max(entries, key=lambda r: _growth(r))
        rows.append({"layer": "model" if layer is None else str(layer), "component": output["component"],
                     "baseline": num(output["baseline"]), "now": num(output["now"]), "ratio": ratio(output["ratio"]),
                     "most_grown": f"{grown['column']} {grown['component']}: {num(grown['baseline'])} -> "
                                   f"{num(grown['now'])}" if _growth(grown) > 0 else "-"})
    return rows


def _growth(row) -> float:
    now, then = row["now"], row["baseline"]
    if now is None or then is None:
        return 0.0
    return as_float(now) - as_float(then)


def baseline_view(report) -> dict | None:
    baseline = report.get("baseline")
    if not baseline:
        return None
    candidate = baseline.get("candidate") or {}
    was = "passed" if baseline.get("passed") else f"failed ({baseline.get('first_failure')})"
    return {"path": baseline.get("path") or "?", "candidate": implementation(candidate) if candidate.get("name")
            else "?", "was": was, "rows": baseline_rows(report)}
