"""Sabotage (tests/sabotage.py): the `+ 1` on the clamped up projection left out of gpt-oss's SwiGLU."""

import torch

from tests.mutants.base import Expect, ExpertsWith, Mutant, become

EXPECT = Expect("sliding_attention", "moe")


class NoPlusOneExperts(ExpertsWith):
    def activation(self, gate_up):
        gate = gate_up[..., 0::2].clamp(max=self.limit)
        up = gate_up[..., 1::2].clamp(-self.limit, self.limit)
        return up * gate * torch.sigmoid(gate * self.alpha)


class MissingPlusOne(Mutant):
    bug = "sabotage: no +1 on up"

    def edit_layer(self, layer, index):
        become(layer.mlp.experts, NoPlusOneExperts)


CANDIDATE = MissingPlusOne()
