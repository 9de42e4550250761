"""Sabotage (tests/sabotage.py): gate and up read as the two halves of gate_up_proj's rows (gpt-oss interleaves
them: gate rows 0, 2, 4..., up rows 1, 3, 5...)."""

import torch

from gptoss_model import model as M
from tests.mutants.base import Expect, ExpertsWith, Mutant, become

EXPECT = Expect("sliding_attention", "moe")


class HalvesExperts(ExpertsWith):
    def activation(self, gate_up):
        gate, up = gate_up.chunk(2, dim=-1)
        return M.clamped_swiglu(torch.stack([gate, up], dim=-1).flatten(-2), self.alpha, self.limit)


class GateUpHalves(Mutant):
    bug = "sabotage: gate/up as halves"

    def edit_layer(self, layer, index):
        become(layer.mlp.experts, HalvesExperts)


CANDIDATE = GateUpHalves()
