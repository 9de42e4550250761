"""B2 (ml-explore/mlx-lm#390), its cache half: a rotating KV cache that keeps `window` keys instead of window - 1,
with a decode-time mask that lets the new token see all of them: W + 1 keys per query while decoding. A full
prefill is right (the isolated and accumulated columns pass); only the cached-decoding column shows it, from the
first decoded position that has W keys behind it."""

from gptoss_model.model import KVCache, attention_masks
from tests.mutants.base import Expect, Mutant

EXPECT = Expect("sliding_attention", "attention", position=16, column="cached")


class CacheWindowPlusOne(Mutant):
    bug = "B2: KV cache and decode mask one key too long"

    def decode_config(self):
        return self.config.replace(sliding_window=self.config.sliding_window + 1)

    def new_cache(self):
        return KVCache(self.decode_config())

    def masks(self, shape, cache, device):
        config = self.config if cache is None else self.decode_config()
        return attention_masks(config, shape, None, cache, device)[0]


CANDIDATE = CacheWindowPlusOne()
