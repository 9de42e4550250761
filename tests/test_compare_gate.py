"""Metrics (compare.py) and the verdict (gate.py) on hand-made numbers."""

import math

import torch

from gptoss_convert.compare import measure, measure_logits, router_agreement
from gptoss_convert.gate import COMPONENTS, Thresholds, check, check_logits, judge, tolerance_ratio
from gptoss_convert.verify import LayerResult

ROWS = [(0, 0), (0, 1), (1, 0)]


def test_measure_locates_the_worst_element_and_scales():
    ref = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    ours = ref.clone()
    ours[2, 1] += 0.5
    m = measure(ours, ref, ROWS)
    assert m.max_abs == 0.5 and m.where == {"prompt": 1, "position": 0, "channel": 1}
    assert math.isclose(m.mean_abs, 0.5 / 6)
    assert math.isclose(m.rel_l2, 0.5 / float(ref.double().norm()), rel_tol=1e-12)
    assert math.isclose(tolerance_ratio(ours, ref, atol=0.1, rtol=0.0), 5.0)
    assert math.isclose(m.nmse_db, 10 * math.log10((0.25 / 6) / float(ref.double().var(unbiased=False))), rel_tol=1e-9)
    assert math.isclose(tolerance_ratio(ours, ref, atol=0.0, rtol=0.1), 0.5 / 0.6)


def test_identical_tensors_and_nan():
    ref = torch.randn(3, 4)
    same = measure(ref.clone(), ref, ROWS)
    assert same.max_abs == 0 and same.nmse_db == -math.inf and same.to_dict()["nmse_db"] is None
    bad = ref.clone()
    bad[1, 2] = float("nan")
    nan = measure(bad, ref, ROWS)
    assert nan.max_abs == math.inf and nan.where == {"prompt": 0, "position": 1, "channel": 2}
    assert not tolerance_ratio(bad, ref, 1e-3, 0) <= 1


def test_router_agreement_separates_near_ties():
    ref_logits = torch.tensor([[3.0, 2.0, 1.0, 1.0 + 1e-7], [3.0, 2.0, 1.0, 0.0], [5.0, 4.0, 3.0, 0.0]])
    ref_idx = torch.tensor([[0, 1], [0, 1], [0, 1]])
    ours_idx = torch.tensor([[1, 0], [0, 2], [0, 1]])  # token 0 same set, token 1 differs for real
    a = router_agreement(ours_idx, ref_idx, ref_logits, torch.float32)
    assert (a.tokens, a.same_set, a.near_tie, a.mismatched) == (3, 2, 0, 1)
    tie_logits = torch.tensor([[3.0, 2.0, 2.0, 0.0]])
    t = router_agreement(torch.tensor([[0, 2]]), torch.tensor([[0, 1]]), tie_logits, torch.float32)
    assert (t.near_tie, t.mismatched) == (1, 0)


def test_logit_metrics():
    ref = torch.randn(4, 10)
    same = measure_logits(ref.clone(), ref, [(0, i) for i in range(4)])
    assert same.kl_mean == 0 and same.top1_agreement == 1 and same.top5_overlap == 1
    shifted = ref.clone()
    shifted[0] = -shifted[0]
    m = measure_logits(shifted, ref, [(0, i) for i in range(4)])
    assert m.kl_max > 0 and m.kl_mean == m.kl_max / 4 or m.kl_mean > 0
    assert m.top1_agreement == 0.75


def test_metrics_take_no_thresholds_and_zero_tolerance_holds_for_equal_tensors():
    ref = torch.randn(3, 4)
    assert "tolerance_ratio" not in measure(ref, ref, ROWS).to_dict()
    assert tolerance_ratio(ref, ref, 0.0, 0.0) == 0.0 and tolerance_ratio(ref + 1, ref, 0.0, 0.0) == math.inf
    assert check(torch.ones(3, 4) + 1, torch.ones(3, 4), ROWS, Thresholds(atol=0.5)).to_dict()["tolerance_ratio"] == 2.0


def _layer(index, kind, bad_component=None, mismatched=0):
    ref = torch.ones(3, 2)
    ok = check(ref, ref, ROWS, Thresholds())
    bad = check(ref + 1, ref, ROWS, Thresholds())
    iso = {c: (bad if c == bad_component else ok) for c in COMPONENTS if c != "expert_indices"}
    router = router_agreement(torch.tensor([[0]] * 3), torch.tensor([[mismatched and 1 or 0]] * 3),
                              torch.tensor([[5.0, 0.0]] * 3), torch.float32)
    return LayerResult(index, kind, iso, iso, {}, {"isolated": router, "accumulated": router}, [])


def test_gate_names_the_first_failing_layer_and_component():
    logits = check_logits(torch.eye(3), torch.eye(3), ROWS, Thresholds())
    layers = [_layer(0, "sliding_attention"), _layer(1, "full_attention", "moe"), _layer(2, "sliding_attention", "attention")]
    verdict = judge(layers, logits, Thresholds())
    assert not verdict.passed and len(verdict.failures) == 2
    assert (verdict.first.layer, verdict.first.attention_type, verdict.first.component) == (1, "full_attention", "moe")
    assert "layer 1 (full_attention) moe" in verdict.first.describe()
    routed = judge([_layer(0, "sliding_attention", mismatched=1)], logits, Thresholds())
    assert routed.first.component == "expert_indices"
    assert judge([_layer(0, "sliding_attention")], logits, Thresholds()).passed


def test_bfloat16_gate_uses_kl_and_top1_defaults():
    ref = torch.randn(3, 8)
    flipped = -ref
    logits = check_logits(flipped, ref, ROWS, Thresholds())
    layers = [_layer(0, "sliding_attention", "moe")]  # per-layer diffs are reported, not gated, in bf16
    verdict = judge(layers, logits, Thresholds(dtype="bfloat16"))
    assert [f.metric for f in verdict.failures] == ["KL(ref||ours) mean", "top-1 agreement"]
    good = check_logits(ref, ref, ROWS, Thresholds())
    assert judge(layers, good, Thresholds(dtype="bfloat16")).passed
    assert Thresholds(dtype="bfloat16").resolved().max_kl == 1e-2
