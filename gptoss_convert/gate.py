"""The verdict: thresholds in, pass/fail out, naming the first failing layer and component.

float32 (the parity mode; MXFP4 dequantisation is exact, so both sides compute the same function): every component
of every layer, fed the reference's input (the *isolated* column), and the final logits must satisfy
allclose(ours, ref, atol, rtol); router selections may differ only on near-ties.
bfloat16 (the fidelity mode; bf16 keeps 8 significant bits, so logit differences of ~0.1 are rounding, not bugs):
the final logits gate on KL(ref‖ours) mean ≤ max_kl and top-1 agreement ≥ min_top1.
"""

from dataclasses import asdict, dataclass, field

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
        names = {"logits": "final logits", "final_norm": "final norm", "head": "LM head", "embedding": "embedding"}
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
          model_parts: dict | None = None) -> Verdict:
    """layers: LayerResult-like objects (index, attention_type, isolated / cached {component: Metrics}, router
    {column: RouterAgreement | None}); a component missing from a column was not provided and is not judged. A layer
    with no isolated column (a whole-model candidate) is judged on its accumulated one. logits: LogitMetrics of the
    end-to-end run, or None when the candidate gives no logits. `window`: the sliding window, to name the window-bug
    signature (errors starting exactly at position W). model_parts: {"embedding" | "final_norm" | "head": Metrics
    or None (not provided)}, judged like a component in float32."""
    t = thresholds.resolved()
    failures = []
    if t.dtype == "float32":
        for name, metrics in (model_parts or {}).items():
            if metrics is not None and not metrics.tolerance_ratio <= 1.0:
                failures.append(_tolerance_failure(None, None, name, metrics, t))
        for layer in layers:
            for column in _judged_columns(layer):
                failures += _layer_failures(layer, column, t, window)
        if logits is not None and not logits.diff.tolerance_ratio <= 1.0:
            failures.append(_tolerance_failure(None, None, "logits", logits.diff, t, "accumulated", window))
    if logits is not None and t.max_kl is not None and not logits.kl_mean <= t.max_kl:
        failures.append(Failure(None, None, "logits", "KL(ref||ours) mean", logits.kl_mean, t.max_kl))
    if logits is not None and t.min_top1 is not None and not logits.top1_agreement >= t.min_top1:
        failures.append(Failure(None, None, "logits", "top-1 agreement", logits.top1_agreement, t.min_top1))
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
        metrics = metrics_by_component.get(component)
        if metrics is None:
            continue  # not provided
        if metrics.nonfinite:
            failures.append(Failure(layer.index, layer.attention_type, component, "NaN/Inf values", metrics.nonfinite,
                                    0, column, metrics.first_over, _at_window(metrics.first_over, window)))
        elif not metrics.tolerance_ratio <= 1.0:
            failures.append(_tolerance_failure(layer.index, layer.attention_type, component, metrics, t, column,
                                               window))
    return failures


def _at_window(position: dict | None, window: int | None) -> bool:
    return position is not None and window is not None and position["position"] == window


def _tolerance_failure(layer, attention_type, component, metrics, t: Thresholds, column="isolated",
                       window=None) -> Failure:
    where = dict(column=column, first_position=metrics.first_over,
                 window_signature=layer is not None and _at_window(metrics.first_over, window))
    if t.rtol == 0:
        return Failure(layer, attention_type, component, "max |diff|", metrics.max_abs, t.atol, **where)
    return Failure(layer, attention_type, component, "max |diff| / (atol + rtol·|ref|)", metrics.tolerance_ratio, 1.0,
                   **where)
