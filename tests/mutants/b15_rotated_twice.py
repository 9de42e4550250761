"""B15 (NVIDIA/TensorRT-LLM#16378): `yarn` missing from `is_rope()`, so the unfused path rotated q and k a second
time: twice the angle, and the attention factor applied twice (keys scaled by m²). Wrong from position 0."""

from gptoss_model import model as M
from tests.mutants.base import AttentionWith, Expect, Mutant, become

EXPECT = Expect("sliding_attention", "attention", position=0)


class RotatedTwiceAttention(AttentionWith):
    def project(self, x, position_embeddings):
        q, k, v = super().project(x, position_embeddings)
        cos, sin = position_embeddings
        return M.apply_rotary(q, cos, sin), M.apply_rotary(k, cos, sin), v


class RotatedTwice(Mutant):
    bug = "B15: q and k rotated twice"

    def edit_layer(self, layer, index):
        become(layer.self_attn, RotatedTwiceAttention)


CANDIDATE = RotatedTwice()
