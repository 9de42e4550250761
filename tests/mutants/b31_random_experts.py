"""B31 (tenstorrent/tt-forge-models PR #443): the MXFP4 `*_blocks`/`*_scales` never turned into `gate_up_proj` /
`down_proj`, so the experts kept their random initialisation, silently."""

import torch

from tests.mutants.base import Expect, Mutant, put

EXPECT = Expect("sliding_attention", "moe")


class RandomExperts(Mutant):
    bug = "B31: random experts"

    def edit_layer(self, layer, index):
        experts = layer.mlp.experts
        generator = torch.Generator().manual_seed(index)
        for name in ("gate_up_proj", "down_proj"):
            weight = getattr(experts, name)
            fresh = torch.randn(weight.shape, generator=generator) * weight.shape[-1] ** -0.5
            put(experts, name, fresh.to(weight))


CANDIDATE = RandomExperts()
