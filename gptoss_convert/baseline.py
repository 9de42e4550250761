"""Regressions between two runs: the per-layer deltas of a report against an earlier report.json (`verify
--baseline OLD/report.json`, and `compare`). Facts only, no verdict: for each layer, column and component the
max |diff| then and now, so a regression between two commits of a candidate reads as a table."""

import json
import math
from pathlib import Path

from gptoss_convert.errors import InputError

COLUMNS = ("isolated", "accumulated", "cached")
MODEL_PARTS = ("embedding", "final_norm", "head", "logits")


def load_baseline(path) -> dict:
    """An earlier report.json (any schema version with a "layers" list). InputError (exit 2) names the file."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"--baseline {path}: cannot read a verify report.json ({error})") from None
    if not isinstance(report, dict) or not isinstance(report.get("layers"), list):
        raise InputError(f"--baseline {path}: not a verify report.json (no \"layers\" list)")
    report.setdefault("_path", str(path))
    return report


def baseline_deltas(report: dict, baseline: dict) -> dict:
    """report, baseline: report dicts -> {"path", "candidate", "passed", "rows": [...], "first_failure"} where each
    row is {"layer" (int | None for model parts), "column", "component", "baseline", "now", "delta", "ratio"}, values
    being max |diff| (None where either side has no such measurement)."""
    old_layers = {layer["index"]: layer for layer in baseline.get("layers", [])}
    rows = []
    for layer in report.get("layers", []):
        old = old_layers.get(layer["index"], {})
        for column in COLUMNS:
            now_column, old_column = layer.get(column) or {}, old.get(column) or {}
            for component in now_column.keys() | old_column.keys():
                rows.append(_row(layer["index"], column, component, now_column.get(component),
                                 old_column.get(component)))
    for part in MODEL_PARTS:
        if report.get(part) is not None or baseline.get(part) is not None:
            rows.append(_row(None, "model", part, report.get(part), baseline.get(part)))
    first = (baseline.get("verdict") or {}).get("first_failure")
    return {
        "path": baseline.get("_path"),
        "candidate": baseline.get("candidate"),
        "passed": baseline.get("passed"),
        "first_failure": first.get("message") if first else None,
        "rows": sorted(rows, key=_order),
    }


def _row(layer, column, component, now: dict | None, old: dict | None) -> dict:
    now_value, old_value = _max_abs(now), _max_abs(old)
    both = now_value is not None and old_value is not None and math.isfinite(now_value) and math.isfinite(old_value)
    return {
        "layer": layer, "column": column, "component": component, "baseline": _json(old_value), "now": _json(now_value),
        "delta": now_value - old_value if both else None,
        "ratio": (now_value / old_value if old_value else (None if now_value else 1.0)) if both else None,
    }


def _json(value):
    return "inf" if value is not None and math.isinf(value) else value


def _max_abs(metrics: dict | None):
    value = metrics.get("max_abs") if isinstance(metrics, dict) else None
    if isinstance(value, str):  # "inf" as written by Metrics.to_dict
        return float(value)
    return value


def _order(row):
    from gptoss_convert.gate import COMPONENTS

    rank = COMPONENTS.index(row["component"]) if row["component"] in COMPONENTS else len(COMPONENTS)
    layer = row["layer"] if row["layer"] is not None else 1 << 30
    column = COLUMNS.index(row["column"]) if row["column"] in COLUMNS else len(COLUMNS)
    return (layer, column, rank, row["component"])
