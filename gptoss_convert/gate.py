"""The verdict: thresholds in, pass/fail out, naming the first failing layer and component.

float32 (the parity mode; MXFP4 dequantisation is exact, so both sides compute the same function): every component
of every layer, fed the reference's input (the *isolated* column), and the final logits must satisfy
allclose(ours, ref, atol, rtol); router selections may differ only on near-ties.
bfloat16 (the fidelity mode; bf16 keeps 8 significant bits, so logit differences of ~0.1 are rounding, not bugs):
the final logits gate on KL(ref‖ours) mean ≤ max_kl and top-1 agreement ≥ min_top1.
"""

import math
from dataclasses import asdict, dataclass, field

import torch

from gptoss_convert.compare import LogitMetrics, Metrics, earliest_row, json_number, measure, measure_logits

# The components recorded inside each layer, in forward order (candidates/protocol.py LAYER_COMPONENTS).
COMPONENTS = ("attention", "router_logits", "expert_indices", "expert_weights", "moe", "layer_output")
GATED_COLUMNS = ("isolated", "cached")  # accumulated drift is gated through the final logits only

BF16_DEFAULT_MAX_KL = 1e-2  # nats, mean over positions
BF16_DEFAULT_MIN_TOP1 = 0.95


@dataclass(frozen=True)
class Thresholds:
    dtype: str = "float32"
    atol: float = 1e-3
    rtol: float = 0.0
    max_kl: float | None = None  # float32: optional extra gate; bfloat16: defaults to BF16_DEFAULT_MAX_KL
    min_top1: float | None = None  # bfloat16: defaults to BF16_DEFAULT_MIN_TOP1

    def resolved(self) -> "Thresholds":
        if self.dtype == "bfloat16":
            return Thresholds(
                self.dtype,
                self.atol,
                self.rtol,
                BF16_DEFAULT_MAX_KL if self.max_kl is None else self.max_kl,
                BF16_DEFAULT_MIN_TOP1 if self.min_top1 is None else self.min_top1,
            )
        return self


def row_ratios(ours, ref, atol: float, rtol: float) -> torch.Tensor:
    """ours/ref [N, C] -> [N]: per row (token), max |ours - ref| / (atol + rtol·|ref|), inf where ours is NaN/Inf.
    The per-position profile behind the first failing position and the report's heat-map."""
    ours, ref = ours.double(), ref.double()
    diff = (ours - ref).abs().masked_fill(~ours.isfinite(), math.inf)
    if not atol + rtol > 0:
        return torch.where(diff.amax(dim=1) > 0, math.inf, 0.0)
    return (diff / (atol + rtol * ref.abs())).nan_to_num(nan=math.inf).amax(dim=1)


def tolerance_ratio(ours, ref, atol: float, rtol: float) -> float:
    """max |ours - ref| / (atol + rtol·|ref|) over all elements (ours/ref [N, C]): ≤ 1 means allclose holds
    everywhere. A NaN or Inf in ours counts as infinitely far."""
    ours, ref = ours.double(), ref.double()
    diff = (ours - ref).abs()
    diff = diff.masked_fill(~ours.isfinite(), math.inf)
    max_abs = float(diff.max())
    if not atol + rtol > 0:  # a zero tolerance: only exact equality holds
        return math.inf if max_abs > 0 else 0.0
    ratio = float((diff / (atol + rtol * ref.abs())).max())
    return math.inf if math.isnan(ratio) else ratio


@dataclass(frozen=True)
class Checked:
    """A component's metrics (compare.py) and its distance to the float32 tolerance, which the gate judges."""

    metrics: Metrics | LogitMetrics
    tolerance_ratio: float
    first_over: dict | None = None  # the earliest {"prompt", "position"} with an element over the tolerance

    @property
    def max_abs(self) -> float:
        return self.diff.max_abs

    @property
    def diff(self) -> Metrics:
        return self.metrics if isinstance(self.metrics, Metrics) else self.metrics.diff

    def to_dict(self) -> dict:
        return {**self.metrics.to_dict(), "tolerance_ratio": json_number(self.tolerance_ratio),
                "first_over": self.first_over}


def check(ours, ref, rows: list, thresholds: "Thresholds") -> Checked:
    """Measure ours against ref (compare.measure) and place it against atol/rtol, position by position."""
    return _placed(measure(ours, ref, rows), ours, ref, rows, thresholds)


def check_logits(ours, ref, rows: list, thresholds: "Thresholds") -> Checked:
    """compare.measure_logits, placed against atol/rtol."""
    return _placed(measure_logits(ours, ref, rows), ours, ref, rows, thresholds)


def _placed(metrics, ours, ref, rows, thresholds) -> Checked:
    ratios = row_ratios(ours, ref, thresholds.atol, thresholds.rtol)
    return Checked(metrics, tolerance_ratio(ours, ref, thresholds.atol, thresholds.rtol),
                   earliest_row(ratios > 1, rows))


