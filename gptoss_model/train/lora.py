"""LoRA adapters in plain PyTorch, attached from outside the model (docs/training.md, "LoRA").

A weight W becomes W + (alpha / r)·B·A with A [r, in] and B [out, r] trained and W frozen (Hu et al. 2021,
"LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685). The sum is added through
`torch.nn.utils.parametrize`, so the same adapter works on an `nn.Linear` (attention projections), on the router's
`F.linear` weight and on the experts' stacked [E, out, in] matrices (one low-rank pair per expert), on the readable
and the fast path alike, without touching model.py. The model computes with exactly the weight that `merge`
writes, so a merged model gives the trained adapter's outputs bit for bit (in bf16 as well).
"""

import contextlib
import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from gptoss_model.train.errors import TrainingInputError

# target name -> (module path suffix, parameter name) inside each decoder layer
TARGETS = {
    "attention": [(f"self_attn.{p}", "weight") for p in ("q_proj", "k_proj", "v_proj", "o_proj")],
    "router": [("mlp.router", "weight")],
    "experts": [("mlp.experts", "gate_up_proj"), ("mlp.experts", "down_proj")],
}
DEFAULT_TARGETS = ("attention", "router")


class LowRankDelta(nn.Module):
    """weight -> weight + scale·B·A; for a stacked [E, out, in] weight, one (A, B) pair per expert."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float, dtype=torch.float32):
        super().__init__()
        *experts, out_features, in_features = weight.shape
        self.A = nn.Parameter(torch.empty(*experts, rank, in_features, device=weight.device, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(*experts, out_features, rank, device=weight.device, dtype=dtype))
        nn.init.kaiming_uniform_(self.A.view(-1, in_features), a=math.sqrt(5))  # B = 0: the model starts unchanged
        self.rank, self.alpha, self.enabled = rank, alpha, True

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        delta = torch.matmul(self.B, self.A) * self.scale  # [(E,) out, in]
        return weight + delta.to(weight.dtype)  # the sum is rounded to the weight's dtype, as the merged model is


def adapter_sites(model, targets=DEFAULT_TARGETS):
    """(module path, module, parameter name) for every weight the targets name, layer by layer."""
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise TrainingInputError(f"unknown LoRA target(s) {unknown}; expected some of {sorted(TARGETS)}")
    for i, layer in enumerate(model.model.layers):
        for target in targets:
            for suffix, param in TARGETS[target]:
                yield f"model.layers.{i}.{suffix}", layer.get_submodule(suffix), param


def attach_lora(model, rank: int = 8, alpha: float = 16.0, targets=DEFAULT_TARGETS, dtype=torch.float32) -> list:
    """Freeze every model parameter and attach a LowRankDelta to each target weight; returns the trainable
    adapter parameters."""
    if rank < 1:
        raise TrainingInputError(f"LoRA rank must be at least 1, got {rank}")
    for p in model.parameters():
        p.requires_grad_(False)
    for _, module, param in adapter_sites(model, targets):
        parametrize.register_parametrization(module, param, LowRankDelta(getattr(module, param), rank, alpha, dtype))
    return [p for p in model.parameters() if p.requires_grad]


def trainable_parameters(model, params=None) -> list:
    """`params` (default: the model's) that require a gradient; refuses an empty list."""
    params = [p for p in (params or model.parameters()) if p.requires_grad]
    if not params:
        raise TrainingInputError("nothing to train: no parameter requires a gradient")
    return params


def adapters(model) -> dict:
    """'<module path>.<parameter>' -> its LowRankDelta, for every attached adapter."""
    found = {}
    for path, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for param, plist in module.parametrizations.items():
                found.update({f"{path}.{param}": d for d in plist if isinstance(d, LowRankDelta)})
    return found


@contextlib.contextmanager
def adapters_disabled(model):
    """Run the base model (the frozen reference of GRPO/PPO) without copying it: every adapter off, then on again."""
    deltas = list(adapters(model).values())
    for d in deltas:
        d.enabled = False
    try:
        yield model
    finally:
        for d in deltas:
            d.enabled = True


def merge_lora(model):
    """Write W + scale·B·A into each adapted weight and remove the adapters; the model is plain again."""
    for name in list(adapters(model)):
        path, _, param = name.rpartition(".")
        parametrize.remove_parametrizations(model.get_submodule(path), param, leave_parametrized=True)
    return model
