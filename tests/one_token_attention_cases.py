"""Cases for gptoss_model/kernels/one_token_attention.py against the readable model.attention_with_sinks. Collected
through tests/test_mxfp4_kernels.py: under Triton's CPU interpreter in a child process without CUDA, compiled on
CUDA."""

import os

import pytest
import torch

pytest.importorskip("triton")

from gptoss_model.kernels.one_token_attention import one_token_attention  # noqa: E402
from gptoss_model.model import attention_with_sinks  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run through tests/test_mxfp4_kernels.py (needs TRITON_INTERPRET=1 before triton is imported)",
                allow_module_level=True)

WINDOW = 128  # a sliding-window layer's keys (gpt-oss's sliding_window)


def keep_mask(kinds, S):
    """One row of keep [B, 1, 1, S] per kind: "all" keys, a causal "prefix" (the first 2/3), the last WINDOW keys of
    that prefix ("window"), the prefix with "holes" (padding: one key in 7 and a run of 70 masked), or "none" (every
    key masked: the row must come out 0)."""
    valid = max(1, 2 * S // 3)
    slots = torch.arange(S)
    rows = {"all": slots >= 0, "none": slots < 0, "prefix": slots < valid,
            "window": (slots < valid) & (slots >= valid - WINDOW),
            "holes": (slots < valid) & (slots % 7 != 3) & ((slots < 60) | (slots >= 130))}
    return torch.stack([rows[kind] for kind in kinds]).view(len(kinds), 1, 1, S).to(DEVICE)


def inputs(B, S, heads, dtype, values, seed):
    """q [B, nq, 1, d], k, v [B, nkv, S, d], sinks [nq] alternating +10 and -10 plus noise (a large sink takes
    nearly all the weight; a small one none). values "halves": q and k multiples of 1/2 in [-1, 1], whose scores are
    exact in bf16, so the roundings of the scores cannot differ between the kernel and a float32 reference."""
    nq, nkv, d = heads
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, n, length, d, generator=generator) for n, length in ((nq, 1), (nkv, S), (nkv, S)))
    if values == "halves":
        q, k = ((t * 0.7).round().clamp(-2, 2) / 2 for t in (q, k))
    sinks = 10.0 * (1 - 2 * (torch.arange(nq) % 2)) + torch.randn(nq, generator=generator)
    return [t.to(DEVICE, dtype) for t in (q, k, v, sinks)]


def assert_close_per_head(got, want, tolerance):
    """got, want [B, 1, nq, d]: each head's row within tolerance times that row's largest value (a head whose sink
    takes nearly all the weight has a tiny output, held to the same relative standard)."""
    scale = want.float().abs().amax(dim=-1, keepdim=True)
    error = (got.float() - want.float()).abs()
    assert (error <= tolerance * scale).all(), (error / scale.clamp_min(1e-30)).max().item()


CASES = [  # B, S, keep kinds, (nq, nkv, d), keys per split
    (1, 1, ["all"], (16, 2, 64), 1024),
    (1, 37, ["prefix"], (16, 2, 64), 1024),
    (3, 37, ["all", "window", "none"], (8, 2, 32), 1024),  # the small preset: 4 heads a group, d = 32
    (1, 300, ["window"], (16, 2, 64), 1024),
    (3, 300, ["holes", "all", "none"], (16, 2, 64), 128),  # three splits, one of them fully masked in row 0
    (1, 1100, ["all"], (16, 2, 64), 1024),  # two splits, the second of 76 keys
    (3, 2500, ["window", "prefix", "none"], (8, 2, 32), 1024),
]


@pytest.mark.parametrize("B, S, kinds, heads, keys_per_split", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_token_attention_as_the_readable_path(B, S, kinds, heads, keys_per_split, dtype):
    """The kernel against attention_with_sinks in float32 on the same values: float32 within float32 rounding;
    bf16 (scores exact there) within the roundings of the probabilities and of the output, ~2 bf16 steps. A row with
    every key masked is exactly 0."""
    q, k, v, sinks = inputs(B, S, heads, dtype, "randn" if dtype == torch.float32 else "halves", seed=S + B)
    keep = keep_mask(kinds, S)
    got = one_token_attention(q, k, v, sinks, keep, heads[2] ** -0.5, keys_per_split=keys_per_split)
    want = attention_with_sinks(q.float(), k.float(), v.float(), sinks.float(), keep, heads[2] ** -0.5)
    assert got.shape == (B, 1, heads[0], heads[2]) and got.dtype == dtype and torch.isfinite(got).all()
    for row, kind in enumerate(kinds):
        if kind == "none":
            assert torch.equal(got[row], torch.zeros_like(got[row]))
    assert_close_per_head(got, want, 1e-5 if dtype == torch.float32 else 2**-6)


@pytest.mark.parametrize("S, kinds", [(300, ["window", "all"]), (1100, ["prefix", "window"])])
def test_bf16_random_values_as_the_readable_bf16_path(S, kinds):
    """On random bf16 values the readable path in bf16 (its scores, subtraction of the max and probabilities each
    rounded to bf16) and the kernel agree within a few bf16 steps of each head's output."""
    q, k, v, sinks = inputs(len(kinds), S, (16, 2, 64), torch.bfloat16, "randn", seed=S)
    keep = keep_mask(kinds, S)
    got = one_token_attention(q, k, v, sinks, keep, 0.125)
    assert_close_per_head(got, attention_with_sinks(q, k, v, sinks, keep, 0.125), 2**-4)


@pytest.mark.parametrize("change, expected", [
    (lambda q, k, v, s, m: (q.expand(-1, -1, 2, -1), k, v, s, m), "q [B, nq, 1, d]"),
    (lambda q, k, v, s, m: (q, k[:, :1].expand(-1, 3, -1, -1), v[:, :1].expand(-1, 3, -1, -1), s, m), "multiple"),
    (lambda q, k, v, s, m: (q, k, v, s[:-1], m), "sinks [nq]"),
    (lambda q, k, v, s, m: (q, k, v, s, m.int()), "keep [B, 1, 1, S] bool"),
])
def test_refuses_shapes_it_does_not_compute(change, expected):
    q, k, v, sinks = inputs(1, 8, (16, 2, 64), torch.float32, "randn", seed=0)
    with pytest.raises(ValueError, match=expected.replace("[", r"\[")) as refused:
        one_token_attention(*change(q, k, v, sinks, keep_mask(["all"], 8)), 0.125)
    assert "\n" not in str(refused.value)
