"""What every mutant is made of: gptoss_model's readable candidate with one real-world bug put back in.

A mutant (one file per bug in this folder, run as `verify --candidate tests/mutants/NAME.py:CANDIDATE`) is a
subclass of the `gptoss_model` built-in that changes one thing, in one of four places, the way the bug was made:

- `misread(config)`: the implementation read the checkpoint's config wrongly (a hard-coded window, `truncate`
  ignored, `rope_scaling` not found...). Its rotary table, masks and layers are all built from the misread config.
- `edit_rotary(rotary)`: its rotary table (inverse frequencies, YaRN's attention factor) is computed wrongly.
- `edit_layer(layer, index)`: one module of its decoder layer does the wrong thing (`become` gives it a subclass
  that overrides one method) or its loader put the wrong tensor in (`put` replaces a parameter; never in place,
  because verify hands the same tensors to the reference).
- `masks(shape, cache, device)` / `new_cache()` (the built-in's own methods): its masks or its KV cache are wrong,
  e.g. only while decoding.

Nothing is patched globally, so a mutant and the reference run side by side in one process. EXPECT says where
`verify` must point: the first failing layer's kind, component and, where the bug has one, the first failing
token position.
"""

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from gptoss_convert.candidates.builtin_gptoss import GptossModelCandidate
from gptoss_model import model as M


@dataclasses.dataclass(frozen=True)
class Expect:
    attention_type: str  # the kind of the first failing layer
    component: str  # its first failing component
    position: int | None = None  # the first failing token position, where the bug has a signature one
    column: str = "isolated"  # the column it fails in first ("cached": only when decoding through a KV cache)


class Mutant(GptossModelCandidate):
    bug = ""  # the bug it re-enacts (its row in docs/mutants.md)

    def __init__(self):
        super().__init__("eager")
        self.name = f"mutant:{type(self).__name__}"

    def setup(self, context):
        super().setup(dataclasses.replace(context, config=self.misread(context.config)))
        self.edit_rotary(self.rotary)

    def build_layer(self, index, config, tensors):
        built = super().build_layer(index, self.config, tensors)
        self.edit_layer(built.layer, index)
        return built

    def misread(self, config):
        return config

    def edit_rotary(self, rotary) -> None:
        pass

    def edit_layer(self, layer, index) -> None:
        pass


def become(module: nn.Module, subclass: type) -> nn.Module:
    """Make `module` an instance of `subclass` (a subclass of its class that only overrides methods)."""
    assert issubclass(subclass, type(module)), f"{subclass.__name__} must subclass {type(module).__name__}"
    module.__class__ = subclass
    return module


def put(module: nn.Module, name: str, tensor: torch.Tensor) -> None:
    """Replace parameter `name` of `module` by `tensor` (the shared original is left untouched)."""
    setattr(module, name, nn.Parameter(tensor, requires_grad=False))


# ---- the readable modules, with the one step a bug changes made overridable ------------------------------------


class AttentionWith(M.GptOssAttention):
    """GptOssAttention, whose attention kernel is already its own method (`attend`): mutants override that."""


class ExpertsWith(M.GptOssExperts):
    """GptOssExperts.forward (readable loop) with the activation as a method (`activation`)."""

    def activation(self, gate_up):
        return M.clamped_swiglu(gate_up, self.alpha, self.limit)

    def forward(self, x, weights, indices):
        out = torch.zeros_like(x)
        for e in indices.unique().tolist():
            token, slot = torch.where(indices == e)
            h = x[token] @ self.gate_up_proj[e].T + self.gate_up_proj_bias[e]
            y = self.activation(h) @ self.down_proj[e].T + self.down_proj_bias[e]
            out.index_add_(0, token, (y * weights[token, slot, None]).to(x.dtype))
        return out


class RouterWith(M.GptOssTopKRouter):
    """GptOssTopKRouter.forward with the top-k routing as a method (`route`)."""

    def route(self, logits):
        return M.route(logits, self.top_k)

    def forward(self, x):
        logits = F.linear(x, self.weight, self.bias)
        weights, indices = self.route(logits)
        return logits, weights, indices
