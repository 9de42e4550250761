"""The verdict: thresholds in, pass/fail out, naming the first failing layer and component.

float32 (the parity mode; MXFP4 dequantisation is exact, so both sides compute the same function): every component
of every layer, fed the reference's input (the *isolated* column), and the final logits must satisfy
allclose(ours, ref, atol, rtol); router selections may differ only on near-ties.
bfloat16 (the fidelity mode; bf16 keeps 8 significant bits, so logit differences of ~0.1 are rounding, not bugs):
the final logits gate on KL(ref‖ours) mean ≤ max_kl and top-1 agreement ≥ min_top1.
"""

import math
from dataclasses import asdict, dataclass, field

from gptoss_convert.compare import LogitMetrics, Metrics, json_number, measure, measure_logits

# The components recorded inside each layer, in forward order.
COMPONENTS = ("attention", "router_logits", "experts_selected", "moe", "layer_output")

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

    @property
    def max_abs(self) -> float:
        return self.metrics.max_abs if isinstance(self.metrics, Metrics) else self.metrics.diff.max_abs

    def to_dict(self) -> dict:
        return {**self.metrics.to_dict(), "tolerance_ratio": json_number(self.tolerance_ratio)}


def check(ours, ref, rows: list, thresholds: "Thresholds") -> Checked:
    """Measure ours against ref (compare.measure) and place it against atol/rtol."""
    return Checked(measure(ours, ref, rows), tolerance_ratio(ours, ref, thresholds.atol, thresholds.rtol))


def check_logits(ours, ref, rows: list, thresholds: "Thresholds") -> Checked:
    """compare.measure_logits, placed against atol/rtol."""
    return Checked(measure_logits(ours, ref, rows), tolerance_ratio(ours, ref, thresholds.atol, thresholds.rtol))


@dataclass(frozen=True)
class Failure:
    layer: int | None  # None: the final logits
    attention_type: str | None
    component: str
    metric: str
    value: float
    limit: float

    def describe(self) -> str:
        where = "final logits" if self.layer is None else f"layer {self.layer} ({self.attention_type}) {self.component}"
        return f"{where}: {self.metric} = {self.value:.4g}, limit {self.limit:.4g}"


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


def judge(layers: list, logits, thresholds: Thresholds) -> Verdict:
    """layers: LayerResult-like objects (index, attention_type, isolated {component: Checked}, router_isolated);
    logits: the Checked LogitMetrics of the end-to-end run."""
    limits = thresholds.resolved()
    failures = []
    if limits.dtype == "float32":
        for layer in layers:
            for component in COMPONENTS:
                if component == "experts_selected":
                    router = layer.router_isolated
                    if router.mismatched:
                        failures.append(
                            Failure(layer.index, layer.attention_type, component, "tokens routed differently "
                                    "(not near-ties)", router.mismatched, 0)
                        )
                    continue
                checked = layer.isolated[component]
                if not checked.tolerance_ratio <= 1.0:
                    failures.append(_tolerance_failure(layer.index, layer.attention_type, component, checked, limits))
        if not logits.tolerance_ratio <= 1.0:
            failures.append(_tolerance_failure(None, None, "logits", logits, limits))
    kl_mean, top1 = logits.metrics.kl_mean, logits.metrics.top1_agreement
    if limits.max_kl is not None and not kl_mean <= limits.max_kl:
        failures.append(Failure(None, None, "logits", "KL(ref||ours) mean", kl_mean, limits.max_kl))
    if limits.min_top1 is not None and not top1 >= limits.min_top1:
        failures.append(Failure(None, None, "logits", "top-1 agreement", top1, limits.min_top1))
    return Verdict(passed=not failures, failures=failures)


def _tolerance_failure(layer, attention_type, component, checked: Checked, limits: Thresholds) -> Failure:
    if limits.rtol == 0:
        return Failure(layer, attention_type, component, "max |diff|", checked.max_abs, limits.atol)
    return Failure(layer, attention_type, component, "max |diff| / (atol + rtol·|ref|)", checked.tolerance_ratio, 1.0)
