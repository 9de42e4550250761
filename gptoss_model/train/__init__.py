"""Training gpt-oss in plain PyTorch: SFT on chat data, GRPO and PPO, LoRA adapters (docs/training.md).

Nothing here imports Transformers or gptoss_convert: conversations arrive as a render function (the checkpoint's
chat template) and an encode function (its tokenizer), which `scripts/train.py` builds.
"""

from gptoss_model.train.adapters_io import load_adapters, save_adapters
from gptoss_model.train.checkpointing import disable_activation_checkpointing, enable_activation_checkpointing
from gptoss_model.train.data import ChatExample, TokenBatch, collate, tokenize_conversations
from gptoss_model.train.errors import TrainingInputError
from gptoss_model.train.grpo import GRPOConfig, group_advantages, grpo_loss, k3_kl, train_grpo
from gptoss_model.train.logprobs import logprobs_from_logits, token_logprobs
from gptoss_model.train.lora import adapters_disabled, attach_lora, merge_lora
from gptoss_model.train.ppo import PPOConfig, ValueHead, gae, ppo_loss, train_ppo
from gptoss_model.train.rollout import Rollout, left_pad, sample
from gptoss_model.train.sft import SFTConfig, sft_loss, train_sft

__all__ = [
    "ChatExample", "GRPOConfig", "PPOConfig", "Rollout", "SFTConfig", "TokenBatch", "TrainingInputError", "ValueHead",
    "adapters_disabled", "attach_lora", "collate", "disable_activation_checkpointing", "enable_activation_checkpointing",
    "gae", "group_advantages", "grpo_loss", "k3_kl", "left_pad", "load_adapters", "logprobs_from_logits", "merge_lora",
    "ppo_loss", "sample", "save_adapters", "sft_loss", "token_logprobs", "tokenize_conversations", "train_grpo",
    "train_ppo", "train_sft",
]
