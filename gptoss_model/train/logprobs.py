"""Per-token log-probabilities, the quantity every loss here is built from.

`logprobs[b, t]` is log p(ids[b, t + 1] | ids[b, : t + 1]): the model's log-probability of each next token, computed
in float32 from logits divided by the sampling temperature. The rollout sampler (rollout.py) computes the same
quantity one token at a time through the KV cache; tests hold the two equal, because a trainer and a rollout engine
that disagree here is a real RL bug (docs/training.md, "Log-probabilities").
"""

import torch


def logprobs_from_logits(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """logits [B, T, V], targets [B, T] -> log p(target) [B, T] in float32."""
    scaled = logits.float() / temperature  # [B, T, V]
    picked = scaled.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, T]
    return picked - torch.logsumexp(scaled, dim=-1)


def token_logprobs(model, input_ids, attention_mask=None, temperature: float = 1.0) -> torch.Tensor:
    """input_ids [B, T] -> log-probabilities of tokens 1..T-1 given what precedes them [B, T - 1]."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask)  # [B, T, V]
    return logprobs_from_logits(logits[:, :-1], input_ids[:, 1:], temperature)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean of `values` where `mask` is true (over everything, or along `dim`)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)
