"""B5 (vllm-project/vllm#30887): an attention kernel that walks the keys in blocks masked only the blocks wholly
outside the sliding window; the keys of a block that straddles the window's start were all read. Here blocks of 8
keys: a query at position W (16) also sees key 0."""

import torch

from gptoss_model import model as M
from tests.mutants.base import AttentionWith, Expect, Mutant, become

EXPECT = Expect("sliding_attention", "attention", position=16)
BLOCK = 8


class BlockMaskedAttention(AttentionWith):
    def attend(self, q, k, v, sinks, keep, scaling):
        if self.sliding_window is not None:
            first = keep.int().argmax(dim=-1, keepdim=True)  # [B, 1, T, 1] the first key inside the window
            slot = torch.arange(keep.shape[-1], device=keep.device)
            keep = keep | ((slot >= first // BLOCK * BLOCK) & (slot < first))  # its whole block is read
        return M.attention_with_sinks(q, k, v, sinks, keep, scaling)


class OutOfWindowBlocks(Mutant):
    bug = "B5: unmasked out-of-window keys"

    def edit_layer(self, layer, index):
        become(layer.self_attn, BlockMaskedAttention)


CANDIDATE = OutOfWindowBlocks()
