"""The terminal table `verify` prints: plain ASCII, aligned, under 100 columns for normal values."""

from gptoss_convert.report.deltas import baseline_view
from gptoss_convert.report.view import (NOT_PROVIDED, float32_gate, fraction, implementation, layer_rows, num,
                                        position_rows, verdict_line)

MAX_POSITION_LINES = 12

COLUMNS = ("layer", "type", "attention", "router", "moe", "output", "routing", "accumulated", "cached", "first", "mark")
HEADER = ("layer", "type", "attention", "router", "moe", "output", "routing", "accum.out", "cached.out",
          "first failure", "gate")


def _align(rows: list, right: set) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def terminal_table(report: dict) -> str:
    """A compact per-layer table, the model-level lines, and the verdict line last."""
    tokens = sum(len(p["token_ids"]) for p in report["prompts"])
    head = (f"verify {report['candidate']['name']} against {report['reference']['name']}: {report['dtype']} on "
            f"{report['device']}, atol {report['atol']:g} rtol {report['rtol']:g}, {len(report['prompts'])} "
            f"prompts ({tokens} tokens)")
    table = [list(HEADER)] + [[row[key] for key in COLUMNS] for row in layer_rows(report)]
    lines = _align(table, right={0})
    indent = lines[0].index("attention")  # a caption over the isolated columns, which start after "layer  type  "
    lines.insert(0, " " * indent + "isolated: max |diff|, routing same/tokens (n/p: not provided)")
    lines[0:0] = [head, *(f"  {role}: {implementation(report[role])}" for role in ("candidate", "reference"))]
    if not float32_gate(report):
        lines.append(f"(per-layer numbers are informational: the {report['dtype']} gate is on the final logits)")
    parts = {name: num(report[name]["max_abs"]) if report.get(name) else NOT_PROVIDED
             for name in ("embedding", "final_norm", "head")}
    lines.append(f"embedding max |diff| {parts['embedding']}   final norm {parts['final_norm']}   "
                 f"LM head {parts['head']}")
    logits = report["logits"]
    if logits:
        lines.append(f"logits: max |diff| {num(logits['max_abs'])}   KL mean {num(logits['kl_mean'])} max "
                     f"{num(logits['kl_max'])}   top-1 {fraction(logits['top1_agreement'])}   top-5 "
                     f"{fraction(logits['top5_overlap'])}")
        if "reference" in (report.get("logits_path") or ""):
            lines.append(f"  (made with the {report['logits_path']}: the candidate has no own)")
    else:
        lines.append("logits: not provided")
    lines += _position_lines(report)
    lines += _baseline_lines(report)
    lines.append(verdict_line(report, ascii_only=True))
    return "\n".join(lines)


def _baseline_lines(report: dict) -> list[str]:
    baseline = baseline_view(report)
    if baseline is None:
        return []
    lines = [f"baseline {baseline['path']} ({baseline['candidate']}, {baseline['was']}): max |diff| then -> now"]
    for row in baseline["rows"]:
        grown = f"   grew most: {row['most_grown']}" if row["most_grown"] != "-" else ""
        lines.append(f"  {row['layer']:>5} {row['component']}: {row['baseline']} -> {row['now']}{grown}")
    return lines


def _position_lines(report: dict) -> list[str]:
    """Where each component over the tolerance in a gated column (isolated, cached) starts, per column (W: the
    sliding window); accumulated-only drift is in report.md."""
    rows = [row for row in position_rows(report)
            if any(row[column] not in ("-", NOT_PROVIDED) for column in ("isolated", "cached"))]
    if not rows:
        return []
    lines = ["first positions over the tolerance (isolated / accumulated / cached):"]
    for row in rows[:MAX_POSITION_LINES]:
        lines.append(f"  layer {row['layer']:>3} {row['type']:<7} {row['component']:<14} {row['isolated']} / "
                     f"{row['accumulated']} / {row['cached']}")
    if len(rows) > MAX_POSITION_LINES:
        lines.append(f"  ... and {len(rows) - MAX_POSITION_LINES} more (report.md)")
    return lines
