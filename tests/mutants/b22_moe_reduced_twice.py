"""B22 (sgl-project/sglang#37187): the MoE output all-reduced over the TP group and then reduce-scattered over the
same group again: the MoE output times the TP degree (2 here). Exact up to the first MoE."""

from gptoss_model import model as M
from tests.mutants.base import Expect, Mutant, become

EXPECT = Expect("sliding_attention", "moe")
TP = 2


class ReducedTwiceMLP(M.GptOssMLP):
    def forward(self, x):
        return super().forward(x) * TP


class MoEReducedTwice(Mutant):
    bug = "B22: MoE output x TP"

    def edit_layer(self, layer, index):
        become(layer.mlp, ReducedTwiceMLP)


CANDIDATE = MoEReducedTwice()
