"""GRPO and PPO losses on hand-built batches against an independent computation written here with plain Python
floats and loops (math.exp, one token at a time), never with the package's own helpers."""

import math

import pytest
import torch

from gptoss_model.train import gae, group_advantages, grpo_loss, k3_kl, ppo_loss
from gptoss_model.train.ppo import shaped_rewards, whiten

# two prompts x G = 3 completions of up to 4 tokens; rows end at different lengths
MASK = [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
REWARDS = [[1.0, 0.0, 0.5], [0.2, 0.2, 0.9]]


def table(seed, low, high):
    g = torch.Generator().manual_seed(seed)
    return (low + (high - low) * torch.rand(6, 4, generator=g, dtype=torch.float64)).tolist()


LOGP, OLD, REF = table(1, -3.0, -0.2), table(2, -3.0, -0.2), table(3, -3.0, -0.2)


def tensor(rows):
    return torch.tensor(rows, dtype=torch.float64)


def python_group_advantages(rewards, eps=1e-4):
    out = []
    for group in rewards:
        mean = sum(group) / len(group)
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / len(group))
        out += [(r - mean) / (std + eps) for r in group]
    return out


def python_grpo_token_losses(advantages, eps, beta):
    losses = []
    for b in range(6):
        row = []
        for t in range(4):
            ratio = math.exp(LOGP[b][t] - OLD[b][t])
            clipped = min(max(ratio, 1 - eps), 1 + eps)
            surrogate = min(ratio * advantages[b], clipped * advantages[b])
            kl = math.exp(REF[b][t] - LOGP[b][t]) - (REF[b][t] - LOGP[b][t]) - 1
            row.append(-surrogate + beta * kl)
        losses.append(row)
    return losses


def test_group_advantages_match_a_hand_computation():
    got = group_advantages(tensor(REWARDS)).flatten().tolist()
    assert got == pytest.approx(python_group_advantages(REWARDS), abs=1e-9)
    assert group_advantages(torch.ones(1, 4)).abs().max() == 0  # equal rewards: no signal, no NaN


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_grpo_loss_matches_a_hand_computation(aggregation):
    advantages = python_group_advantages(REWARDS)
    losses = python_grpo_token_losses(advantages, eps=0.2, beta=0.04)
    if aggregation == "token":  # DAPO: every completion token of the batch weighs the same
        kept = [losses[b][t] for b in range(6) for t in range(4) if MASK[b][t]]
        expected = sum(kept) / len(kept)
    else:  # DeepSeekMath: mean over each sequence's tokens, then over sequences
        per_row = [sum(l for l, m in zip(losses[b], MASK[b]) if m) / sum(MASK[b]) for b in range(6)]
        expected = sum(per_row) / 6
    loss, stats = grpo_loss(tensor(LOGP), tensor(OLD), tensor(REF), tensor(advantages), tensor(MASK).bool(),
                            clip_eps=0.2, kl_coef=0.04, aggregation=aggregation)
    assert loss.item() == pytest.approx(expected, abs=1e-10)
    kls = [math.exp(REF[b][t] - LOGP[b][t]) - (REF[b][t] - LOGP[b][t]) - 1
           for b in range(6) for t in range(4) if MASK[b][t]]
    assert stats["kl"] == pytest.approx(sum(kls) / len(kls), abs=1e-10)


def test_aggregations_differ_when_lengths_differ():
    args = (tensor(LOGP), tensor(OLD), tensor(REF), tensor(python_group_advantages(REWARDS)), tensor(MASK).bool())
    token, sequence = (grpo_loss(*args, aggregation=how)[0].item() for how in ("token", "sequence"))
    assert token != pytest.approx(sequence)


def test_k3_is_an_unbiased_nonnegative_kl_estimate():
    """Sampled from p, E[k3] = KL(p || q): checked on two small categorical distributions."""
    p, q = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p.tolist(), q.tolist()))
    estimates = k3_kl(p.log(), q.log())
    assert (estimates >= 0).all()
    assert (p * estimates).sum().item() == pytest.approx(expected, abs=1e-12)


def python_gae(rewards, values, mask, gamma, lam):
    advantages = [[0.0] * 4 for _ in range(6)]
    for b in range(6):
        n = sum(mask[b])
        running = 0.0
        for t in reversed(range(n)):
            next_value = values[b][t + 1] if t + 1 < n else 0.0  # after the last token: terminal
            running = rewards[b][t] + gamma * next_value - values[b][t] + gamma * lam * running
            advantages[b][t] = running
    return advantages


def test_gae_matches_a_hand_computation():
    rewards, values = table(4, -1.0, 1.0), table(5, -1.0, 1.0)
    got, returns = gae(tensor(rewards), tensor(values), tensor(MASK).bool(), gamma=0.9, lam=0.8)
    expected = python_gae(rewards, values, MASK, 0.9, 0.8)
    assert sum(got.tolist(), []) == pytest.approx(sum(expected, []), abs=1e-10)
    for b in range(6):
        for t in range(4):
            assert returns[b, t].item() == pytest.approx((expected[b][t] + values[b][t]) * MASK[b][t], abs=1e-10)


def test_shaped_rewards_put_the_score_on_the_last_token():
    scores = [1.0, -2.0, 0.5, 3.0, 0.0, 1.5]
    got = shaped_rewards(tensor(scores), tensor(OLD), tensor(REF), tensor(MASK).bool(), kl_coef=0.1)
    for b in range(6):
        last = sum(MASK[b]) - 1
        for t in range(4):
            expected = -0.1 * (OLD[b][t] - REF[b][t]) * MASK[b][t] + (scores[b] if t == last else 0.0)
            assert got[b, t].item() == pytest.approx(expected, abs=1e-12), (b, t)


def test_ppo_loss_matches_a_hand_computation():
    advantages, values, old_values, returns = (table(s, -1.0, 1.0) for s in (6, 7, 8, 9))
    eps, value_clip, value_coef = 0.2, 0.3, 0.5
    policy_terms, value_terms = [], []
    for b in range(6):
        for t in range(4):
            if not MASK[b][t]:
                continue
            ratio = math.exp(LOGP[b][t] - OLD[b][t])
            a = advantages[b][t]
            policy_terms.append(-min(ratio * a, min(max(ratio, 1 - eps), 1 + eps) * a))
            v, v_old, r = values[b][t], old_values[b][t], returns[b][t]
            v_clipped = v_old + min(max(v - v_old, -value_clip), value_clip)
            value_terms.append(0.5 * max((v - r) ** 2, (v_clipped - r) ** 2))
    expected = sum(policy_terms) / len(policy_terms) + value_coef * sum(value_terms) / len(value_terms)
    loss, stats = ppo_loss(tensor(LOGP), tensor(OLD), tensor(advantages), tensor(values), tensor(old_values),
                           tensor(returns), tensor(MASK).bool(), eps, value_clip, value_coef)
    assert loss.item() == pytest.approx(expected, abs=1e-10)
    assert stats["value_loss"] == pytest.approx(sum(value_terms) / len(value_terms), abs=1e-10)


def test_whiten_over_masked_tokens_only():
    values = tensor(table(10, -2.0, 5.0))
    got = whiten(values, tensor(MASK).bool())
    kept = got[tensor(MASK).bool()]
    assert kept.mean().item() == pytest.approx(0.0, abs=1e-9)
    assert kept.var(unbiased=False).item() == pytest.approx(1.0, abs=1e-6)
    assert (got[~tensor(MASK).bool()] == 0).all()
