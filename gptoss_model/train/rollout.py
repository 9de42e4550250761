"""Sampling completions for RL through the KV cache, keeping each sampled token's log-probability.

Prompts are left-padded into one batch (the model counts positions from each row's first real token), then every
step feeds only the newest token through the cache. A row stops at its first eos token; the rest of the row is
eos padding and is masked out of every loss.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize


@dataclass
class Rollout:
    input_ids: torch.Tensor  # [B, P + N]  left-padded prompt, then the completion
    attention_mask: torch.Tensor  # [B, P + N]  0 on prompt padding
    completion_mask: torch.Tensor  # [B, N]  True on completion tokens up to and including the first eos
    logprobs: torch.Tensor  # [B, N]  log-probability the sampler drew each completion token with (float32)
    prompt_length: int  # P

    @property
    def completions(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_length :]  # [B, N]


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> ids [B, P] and attention mask [B, P], padded on the left."""
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), P, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, P - len(p) :], mask[i, P - len(p) :] = torch.tensor(p), 1
    return ids, mask


@torch.no_grad()
def sample(model, prompt_ids, prompt_mask, max_new_tokens: int, temperature: float = 1.0, eos_token_id=None,
           generator: torch.Generator | None = None) -> Rollout:
    """Draw one completion per prompt row: ids [B, P] -> Rollout with N ≤ max_new_tokens new tokens per row."""
    B, P = prompt_ids.shape
    cache, step_ids, step_mask = model.new_cache(), prompt_ids, prompt_mask
    finished = torch.zeros(B, dtype=torch.bool, device=prompt_ids.device)
    eos = torch.tensor(_as_list(eos_token_id), dtype=torch.long, device=prompt_ids.device)
    tokens, logprobs, alive = [], [], []
    with parametrize.cached():  # LoRA: form W + BA once for the whole rollout, not once per token
        for _ in range(max_new_tokens):
            logits = model(input_ids=step_ids, attention_mask=step_mask, cache=cache)[:, -1].float()  # [B, V]
            logp = F.log_softmax(logits / temperature, dim=-1)  # [B, V]
            token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)  # [B]
            if len(eos):  # a finished row repeats eos; the completion mask leaves it out
                token = torch.where(finished, eos[0], token)
            alive.append(~finished)
            tokens.append(token)
            logprobs.append(logp.gather(-1, token[:, None]).squeeze(-1))
            if len(eos):
                finished = finished | torch.isin(token, eos)
                if bool(finished.all()):
                    break
            step_ids, step_mask = token[:, None], None
    completion = torch.stack(tokens, dim=1)  # [B, N]
    input_ids = torch.cat([prompt_ids, completion], dim=1)  # [B, P + N]
    attention_mask = torch.cat([prompt_mask, torch.ones_like(completion)], dim=1)
    return Rollout(input_ids, attention_mask, torch.stack(alive, dim=1), torch.stack(logprobs, dim=1), P)


def _as_list(token_ids) -> list[int]:
    if token_ids is None:
        return []
    return [token_ids] if isinstance(token_ids, int) else list(token_ids)
