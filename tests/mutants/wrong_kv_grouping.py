"""Sabotage (tests/sabotage.py): grouped-query heads read the wrong key/value heads: `repeat` (kv 0, 1, 0, 1)
where gpt-oss needs `repeat_interleave` (0, 0, 1, 1)."""

from gptoss_model import model as M
from tests.mutants.base import AttentionWith, Expect, Mutant, become

EXPECT = Expect("sliding_attention", "attention")


class RepeatedKV(AttentionWith):
    def attend(self, q, k, v, sinks, keep, scaling):
        group = q.shape[1] // k.shape[1]
        # after repeat, query head h finds kv head h % nkv at index h, and repeat_interleave inside is then a no-op
        return M.attention_with_sinks(q, k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1), sinks, keep, scaling)


class WrongKVGrouping(Mutant):
    bug = "sabotage: wrong kv-head grouping"

    def edit_layer(self, layer, index):
        become(layer.self_attn, RepeatedKV)


CANDIDATE = WrongKVGrouping()
