"""B10 (huggingface/transformers#40535): an attention path whose output reshape was missing: the kernel's
[B, heads, T, d] output flattened as if it were [B, T, heads, d], mixing heads and tokens. (The real one sat on
the train-mode, no-cache path only.)"""

from gptoss_model import model as M
from tests.mutants.base import AttentionWith, Expect, Mutant, become

EXPECT = Expect("sliding_attention", "attention")


class HeadsFirstAttention(AttentionWith):
    def attend(self, q, k, v, sinks, keep, scaling):
        return M.attention_with_sinks(q, k, v, sinks, keep, scaling).transpose(1, 2)  # [B, nq, T, d], unfixed


class AttentionOutputLayout(Mutant):
    bug = "B10: attention output layout"

    def edit_layer(self, layer, index):
        become(layer.self_attn, HeadsFirstAttention)


CANDIDATE = AttentionOutputLayout()
