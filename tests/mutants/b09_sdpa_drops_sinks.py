"""B9 (radixark/miles#1500): the eager/sdpa attention paths dropped the sinks (`s_aux`); only flash attention
applied them. Here the attention goes through torch's scaled_dot_product_attention, which has no sink column."""

import torch.nn.functional as F

from tests.mutants.base import AttentionWith, Expect, Mutant, become

EXPECT = Expect("sliding_attention", "attention")


class SdpaAttention(AttentionWith):
    def attend(self, q, k, v, sinks, keep, scaling):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scaling, enable_gqa=True)
        return out.transpose(1, 2)  # [B, T, nq, d]


class SdpaDropsSinks(Mutant):
    bug = "B9: sdpa path drops the sinks"

    def edit_layer(self, layer, index):
        become(layer.self_attn, SdpaAttention)


CANDIDATE = SdpaDropsSinks()
