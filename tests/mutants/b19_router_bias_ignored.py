"""B19, second half (pytorch/torchtitan#2258): the router built without a bias, so the checkpoint's
`mlp.router.bias` was never loaded. The router logits are wrong before anything else."""

import torch

from tests.mutants.base import Expect, Mutant, put

EXPECT = Expect("sliding_attention", "router_logits")


class RouterBiasIgnored(Mutant):
    bug = "B19: router bias ignored"

    def edit_layer(self, layer, index):
        put(layer.mlp.router, "bias", torch.zeros_like(layer.mlp.router.bias))


CANDIDATE = RouterBiasIgnored()
