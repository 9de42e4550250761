"""Rendering of verify's report dict (VerifyResult.to_dict()): terminal table, report.md, report.html, JUnit XML,
and writing them atomically. Nothing here measures or judges: the numbers come from compare.py and every pass/fail
mark from the gate's verdict stored in the report.

    view.py      the view model: the report dict -> display-ready strings (one place for every number format)
    templates/   report.md.j2 (a GitHub job summary), report.html.j2 + chart.svg.j2 + style.css (one offline page)
    chart.py     the chart's geometry          terminal.py  the table `verify` prints          junit.py  JUnit XML
    heatmap.py   the layer x position heat-map (report.html)    deltas.py  the --baseline table

The report's shape is described by data/report.schema.json (`schema()`).
"""

import json
import os
from importlib import resources
from pathlib import Path

from markupsafe import Markup

from gptoss_model.io import write_temp_beside
from gptoss_convert.errors import InputError
from gptoss_convert.report.chart import svg_chart
from gptoss_convert.report.heatmap import legend as heatmap_legend
from gptoss_convert.report.heatmap import svg_heatmaps
from gptoss_convert.report.junit import junit
from gptoss_convert.report.render import render
from gptoss_convert.report.terminal import terminal_table
from gptoss_convert.report.view import num, verdict_line, view_model, worst_layer

__all__ = ["schema", "terminal_table", "markdown", "html", "svg_chart", "junit", "write_reports", "verdict_line",
           "worst_layer", "num", "view_model"]


def schema() -> dict:
    """The JSON schema (draft 2020-12) of the report dict, shipped as gptoss_convert/data/report.schema.json."""
    text = resources.files("gptoss_convert").joinpath("data", "report.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def markdown(report: dict) -> str:
    """A summary for a GitHub Actions job summary ($GITHUB_STEP_SUMMARY) or a PR comment."""
    return render("report.md.j2", **view_model(report))


def html(report: dict) -> str:
    """One self-contained HTML page: inline CSS and an inline SVG chart, no scripts, no external resources."""
    return render("report.html.j2", **view_model(report), chart_svg=Markup(svg_chart(report)),
                  heatmaps=[Markup(svg) for svg in svg_heatmaps(report)], heatmap_legend=heatmap_legend())


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
    _write_all(rendered)
    written = [json_path, md_path, html_path]
    return written + ([junit_path] if junit_path is not None else [])


def _write_all(rendered: list[tuple[Path, str]]) -> None:
    """Temporary files first, then one rename each; on any failure, the temporary files and the folders this call
    created (if still empty) are removed."""
    created, temps, current = [], [], None
    try:
        for path, _ in rendered:
            current = path.parent
            missing = [p for p in [current, *current.parents] if not p.exists()]
            current.mkdir(parents=True, exist_ok=True)
            created += [p for p in missing if p not in created]
        for path, text in rendered:
            current = path
            temps.append((write_temp_beside(path, text), path))
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
            raise InputError(f"cannot write the report to {current}: {error.strerror or error}") from error
        raise
