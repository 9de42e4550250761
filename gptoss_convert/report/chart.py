"""The per-layer error chart of report.html: max |diff| per layer on a log scale, as an inline SVG (no scripts).

`chart_view` computes the geometry (coordinates as display-ready strings); templates/chart.svg.j2 draws it.
"""

import math

from gptoss_convert.report.render import render
from gptoss_convert.report.view import CHART_FLOOR, failed_layers, float32_gate, num

WIDTH, HEIGHT = 860, 400
LEFT, RIGHT, TOP, BOTTOM = 72, 86, 16, 72  # margins around the plot area
MARKER_RADIUS = 3.5

# label, column, component, colour, dash pattern, marker
SERIES = (
    ("isolated layer output", "isolated", "layer_output", "#0969da", "", "circle"),
    ("accumulated layer output", "accumulated", "layer_output", "#bc4c00", "6 3", "square"),
    ("isolated attention", "isolated", "attention", "#1a7f37", "2 3", "triangle"),
    ("isolated moe", "isolated", "moe", "#8250df", "8 3 2 3", "diamond"),
)


def chart_value(x) -> tuple[float, str]:
    """(value to plot, text for its tooltip): zeros and tiny values go to CHART_FLOOR, inf to the top."""
    if isinstance(x, str) or x is None or math.isinf(float(x)) or math.isnan(float(x)):
        return math.inf, num(x)
    x = float(x)
    return max(x, CHART_FLOOR), num(x)


class _Axes:
    """Log-scale y (decades bottom..top), one band per layer on x."""

    def __init__(self, values: list[float], atol: float, layer_count: int):
        finite = [v for v in values if math.isfinite(v)] + ([atol] if atol > 0 else [])
        high = max(finite + [CHART_FLOOR * 10])
        low = min(finite + [high / 10])
        self.top = math.ceil(math.log10(high) + 1e-9)
        self.bottom = min(math.floor(math.log10(low)), self.top - 1)
        if self.top - self.bottom < 2:
            self.bottom = self.top - 2
        self.count = max(layer_count, 1)
        self.plot_w, self.plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y(self, value: float) -> float:
        if not math.isfinite(value):
            return TOP
        return TOP + (self.top - math.log10(value)) / (self.top - self.bottom) * self.plot_h

    def x(self, index: int) -> float:
        return LEFT + (index + 0.5) * self.plot_w / self.count


def marker(shape: str, x: float, y: float) -> dict:
    """One marker: a circle, a square, or a polygon (triangle, diamond), with coordinates as strings."""
    r = MARKER_RADIUS
    if shape == "circle":
        return {"shape": "circle", "cx": f"{x:.1f}", "cy": f"{y:.1f}", "r": f"{r}"}
    if shape == "square":
        return {"shape": "square", "x": f"{x - r:.1f}", "y": f"{y - r:.1f}", "size": f"{2 * r}"}
    corners = ([(x, y - r - 1), (x + r + 1, y + r), (x - r - 1, y + r)] if shape == "triangle"
               else [(x, y - r - 1), (x + r + 1, y), (x, y + r + 1), (x - r - 1, y)])
    return {"shape": "polygon", "points": " ".join(f"{a:.1f},{b:.1f}" for a, b in corners)}


def chart_view(report: dict) -> dict:
    """The chart's geometry: gridlines, failing-layer bands, series (polyline + markers), atol line, legend."""
    layers, atol = report["layers"], float(report["atol"])
    values = [chart_value(layer[column][component]["max_abs"])[0]
              for layer in layers for _, column, component, *_ in SERIES if component in (layer.get(column) or {})]
    axes = _Axes(values, atol, len(layers))
    band = axes.plot_w / axes.count
    failed = failed_layers(report) if float32_gate(report) else set()
    step = 1 if axes.top - axes.bottom <= 14 else 2
    label_every = max(1, math.ceil(axes.count / 36))
    return {
        "width": WIDTH, "height": HEIGHT, "left": LEFT, "top": TOP, "plot_w": axes.plot_w, "plot_h": axes.plot_h,
        "right_edge": LEFT + axes.plot_w, "axis_label_y": TOP + axes.plot_h + 32,
        "tick_y": TOP + axes.plot_h + 15, "x_mid": f"{LEFT + axes.plot_w / 2:.1f}",
        "y_mid": f"{TOP + axes.plot_h / 2:.1f}",
        "bands": [{"x": f"{LEFT + i * band:.1f}", "width": f"{band:.1f}", "layer": layer["index"]}
                  for i, layer in enumerate(layers) if layer["index"] in failed],
        "gridlines": [{"y": f"{axes.y(10.0 ** dec):.1f}", "label_y": f"{axes.y(10.0 ** dec) + 4:.1f}",
                       "label": f"1e{dec}" if (dec - axes.bottom) % step == 0 else None}
                      for dec in range(axes.bottom, axes.top + 1)],
        "ticks": [{"x": f"{axes.x(i):.1f}", "label": layer["index"]}
                  for i, layer in enumerate(layers) if i % label_every == 0],
        "atol": _atol_line(axes, atol),
        "series": [_series(axes, layers, *entry) for entry in reversed(SERIES)],  # isolated layer output on top
        "legend": [_legend_entry(k, *entry) for k, entry in enumerate(SERIES)],
    }


def _atol_line(axes: _Axes, atol: float) -> dict | None:
    if not atol > 0:
        return None
    y = axes.y(atol)
    return {"y": f"{y:.1f}", "label_x": LEFT + axes.plot_w + 6, "label_y": f"{y + 4:.1f}", "text": f"atol {atol:g}"}


def _series(axes: _Axes, layers: list, label, column, component, colour, dash, shape) -> dict:
    points = []
    for i, layer in enumerate(layers):
        if component not in (layer.get(column) or {}):
            continue  # not provided by the candidate: no point
        value, text = chart_value(layer[column][component]["max_abs"])
        x, y = axes.x(i), axes.y(value)
        points.append({**marker(shape, x, y), "xy": f"{x:.1f},{y:.1f}",
                       "title": f"layer {layer['index']} {label}: max |diff| {text}"})
    return {"colour": colour, "dash": dash, "points": points, "line": " ".join(p["xy"] for p in points)
            if len(points) > 1 else None}


def _legend_entry(k: int, label, column, component, colour, dash, shape) -> dict:
    x, y = LEFT + k * 190, HEIGHT - 12
    return {"x": x, "x_end": x + 22, "text_x": x + 27, "y": y, "text_y": y + 4, "colour": colour, "dash": dash,
            "label": label, "marker": {**marker(shape, x + 11, y), "title": label}}


def svg_chart(report: dict) -> str:
    """The chart as one inline <svg> element."""
    return render("chart.svg.j2", chart=chart_view(report)).rstrip("\n")
