"""B8 (vllm-project/vllm-metal#212): the sink buffers never bound. There the kernel then computed a plain softmax
(the effect of b09 and drop_sinks); this is the other way an unbound buffer reads, as zeros: a sink logit of 0 in
every head instead of the learned one."""

import torch

from tests.mutants.base import Expect, Mutant, put

EXPECT = Expect("sliding_attention", "attention")


class SinksUnbound(Mutant):
    bug = "B8: sinks read as zeros"

    def edit_layer(self, layer, index):
        put(layer.self_attn, "sinks", torch.zeros_like(layer.self_attn.sinks))


CANDIDATE = SinksUnbound()
