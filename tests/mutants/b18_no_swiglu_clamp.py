"""B18 (huggingface/transformers#40197): `swiglu_limit` not passed to the fused SwiGLU, so neither gate nor up is
clamped. Shows only where gate > 7 or |up| > 7: the tiny checkpoint's wide gate/up biases get there."""

import torch

from tests.mutants.base import Expect, ExpertsWith, Mutant, become

EXPECT = Expect("sliding_attention", "moe")


class UnclampedExperts(ExpertsWith):
    def activation(self, gate_up):
        gate, up = gate_up[..., 0::2], gate_up[..., 1::2]
        return (up + 1) * gate * torch.sigmoid(gate * self.alpha)


class NoSwigluClamp(Mutant):
    bug = "B18: no SwiGLU clamp"

    def edit_layer(self, layer, index):
        become(layer.mlp.experts, UnclampedExperts)


CANDIDATE = NoSwigluClamp()
