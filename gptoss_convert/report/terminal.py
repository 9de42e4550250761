"""The terminal table `verify` prints: plain ASCII, aligned, under 100 columns for normal values."""

from gptoss_convert.report.view import float32_gate, fraction, layer_rows, num, verdict_line

COLUMNS = ("layer", "type", "attention", "router", "moe", "output", "routing", "accumulated", "mark")
HEADER = ("layer", "type", "attention", "router", "moe", "output", "routing", "accum.out", "gate")


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
    head = (f"verify: {report['dtype']} on {report['device']}, atol {report['atol']:g} rtol {report['rtol']:g}, "
            f"{len(report['layers'])} layers, {len(report['prompts'])} prompts ({tokens} tokens)")
    table = [list(HEADER)] + [[row[key] for key in COLUMNS] for row in layer_rows(report)]
    lines = _align(table, right={0})
    indent = lines[0].index("attention")  # a caption over the isolated columns, which start after "layer  type  "
    lines.insert(0, " " * indent + "isolated (ours fed the reference's input): max |diff|, routing same/tokens")
    lines.insert(0, head)
    if not float32_gate(report):
        lines.append(f"(per-layer numbers are informational: the {report['dtype']} gate is on the final logits)")
    embedding, norm, logits = report["embedding"], report["final_norm"], report["logits"]
    lines.append(f"embedding max |diff| {num(embedding['max_abs'])}   final norm max |diff| {num(norm['max_abs'])}")
    lines.append(f"logits: max |diff| {num(logits['max_abs'])}   KL mean {num(logits['kl_mean'])} "
                 f"max {num(logits['kl_max'])}   top-1 {fraction(logits['top1_agreement'])}   "
                 f"top-5 {fraction(logits['top5_overlap'])}")
    lines.append(verdict_line(report, ascii_only=True))
    return "\n".join(lines)
