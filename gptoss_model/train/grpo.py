"""GRPO: group relative policy optimisation (Shao et al. 2024, "DeepSeekMath", arXiv:2402.03300, §4.1).

Each prompt gets G sampled completions; a completion's advantage is its reward normalised within its group,
(r - mean) / (std + eps), given to every one of its tokens. The loss per token is the clipped policy-ratio
objective of PPO plus beta times the "k3" estimate of KL(policy || reference) (Schulman 2020, "Approximating KL
Divergence", http://joschu.net/blog/kl-approx.html), and the per-token losses are averaged over all completion
tokens of the batch ("token" aggregation, DAPO: Yu et al. 2025, arXiv:2503.14476, §3.3) or per sequence then over
sequences ("sequence", the DeepSeekMath formula). docs/training.md, "GRPO", spells out each term.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from gptoss_model.train.logprobs import masked_mean
from gptoss_model.train.lora import trainable_parameters
from gptoss_model.train.errors import TrainingInputError
from gptoss_model.train.rl import (
    RewardFn, completion_logprobs, draw, frozen_reference, prompt_stream, reference_logprobs, score,
)


@dataclass(frozen=True)
class GRPOConfig:
    steps: int = 30
    prompts_per_step: int = 4
    group_size: int = 8  # G
    max_new_tokens: int = 12
    temperature: float = 1.0
    lr: float = 3e-3  # tuned for LoRA on the tiny checkpoint, like every default here (docs/training.md)
    clip_eps: float = 0.2
    kl_coef: float = 0.04  # beta (DeepSeekMath §4.1 used 0.04)
    updates_per_batch: int = 2  # optimiser steps on each rollout batch (mu)
    aggregation: str = "token"  # "token" (DAPO) or "sequence" (DeepSeekMath)
    grad_clip: float = 1.0
    seed: int = 0


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """rewards [P, G] -> (r - group mean) / (group std + eps) [P, G]; std over the G samples (population)."""
    mean, std = rewards.mean(dim=1, keepdim=True), rewards.std(dim=1, unbiased=False, keepdim=True)
    return (rewards - mean) / (std + eps)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference): r - log r - 1 with r = p_ref / p_policy; never negative."""
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "token":
        return masked_mean(per_token, mask)
    if how == "sequence":
        return masked_mean(per_token, mask, dim=1).mean()
    raise TrainingInputError(f"aggregation must be 'token' or 'sequence', got {how!r}")


def clipped_surrogate(logp, old_logp, advantages, clip_eps: float) -> torch.Tensor:
    """Per-token -min(ratio·A, clip(ratio, 1 - eps, 1 + eps)·A), ratio = p / p_old; advantages broadcast to [B, N]."""
    ratio = torch.exp(logp - old_logp)
    return -torch.minimum(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages)


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, clip_eps=0.2, kl_coef=0.04, aggregation="token"):
    """logp/old_logp/ref_logp [B, N], advantages [B], mask [B, N] -> (loss, {"kl": mean k3, "clipped": share})."""
    per_token = clipped_surrogate(logp, old_logp, advantages[:, None], clip_eps) + kl_coef * k3_kl(logp, ref_logp)
    clipped = ((logp - old_logp).exp() - 1).abs() > clip_eps
    stats = {"kl": masked_mean(k3_kl(logp, ref_logp), mask).item(),
             "clipped": masked_mean(clipped.float(), mask).item()}
    return aggregate(per_token, mask, aggregation), stats


def grpo_update(model, optimizer, params, rollout, advantages, ref_logp, config: GRPOConfig):
    """One optimiser step on a scored rollout batch -> (loss, stats)."""
    logp = completion_logprobs(model, rollout, config.temperature)  # [B, N]
    loss, stats = grpo_loss(logp, rollout.logprobs, ref_logp, advantages, rollout.completion_mask,
                            config.clip_eps, config.kl_coef, config.aggregation)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
    optimizer.step()
    return loss, stats


def train_grpo(model, prompts, reward_fn: RewardFn, pad_id: int, eos_token_id=None, config: GRPOConfig = GRPOConfig(),
               params=None, reference=None) -> Iterator[dict]:
    """Yield {"step", "reward", "loss", "kl", "clipped"} after each rollout batch and its updates. `reference`:
    a frozen model for the KL term (default: the adapters switched off, or a frozen copy of `model`)."""
    params = trainable_parameters(model, params)
    if config.group_size < 2:
        raise TrainingInputError(
            f"group_size must be at least 2 (advantages are normalised within a group), got {config.group_size}")
    reference = reference if reference is not None else frozen_reference(model)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    generator = torch.Generator(next(model.parameters()).device).manual_seed(config.seed)
    stream = prompt_stream(prompts, config.prompts_per_step, config.seed, model.config.vocab_size)
    for step in range(config.steps):
        model.eval()
        rollout = draw(model, next(stream), config.group_size, pad_id, config.max_new_tokens, config.temperature,
                       eos_token_id, generator)
        rewards = score(reward_fn, rollout)  # [B]
        advantages = group_advantages(rewards.view(-1, config.group_size)).flatten()  # [B]
        ref_logp = reference_logprobs(model, reference, rollout, config.temperature)
        model.train()
        for _ in range(config.updates_per_batch):
            loss, stats = grpo_update(model, optimizer, params, rollout, advantages, ref_logp, config)
        yield {"step": step, "reward": rewards.mean().item(), "loss": loss.item(), **stats}
