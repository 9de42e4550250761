"""PPO with a value head and GAE for language models.

The clipped surrogate objective is Schulman et al. 2017 ("Proximal Policy Optimization Algorithms",
arXiv:1707.06347, eq. 7); advantages come from generalized advantage estimation (Schulman et al. 2015,
arXiv:1506.02438, eq. 16). As in RLHF practice (Ziegler et al. 2019, arXiv:1909.08593; Ouyang et al. 2022,
arXiv:2203.02155) each completion token is one action, the task reward arrives on the last token, and every token
pays kl_coef · (log p_old - log p_ref), keeping the policy near the frozen reference. docs/training.md, "PPO".
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from gptoss_model.train.grpo import clipped_surrogate
from gptoss_model.train.lora import trainable_parameters
from gptoss_model.train.logprobs import logprobs_from_logits, masked_mean
from gptoss_model.train.rl import RewardFn, draw, frozen_reference, prompt_stream, reference_logprobs, score
from gptoss_model.train.rollout import Rollout


@dataclass(frozen=True)
class PPOConfig:
    steps: int = 30
    prompts_per_step: int = 32
    max_new_tokens: int = 12
    temperature: float = 1.0
    lr: float = 1e-2  # tuned for LoRA on the tiny checkpoint, like every default here (docs/training.md)
    value_lr: float = 1e-2
    clip_eps: float = 0.2
    value_clip: float = 0.2
    value_coef: float = 0.5
    kl_coef: float = 0.01  # beta, per token, in the reward
    gamma: float = 1.0
    lam: float = 0.95
    updates_per_batch: int = 2  # PPO epochs over each rollout batch
    grad_clip: float = 1.0
    seed: int = 0


class ValueHead(nn.Module):
    """hidden [B, T, H] -> value of each state [B, T], in float32."""

    def __init__(self, hidden_size: int, device=None):
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1, device=device, dtype=torch.float32)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


def policy_and_values(model, value_head, rollout: Rollout, temperature: float):
    """One trunk pass -> log p of each completion token [B, N] and the value of the state it was drawn in [B, N].
    The value head reads the trunk's hidden states detached: the critic's loss does not move the policy."""
    hidden = model.model(rollout.input_ids, rollout.attention_mask)  # [B, P + N, H]
    state = hidden[:, rollout.prompt_length - 1 : -1]  # [B, N, H]  the state before each completion token
    logp = logprobs_from_logits(model.lm_head(state), rollout.completions, temperature)  # [B, N]
    return logp, value_head(state.detach())


def shaped_rewards(scores, old_logp, ref_logp, mask, kl_coef: float) -> torch.Tensor:
    """scores [B], per-token log-probs [B, N] -> per-token rewards [B, N]: -kl_coef·(log p_old - log p_ref) on every
    completion token, plus the score on the last one."""
    rewards = -kl_coef * (old_logp - ref_logp) * mask
    last = mask.long().sum(dim=1) - 1  # [B]
    return rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))


def gae(rewards, values, mask, gamma: float, lam: float):
    """rewards/values/mask [B, N] -> (advantages, returns) [B, N]; the state after a row's last token is terminal
    (value 0), so nothing flows back from the padding after eos."""
    mask = mask.to(values.dtype)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])  # [B]
    for t in reversed(range(values.shape[1])):
        next_alive = mask[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        next_value = values[:, t + 1] * next_alive if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * next_alive * running
        advantages[:, t] = running * mask[:, t]
    return advantages, (advantages + values) * mask


def whiten(values, mask, eps: float = 1e-8):
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(var + eps) * mask


def ppo_loss(logp, old_logp, advantages, values, old_values, returns, mask, clip_eps=0.2, value_clip=0.2,
             value_coef=0.5):
    """Per-token tensors [B, N] -> (loss, stats): clipped policy surrogate plus value_coef times the clipped value
    loss 0.5·max((V - R)², (V_clipped - R)²), both averaged over the completion tokens of the batch."""
    policy = masked_mean(clipped_surrogate(logp, old_logp, advantages, clip_eps), mask)
    clipped_values = old_values + (values - old_values).clamp(-value_clip, value_clip)
    value_error = torch.maximum((values - returns) ** 2, (clipped_values - returns) ** 2)
    value = 0.5 * masked_mean(value_error, mask)
    return policy + value_coef * value, {"policy_loss": policy.item(), "value_loss": value.item()}


def train_ppo(model, prompts, reward_fn: RewardFn, pad_id: int, eos_token_id=None, config: PPOConfig = PPOConfig(),
              params=None, reference=None, value_head=None) -> Iterator[dict]:
    """Yield {"step", "reward", "loss", "kl", ...} after each rollout batch and its PPO epochs."""
    params = trainable_parameters(model, params)
    device = next(model.parameters()).device
    value_head = value_head or ValueHead(model.config.hidden_size, device=device)
    reference = reference if reference is not None else frozen_reference(model)
    optimizer = torch.optim.AdamW([{"params": params, "lr": config.lr},
                                   {"params": value_head.parameters(), "lr": config.value_lr}], weight_decay=0.0)
    generator = torch.Generator(device).manual_seed(config.seed)
    stream = prompt_stream(prompts, config.prompts_per_step, config.seed, model.config.vocab_size)
    for step in range(config.steps):
        model.eval()
        rollout = draw(model, next(stream), 1, pad_id, config.max_new_tokens, config.temperature, eos_token_id,
                       generator)
        scores, mask = score(reward_fn, rollout), rollout.completion_mask
        ref_logp = reference_logprobs(model, reference, rollout, config.temperature)
        with torch.no_grad():
            _, old_values = policy_and_values(model, value_head, rollout, config.temperature)
            rewards = shaped_rewards(scores, rollout.logprobs, ref_logp, mask, config.kl_coef)
            advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
            advantages = whiten(advantages, mask)
        model.train()
        for _ in range(config.updates_per_batch):
            logp, values = policy_and_values(model, value_head, rollout, config.temperature)
            loss, stats = ppo_loss(logp, rollout.logprobs, advantages, values, old_values, returns, mask,
                                   config.clip_eps, config.value_clip, config.value_coef)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)  # apart: the critic's gradients must not
            torch.nn.utils.clip_grad_norm_(value_head.parameters(), config.grad_clip)  # shrink the policy's
            optimizer.step()
        kl = masked_mean(rollout.logprobs - ref_logp, mask).item()
        yield {"step": step, "reward": scores.mean().item(), "loss": loss.item(), "kl": kl, **stats}
