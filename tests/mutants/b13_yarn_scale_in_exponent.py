"""B13 (apache/tvm#18576): YaRN with the correction range rounded and the scale put inside the exponent, the
interpolated frequencies 1/(s·θ)^(2i/d) instead of 1/(s·θ^(2i/d)). Position 0 is not rotated, so the error starts
at position 1."""

import math

import torch

from tests.mutants.base import Expect, Mutant

EXPECT = Expect("sliding_attention", "attention", position=1)


def inv_freq_scale_in_exponent(config) -> torch.Tensor:
    d, base, s = config.head_dim, config.rope_theta, config.rope_scaling_factor
    exponent = torch.arange(0, d, 2, dtype=torch.float32) / d
    extrapolation, interpolation = 1.0 / base**exponent, 1.0 / (s * base) ** exponent

    def correction_dim(rotations):
        return d * math.log(config.rope_original_max_position_embeddings / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = math.floor(correction_dim(config.rope_beta_fast)), math.ceil(correction_dim(config.rope_beta_slow))
    ramp = torch.clamp((torch.arange(d // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    return interpolation * ramp + extrapolation * (1 - ramp)


class YarnScaleInExponent(Mutant):
    bug = "B13: YaRN scale inside the exponent"

    def edit_rotary(self, rotary):
        rotary.inv_freq = inv_freq_scale_in_exponent(self.config).to(rotary.inv_freq.device)


CANDIDATE = YarnScaleInExponent()
