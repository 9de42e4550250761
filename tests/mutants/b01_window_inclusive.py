"""B1 (NVIDIA/Megatron-LM#3690; B2 ml-explore/mlx-lm#390 and B3 sgl-project/sglang#34273 are the same off-by-one):
a FlashAttention-style `window_size=(left, 0)` is inclusive, and `(sliding_window, 0)` was passed, so a query sees
sliding_window + 1 keys (129 on the real model). The first query with that many keys sits at position W."""

from tests.mutants.base import Expect, Mutant

EXPECT = Expect("sliding_attention", "attention", position=16)


class WindowInclusive(Mutant):
    bug = "B1: window of W + 1 keys"

    def misread(self, config):
        left = config.sliding_window  # should have been sliding_window - 1
        return config.replace(sliding_window=left + 1)  # keys left..0 before the query, both ends included


CANDIDATE = WindowInclusive()
