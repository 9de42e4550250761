"""Sabotage (tests/sabotage.py): the gate clamped to [-limit, limit] (gpt-oss clamps it from above only). Once
gate < -7, gate·sigmoid(1.702·gate) changes by < 5e-5: this needs the tight gate of the mutant tests."""

from gptoss_model import model as M
from tests.mutants.base import Expect, ExpertsWith, Mutant, become

EXPECT = Expect("sliding_attention", "moe")


class GateClampedBothSides(ExpertsWith):
    def activation(self, gate_up):
        gate_up = gate_up.clone()
        gate_up[..., 0::2] = gate_up[..., 0::2].clamp(min=-self.limit)
        return M.clamped_swiglu(gate_up, self.alpha, self.limit)


class ClampGateBothSides(Mutant):
    bug = "sabotage: gate clamped on both sides"

    def edit_layer(self, layer, index):
        become(layer.mlp.experts, GateClampedBothSides)


CANDIDATE = ClampGateBothSides()
