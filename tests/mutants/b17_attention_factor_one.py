"""B17 (turboderp-org/exllamav3#259, the same class of bug in another YaRN model): YaRN's attention factor computed
as get_mscale(s, mscale) / get_mscale(s, mscale_all_dim), which collapses to 1.0 when both are 1 (gpt-oss wants
0.1 ln s + 1)."""

import math

from tests.mutants.base import Expect, Mutant

EXPECT = Expect("sliding_attention", "attention", position=0)


def get_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


class AttentionFactorOne(Mutant):
    bug = "B17: attention factor 1.0"

    def edit_rotary(self, rotary):
        mscale = mscale_all_dim = 1.0  # what such configs carry
        s = self.config.rope_scaling_factor
        rotary.attention_factor = get_mscale(s, mscale) / get_mscale(s, mscale_all_dim)


CANDIDATE = AttentionFactorOne()
