"""B14 (AI-Hypercomputer/maxtext#2294; B15's second half, NVIDIA/TensorRT-LLM#16378 `is_neox=False`): rotary
pairs taken interleaved, (x0, x1), (x2, x3)..., where gpt-oss rotates the two halves of each head, (x_i, x_i+d/2).
At position 0 nothing rotates, so the error starts at position 1."""

import torch

from tests.mutants.base import AttentionWith, Expect, Mutant, become

EXPECT = Expect("sliding_attention", "attention", position=1)


def rotate_interleaved(x, cos, sin):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)


class InterleavedRotaryAttention(AttentionWith):
    def project(self, x, position_embeddings):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        return rotate_interleaved(q, cos, sin), rotate_interleaved(k, cos, sin), v


class InterleavedRotary(Mutant):
    bug = "B14: interleaved rotary pairs"

    def edit_layer(self, layer, index):
        become(layer.self_attn, InterleavedRotaryAttention)


CANDIDATE = InterleavedRotary()
