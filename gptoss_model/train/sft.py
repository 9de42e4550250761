"""Supervised fine-tuning on chat data: next-token cross-entropy on the assistant's tokens only.

The loss is the mean, over every assistant token in the batch, of -log p(token | everything before it): system,
user and tool tokens are read as context and never predicted (docs/training.md, "SFT").
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from gptoss_model.train.data import ChatExample, TokenBatch, collate
from gptoss_model.train.errors import TrainingInputError
from gptoss_model.train.logprobs import logprobs_from_logits, masked_mean
from gptoss_model.train.lora import trainable_parameters


@dataclass(frozen=True)
class SFTConfig:
    steps: int = 60
    batch_size: int = 8
    lr: float = 1e-2  # tuned for LoRA on the tiny checkpoint; real models want ~1e-4 (LoRA) or ~1e-5 (full)
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_len: int | None = None  # truncate longer examples (tokens)
    seed: int = 0


def sft_loss(model, batch: TokenBatch) -> torch.Tensor:
    """Mean negative log-likelihood of the target tokens: token t + 1 is a target where loss_mask[:, t + 1]."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)  # [B, T, V]
    logp = logprobs_from_logits(logits[:, :-1], batch.input_ids[:, 1:])  # [B, T - 1]
    targets = batch.loss_mask[:, 1:]  # [B, T - 1]
    if not bool(targets.any()):
        raise TrainingInputError("this batch has no assistant tokens to learn from (all were truncated?)")
    return -masked_mean(logp, targets)


def batches(examples: Sequence[ChatExample], batch_size: int, pad_id: int, max_len, seed: int) -> Iterator[TokenBatch]:
    """Endless shuffled batches: each pass over the data in a new order drawn from `seed`."""
    if not examples:
        raise TrainingInputError("the dataset is empty: expected at least one conversation with an assistant turn")
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            chosen = [examples[i] for i in order[start : start + batch_size]]
            yield collate(chosen, pad_id, max_len)


def train_sft(model, examples: Sequence[ChatExample], pad_id: int, config: SFTConfig = SFTConfig(),
              params=None) -> Iterator[dict]:
    """Run `config.steps` optimiser steps on `params` (default: every parameter that requires a gradient), yielding
    {"step", "loss"} after each."""
    params = trainable_parameters(model, params)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    device = next(model.parameters()).device
    model.train()
    stream = batches(examples, config.batch_size, pad_id, config.max_len, config.seed)
    for step in range(config.steps):
        batch = next(stream)
        batch = TokenBatch(*(t.to(device) for t in (batch.input_ids, batch.attention_mask, batch.loss_mask)))
        loss = sft_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        yield {"step": step, "loss": loss.item()}
