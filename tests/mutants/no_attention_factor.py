"""Sabotage (tests/sabotage.py): YaRN's attention factor (0.1 ln s + 1 = 1.3466 for s = 32) left out of cos and
sin. It scales every query and key, so position 0 is already wrong."""

from tests.mutants.base import Expect, Mutant

EXPECT = Expect("sliding_attention", "attention", position=0)


class NoAttentionFactor(Mutant):
    bug = "sabotage: no YaRN attention factor"

    def edit_rotary(self, rotary):
        rotary.attention_factor = 1.0


CANDIDATE = NoAttentionFactor()
