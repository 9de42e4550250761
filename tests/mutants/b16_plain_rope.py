"""B16 (NVIDIA/TensorRT-Model-Connect#399, part a): the builder read only `rope_parameters` while the hub's config
says `rope_scaling`, so it found no YaRN: plain RoPE, no factor-32 interpolation, no 1.3466 attention factor."""

from tests.mutants.base import Expect, Mutant

EXPECT = Expect("sliding_attention", "attention", position=0)


class PlainRope(Mutant):
    bug = "B16: plain RoPE, no YaRN"

    def misread(self, config):
        return config.replace(rope_scaling_factor=1.0)  # no scaling found: YaRN with factor 1 is plain RoPE


CANDIDATE = PlainRope()
