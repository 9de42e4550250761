"""The gate's view of positions and columns, on hand-made metrics: the first failing position, the window-bug
signature (errors starting exactly at position W), components not provided, the cached column, NaN/Inf, and a
whole-model candidate judged on its accumulated column. No model runs here."""

import math

import torch

from gptoss_convert.compare import earliest_row, router_agreement
from gptoss_convert.gate import Thresholds, check, check_logits, judge, row_ratios
from gptoss_convert.verify import LayerResult

W = 16
ROWS = [(0, t) for t in range(4)] + [(1, t) for t in range(40)]  # two prompts: 4 and 40 tokens


def _metrics(bad_from: int | None = None, nan_at: int | None = None):
    """[44, 2] tensors; ours differs by 1 at prompt 1's positions >= bad_from (or holds a NaN at one row)."""
    ref = torch.ones(len(ROWS), 2)
    ours = ref.clone()
    for n, (prompt, position) in enumerate(ROWS):
        if bad_from is not None and prompt == 1 and position >= bad_from:
            ours[n] += 1
        if nan_at is not None and prompt == 1 and position == nan_at:
            ours[n, 0] = math.nan
    return check(ours, ref, ROWS, Thresholds())


def _layer(isolated=None, cached=None, accumulated=None, kind="sliding_attention"):
    return LayerResult(0, kind, isolated or {}, accumulated or {}, cached or {}, {}, [])


def _logits():
    return check_logits(torch.eye(44), torch.eye(44), ROWS, Thresholds())


def test_row_ratios_and_earliest_row_find_the_first_failing_position():
    ours, ref = torch.zeros(len(ROWS), 3), torch.zeros(len(ROWS), 3)
    ours[ROWS.index((1, 20))] = 0.5
    ours[ROWS.index((1, 30))] = 0.5
    ours[ROWS.index((0, 3)), 1] = 1e-4  # within atol: not a failure
    ratios = row_ratios(ours, ref, 1e-3, 0)
    assert ratios.shape == (len(ROWS),) and float(ratios.max()) == 500
    assert earliest_row(ratios > 1, ROWS) == {"prompt": 1, "position": 20}
    assert earliest_row(row_ratios(ref, ref, 1e-3, 0) > 1, ROWS) is None


def test_a_failure_starting_at_the_window_is_named_as_the_window_signature():
    verdict = judge([_layer({"attention": _metrics(bad_from=W)})], _logits(), Thresholds(), window=W)
    first = verdict.first
    assert first.first_position == {"prompt": 1, "position": W} and first.window_signature
    assert first.describe().endswith("starts at position 16 (the sliding window): window bug signature")
    elsewhere = judge([_layer({"attention": _metrics(bad_from=W + 3)})], _logits(), Thresholds(), window=W).first
    assert not elsewhere.window_signature and elsewhere.describe().endswith("first failing position 19 (prompt 1)")


def test_components_not_provided_are_not_judged_and_nothing_passes_by_default():
    assert judge([_layer({"layer_output": _metrics()})], _logits(), Thresholds(), window=W).passed
    failing = judge([_layer({"layer_output": _metrics(bad_from=2)})], _logits(), Thresholds(), window=W)
    assert [f.component for f in failing.failures] == ["layer_output"]


def test_the_cached_column_is_gated_and_named():
    verdict = judge([_layer({"layer_output": _metrics()}, cached={"layer_output": _metrics(bad_from=W)})], _logits(),
                    Thresholds(), window=W)
    assert [(f.column, f.component) for f in verdict.failures] == [("cached", "layer_output")]
    assert "layer_output (cached)" in verdict.first.describe()


def test_nan_is_a_failure_of_its_own_kind():
    verdict = judge([_layer({"moe": _metrics(nan_at=7)})], _logits(), Thresholds(), window=W)
    assert (verdict.first.metric, verdict.first.value, verdict.first.first_position["position"]) == \
        ("NaN/Inf values", 1, 7)


def test_a_whole_model_candidate_is_judged_on_its_accumulated_column():
    verdict = judge([_layer(accumulated={"layer_output": _metrics(bad_from=5)})], None, Thresholds(), window=W)
    assert [(f.column, f.component) for f in verdict.failures] == [("accumulated", "layer_output")]


def test_routing_mismatch_reports_its_first_token():
    ours = torch.tensor([[0, 1]] * len(ROWS))
    ref = ours.clone()
    ref[ROWS.index((1, 9))] = torch.tensor([0, 2])
    logits = torch.tensor([[5.0, 4.0, 1.0]] * len(ROWS))
    router = router_agreement(ours, ref, logits, torch.float32, ROWS)
    assert router.mismatched == 1 and router.first_mismatch == {"prompt": 1, "position": 9}
    layer = LayerResult(0, "full_attention", {"layer_output": _metrics()}, {}, {}, {"isolated": router}, [])
    assert judge([layer], _logits(), Thresholds(), window=W).first.component == "expert_indices"


def test_model_parts_are_gated_when_provided():
    verdict = judge([], _logits(), Thresholds(), model_parts={"final_norm": _metrics(bad_from=0), "head": None})
    assert [f.component for f in verdict.failures] == ["final_norm"]
    assert verdict.first.describe().startswith("final norm:")
