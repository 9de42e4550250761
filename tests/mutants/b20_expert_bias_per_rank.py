"""B20 (pytorch/torchtitan#4245): with tensor parallelism the experts' second bias (`mlp2_bias`, Transformers'
`down_proj_bias`) was added on every rank before the reduction: the bias times the TP degree (2 here)."""

from tests.mutants.base import Expect, Mutant, put

EXPECT = Expect("sliding_attention", "moe")
TP = 2


class ExpertBiasPerRank(Mutant):
    bug = "B20: expert bias x TP"

    def edit_layer(self, layer, index):
        experts = layer.mlp.experts
        put(experts, "down_proj_bias", experts.down_proj_bias * TP)


CANDIDATE = ExpertBiasPerRank()
