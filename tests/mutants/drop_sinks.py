"""Sabotage (tests/sabotage.py): the sinks dropped. A sink logit of -inf takes no probability mass, so every row
of attention weights sums to one again, as in a plain softmax."""

import torch

from tests.mutants.base import Expect, Mutant, put

EXPECT = Expect("sliding_attention", "attention")


class DropSinks(Mutant):
    bug = "sabotage: sinks dropped"

    def edit_layer(self, layer, index):
        put(layer.self_attn, "sinks", torch.full_like(layer.self_attn.sinks, float("-inf")))


CANDIDATE = DropSinks()