@dataclass(frozen=True)
class Failure:
    layer: int | None  # None: the final logits
    attention_type: str | None
    component: str
    metric: str
    value: float
    limit: float
    column: str = "isolated"
    first_position: dict | None = None  # {"prompt", "position"}: the earliest position over the limit
    window_signature: bool = False  # the failure starts exactly at position W (the sliding window)

    def describe(self) -> str:
        names = {"logits": "final logits", "final_norm": "final norm", "head": "LM head", "embedding": "embedding",
                 "layer_output": "every layer"}
        where = names.get(self.component, self.component) if self.layer is None else \
            f"layer {self.layer} ({self.attention_type}) {self.component}"
        if self.column != "isolated" and self.layer is not None:
            where += f" ({self.column})"
        text = f"{where}: {self.metric} = {self.value:.4g}, limit {self.limit:.4g}"
        if self.first_position is not None:
            position = self.first_position["position"]
            if self.window_signature:
                text += f"; starts at position {position} (the sliding window): window bug signature"
            else:
                text += f"; first failing position {position} (prompt {self.first_position['prompt']})"
        return text


@dataclass(frozen=True)
class Verdict:
    passed: bool
    failures: list = field(default_factory=list)

    @property
    def first(self) -> Failure | None:
        return self.failures[0] if self.failures else None

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "first_failure": asdict(self.first) | {"message": self.first.describe()} if self.first else None,
            "failures": [asdict(f) | {"message": f.describe()} for f in self.failures],
        }


def judge(layers: list, logits, thresholds: Thresholds, window: int | None = None,
          model_parts: dict | None = None, logits_through_candidate: bool = True) -> Verdict:
    """layers: LayerResult-like objects (index, attention_type, isolated / cached {component: Metrics}, router
    {column: RouterAgreement | None}); a component missing from a column was not provided and is not judged. A layer
    with no isolated column (a whole-model candidate) is judged on its accumulated one. logits: LogitMetrics of the
    end-to-end run, or None when the candidate gives no logits. `window`: the sliding window, to name the window-bug
    signature (errors starting exactly at position W). model_parts: {"embedding" | "final_norm" | "head": Metrics
    or None (not provided)}, judged like a component in float32. logits_through_candidate: whether the logits went
    through the candidate's own layers (False when its layers returned nothing and the stream stayed the reference's):
    a candidate whose layers give no component and no such logits fails, since "not provided" is never "passed"; a
    logits-only whole-model candidate is judged on its logits."""
    t = thresholds.resolved()
    failures = []
    nothing_checked = not any(_judged_columns(layer) for layer in layers) and (
        logits is None or not logits_through_candidate)
    if layers and nothing_checked:  # "not provided" is never "passed"
        failures.append(Failure(None, None, "layer_output", "layers that returned any component", 0, 1))
    if t.dtype == "float32":
        for name, metrics in (model_parts or {}).items():
            if metrics is not None and not metrics.tolerance_ratio <= 1.0:
                failures.append(_tolerance_failure(None, None, name, metrics, t))
        for layer in layers:
            for column in _judged_columns(layer):
                failures += _layer_failures(layer, column, t, window)
        if logits is not None and not logits.tolerance_ratio <= 1.0:
            failures.append(_tolerance_failure(None, None, "logits", logits, t, "accumulated", window))
    if logits is not None and t.max_kl is not None and not logits.metrics.kl_mean <= t.max_kl:
        failures.append(Failure(None, None, "logits", "KL(ref||ours) mean", logits.metrics.kl_mean, t.max_kl))
    if logits is not None and t.min_top1 is not None and not logits.metrics.top1_agreement >= t.min_top1:
        failures.append(Failure(None, None, "logits", "top-1 agreement", logits.metrics.top1_agreement,
                                t.min_top1))
    return Verdict(passed=not failures, failures=failures)


def _judged_columns(layer) -> list:
    columns = [c for c in GATED_COLUMNS if getattr(layer, c, None)]
    return columns or (["accumulated"] if getattr(layer, "accumulated", None) else [])


def _layer_failures(layer, column, t: Thresholds, window) -> list:
    failures = []
    metrics_by_component = getattr(layer, column)
    router = (getattr(layer, "router", None) or {}).get(column)
    for component in COMPONENTS:
        if component == "expert_indices":
            if router is not None and router.mismatched:
                failures.append(Failure(layer.index, layer.attention_type, component, "tokens routed differently "
                                        "(not near-ties)", router.mismatched, 0, column, router.first_mismatch,
                                        _at_window(router.first_mismatch, window)))
            continue
        checked = metrics_by_component.get(component)
        if checked is None:
            continue  # not provided
        if checked.diff.nonfinite:
            failures.append(Failure(layer.index, layer.attention_type, component, "NaN/Inf values",
                                    checked.diff.nonfinite, 0, column, checked.first_over,
                                    _at_window(checked.first_over, window)))
        elif not checked.tolerance_ratio <= 1.0:
            failures.append(_tolerance_failure(layer.index, layer.attention_type, component, checked, t, column,
                                               window))
    return failures


def _at_window(position: dict | None, window: int | None) -> bool:
    return position is not None and window is not None and position["position"] == window


def _tolerance_failure(layer, attention_type, component, checked: Checked, t: Thresholds, column="isolated",
                       window=None) -> Failure:
    where = dict(column=column, first_position=checked.first_over,
                 window_signature=layer is not None and _at_window(checked.first_over, window))
    if t.rtol == 0:
        return Failure(layer, attention_type, component, "max |diff|", checked.max_abs, t.atol, **where)
    return Failure(layer, attention_type, component, "max |diff| / (atol + rtol·|ref|)", checked.tolerance_ratio, 1.0,
                   **where)
