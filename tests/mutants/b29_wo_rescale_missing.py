"""B29 (kekzl/imp PR #808): a 2^-4 rescale of a weight applied on the exponent bits, which left part of the tensor
unscaled (16x too big); the attention output projection (`wo`) came out 88 % larger in L2. Here the whole of
o_proj's weight keeps the 2^4."""

from tests.mutants.base import Expect, Mutant, put

EXPECT = Expect("sliding_attention", "attention")


class WoRescaleMissing(Mutant):
    bug = "B29: tensor scaled wrongly"

    def edit_layer(self, layer, index):
        o_proj = layer.self_attn.o_proj
        put(o_proj, "weight", o_proj.weight * 2**4)


CANDIDATE = WoRescaleMissing()
