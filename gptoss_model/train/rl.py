"""What GRPO and PPO share: drawing prompts, sampling a rollout, scoring it with the user's reward function, and
the log-probabilities of the completion under the policy and under the frozen reference."""

import copy
import math
from collections.abc import Callable, Sequence

import torch

from gptoss_model.train.errors import TrainingInputError
from gptoss_model.train.logprobs import token_logprobs
from gptoss_model.train.lora import adapters, adapters_disabled
from gptoss_model.train.rollout import Rollout, left_pad, sample

RewardFn = Callable[[list[int], list[int]], float]  # (prompt ids, completion ids incl. eos) -> reward


def check_prompts(prompts: Sequence[Sequence[int]], vocab_size: int) -> None:
    if not prompts:
        raise TrainingInputError("the prompt dataset is empty: expected at least one prompt")
    for i, p in enumerate(prompts):
        if not isinstance(p, (list, tuple)) or len(p) == 0:
            raise TrainingInputError(f"prompt {i} is empty or not a list: expected a list of token ids")
        if not all(isinstance(t, int) and 0 <= t < vocab_size for t in p):
            raise TrainingInputError(f"prompt {i}: expected token ids in 0..{vocab_size - 1}, got {list(p)[:8]}")


def prompt_stream(prompts, per_step: int, seed: int, vocab_size: int):
    """Endless lists of `per_step` prompts, each pass over the prompts in a new order drawn from `seed`."""
    check_prompts(prompts, vocab_size)
    generator = torch.Generator().manual_seed(seed)
    order = []
    while True:
        while len(order) < per_step:
            order += torch.randperm(len(prompts), generator=generator).tolist()
        yield [list(prompts[i]) for i in order[:per_step]]
        order = order[per_step:]


def draw(model, prompts, copies: int, pad_id: int, max_new_tokens: int, temperature: float, eos_token_id,
         generator) -> Rollout:
    """Sample `copies` completions of every prompt; rows of one prompt are adjacent (rows g·copies ...)."""
    if max_new_tokens < 1:
        raise TrainingInputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    repeated = [p for p in prompts for _ in range(copies)]
    ids, mask = left_pad(repeated, pad_id)
    device = next(model.parameters()).device
    return sample(model, ids.to(device), mask.to(device), max_new_tokens, temperature, eos_token_id, generator)


def score(reward_fn: RewardFn, rollout: Rollout) -> torch.Tensor:
    """Call the reward function on every (prompt, completion) pair -> rewards [B] (float32); a function that raises
    or returns something other than a finite number stops training with a TrainingInputError naming the row."""
    rewards = []
    for row in range(rollout.input_ids.shape[0]):
        P = rollout.prompt_length
        prompt = rollout.input_ids[row, :P][rollout.attention_mask[row, :P] > 0]  # without the left padding
        completion = rollout.completions[row][rollout.completion_mask[row]]
        try:
            value = float(reward_fn(prompt.tolist(), completion.tolist()))
        except Exception as error:  # the user's code: report it in one line, whatever it raised
            name = type(error).__name__
            raise TrainingInputError(f"the reward function raised {name} on sample {row}: {error}") from error
        if not math.isfinite(value):
            raise TrainingInputError(f"the reward function returned {value} for sample {row}; expected a finite number")
        rewards.append(value)
    return torch.tensor(rewards, dtype=torch.float32, device=rollout.input_ids.device)


def completion_logprobs(model, rollout: Rollout, temperature: float) -> torch.Tensor:
    """Recompute, with one full forward pass, the log-probability of each completion token -> [B, N]."""
    logp = token_logprobs(model, rollout.input_ids, rollout.attention_mask, temperature)  # [B, P + N - 1]
    return logp[:, rollout.prompt_length - 1 :]


def frozen_reference(model):
    """The KL anchor. With LoRA adapters it is the same model with its adapters switched off (no copy); without,
    a frozen copy of the model as it is now."""
    if adapters(model):
        return None
    reference = copy.deepcopy(model).eval()
    return reference.requires_grad_(False)


@torch.no_grad()
def reference_logprobs(model, reference, rollout: Rollout, temperature: float) -> torch.Tensor:
    if reference is not None:
        return completion_logprobs(reference, rollout, temperature)
    with adapters_disabled(model):
        return completion_logprobs(model, rollout, temperature)
