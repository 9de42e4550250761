"""Chat data for supervised fine-tuning: conversations -> token ids + a mask of the assistant's tokens.

A conversation is a list of messages `{"role": ..., "content": ...}` (Transformers' chat format). It is rendered to
text by the checkpoint's chat template (chat.py), tokenized with character offsets, and every token inside an
assistant turn is marked. In the harmony format (docs/training.md, "Chat data") an assistant turn reads
`<|start|>assistant ... <|end|>` (or `<|return|>`, `<|call|>`); the generation prompt ends right after
`<|start|>assistant`, so the tokens the model must learn to produce are everything after the role name up to and
including the end marker. Marking by character span works whether the markers are special tokens or not.
"""

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from gptoss_model.train.errors import TrainingInputError

# the role header `<|start|>assistant`, then the turn's channel, message and end marker
ASSISTANT_TURN = re.compile(r"<\|start\|>assistant(.*?(?:<\|end\|>|<\|return\|>|<\|call\|>))", re.DOTALL)

Encoder = Callable[[str], tuple[list[int], list[tuple[int, int]]]]  # text -> (token ids, character span per token)


@dataclass(frozen=True)
class ChatExample:
    input_ids: list[int]
    assistant_mask: list[bool]  # True where the token belongs to an assistant turn (the loss is taken there)


def assistant_spans(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of what the assistant produces in each of its turns of rendered harmony text."""
    return [match.span(1) for match in ASSISTANT_TURN.finditer(text)]


def mask_from_spans(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[bool]:
    """True for each token whose characters lie inside one of `spans`."""
    return [any(lo <= start and end <= hi and end > start for lo, hi in spans) for start, end in offsets]


def check_conversation(messages, index: int) -> None:
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise TrainingInputError(f"conversation {index}: expected a list of {{'role': ..., 'content': ...}} messages")
    if not any(m["role"] == "assistant" for m in messages):
        roles = ", ".join(m["role"] for m in messages) or "no messages"
        raise TrainingInputError(f"conversation {index} has no assistant turn (roles: {roles}); nothing to learn from")


def tokenize_conversations(conversations, render: Callable[[list], str], encode: Encoder) -> list[ChatExample]:
    """Render, tokenize and mask every conversation; refuse an empty dataset and turns the mask cannot find."""
    if not conversations:
        raise TrainingInputError("the dataset is empty: expected at least one conversation with an assistant turn")
    examples = []
    for index, messages in enumerate(conversations):
        check_conversation(messages, index)
        text = render(messages)
        ids, offsets = encode(text)
        mask = mask_from_spans(offsets, assistant_spans(text))
        if not any(mask):
            raise TrainingInputError(
                f"conversation {index}: the rendered text has no '<|start|>assistant ... <|end|>' turn; "
                "expected a harmony chat template"
            )
        examples.append(ChatExample(list(ids), mask))
    return examples


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # [B, T]  right-padded
    attention_mask: torch.Tensor  # [B, T]  1 for real tokens
    loss_mask: torch.Tensor  # [B, T]  True where the token is a target (assistant token)


def collate(examples: Sequence[ChatExample], pad_id: int, max_len: int | None = None) -> TokenBatch:
    """Right-pad a list of examples into one batch (truncated to `max_len` tokens when given)."""
    rows = [(e.input_ids[:max_len], e.assistant_mask[:max_len]) for e in examples]
    T = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), T, dtype=torch.long)
    loss_mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, (ids, mask) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        loss_mask[i, : len(ids)] = torch.tensor(mask)
    return TokenBatch(input_ids, attention_mask, loss_mask)
