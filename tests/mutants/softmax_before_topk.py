"""Sabotage (tests/sabotage.py): the softmax taken over all experts before the top-k (gpt-oss: top-k of the raw
logits, then a softmax over those k). Same experts, wrong weights: the routing weights are where it shows first."""

import torch
import torch.nn.functional as F

from tests.mutants.base import Expect, Mutant, RouterWith, become

EXPECT = Expect("sliding_attention", "expert_weights")


class SoftmaxFirst(RouterWith):
    def route(self, logits):
        return torch.topk(F.softmax(logits, dim=-1), self.top_k, dim=-1)


class SoftmaxBeforeTopk(Mutant):
    bug = "sabotage: softmax before top-k"

    def edit_layer(self, layer, index):
        become(layer.mlp.router, SoftmaxFirst)


CANDIDATE = SoftmaxBeforeTopk()
