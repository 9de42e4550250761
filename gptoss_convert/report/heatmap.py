"""The layer x position heat-map of report.html: for each prompt, one row per layer and one cell per position (or
bucket of positions), coloured by the largest tolerance ratio there (report["heatmap"], written by verify). A window
bug shows as a vertical edge at position W; an error that builds up along the sequence as a ramp.

`heatmap_view` computes the geometry; templates/heatmap.svg.j2 draws it.
"""

from gptoss_convert.report.render import render

WIDTH = 860
LEFT, TOP, ROW_HEIGHT = 64, 18, 14
# (upper bound of log10 ratio, colour, meaning): > 0 fails the float32 gate
BANDS = ((-9.0, "#eaeef2", "exact or < 1e-9 of the tolerance"), (-3.0, "#aceebb", "< 1e-3 of the tolerance"),
         (0.0, "#fff8c5", "within the tolerance"), (1.0, "#ffb8b0", "over, up to 10x"),
         (3.0, "#fa4549", "10x - 1000x over"), (99.0, "#82071e", "more than 1000x over"))


def colour(log_ratio: float) -> str:
    return next(c for bound, c, _ in BANDS if log_ratio <= bound)


def heatmap_view(report: dict) -> list[dict]:
    """One grid per prompt: cells with x, y, width, colour and a tooltip; the window marker where it falls."""
    data, layers, window = report.get("heatmap"), report["layers"], report.get("sliding_window")
    grids = []
    for entry in (data or {}).get("prompts", []):
        rows = entry["log10_ratio"]
        cells_per_row = max((len(r) for r in rows), default=0)
        if not cells_per_row:
            continue
        cell_w = (WIDTH - LEFT - 8) / cells_per_row
        bucket, length = entry["bucket"], entry["length"]
        cells = []
        for r, (layer, values) in enumerate(zip(layers, rows)):
            for c, value in enumerate(values):
                first, last = c * bucket, min(length, (c + 1) * bucket) - 1
                span = f"position {first}" if first == last else f"positions {first}-{last}"
                cells.append({"x": f"{LEFT + c * cell_w:.2f}", "y": TOP + r * ROW_HEIGHT, "w": f"{cell_w + 0.05:.2f}",
                              "colour": colour(value),
                              "title": f"layer {layer['index']}, {span}: max tolerance ratio 1e{value:g}"})
        height = TOP + len(rows) * ROW_HEIGHT
        marker = None
        if window and window < length:
            x = LEFT + window / bucket * cell_w
            marker = {"x": f"{x:.2f}", "y2": height + 4, "label_y": height + 14}
        grids.append({"prompt": entry["prompt"], "length": length, "bucket": bucket, "cells": cells,
                      "height": height + 22, "marker": marker, "width": WIDTH, "left": LEFT,
                      "labels": [{"y": TOP + r * ROW_HEIGHT + 10, "text": f"L{layer['index']}"}
                                 for r, layer in enumerate(layers)]})
    return grids


def svg_heatmaps(report: dict) -> list[str]:
    return [render("heatmap.svg.j2", grid=grid).rstrip("\n") for grid in heatmap_view(report)]


def legend() -> list[dict]:
    return [{"colour": c, "meaning": meaning} for _, c, meaning in BANDS]
