"""B27 (NVIDIA-NeMo/Megatron-Bridge#3743; B26 unslothai/unsloth-zoo#272 and B28 ml-explore/mlx-lm#1079 the same
way): `down_proj` loaded in the wrong orientation. It is square when intermediate == hidden (2880 on the real
models, 64 on the tiny checkpoint), so no shape check catches it."""

from tests.mutants.base import Expect, Mutant, put

EXPECT = Expect("sliding_attention", "moe")


class DownProjTransposed(Mutant):
    bug = "B27: square down_proj transposed"

    def edit_layer(self, layer, index):
        experts = layer.mlp.experts
        put(experts, "down_proj", experts.down_proj.transpose(1, 2).contiguous())


CANDIDATE = DownProjTransposed()
