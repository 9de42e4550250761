"""B19, first half (pytorch/torchtitan#2258): `route_norm=False`: the softmax taken over all experts and the
selected weights not renormalised, so they sum to less than one."""

import torch

from tests.mutants.base import Expect, Mutant, RouterWith, become

EXPECT = Expect("sliding_attention", "expert_weights")


class UnnormalisedRouter(RouterWith):
    def route(self, logits):
        scores = torch.softmax(logits, dim=-1)
        indices = torch.topk(logits, self.top_k, dim=-1).indices
        return scores.gather(-1, indices), indices  # route_norm=False: no division by their sum


class NoRouteNorm(Mutant):
    bug = "B19: no route_norm"

    def edit_layer(self, layer, index):
        become(layer.mlp.router, UnnormalisedRouter)


CANDIDATE = NoRouteNorm()
