"""A window on the wrong layers, the other way round (docs/mutants.md, the checklist, items 1 and 2): the
sliding window applied to every layer. The sliding layers are right; the first full-attention layer (1) goes wrong
at position W, and only a verifier that checks both layer kinds sees it."""

from gptoss_model.config import SLIDING
from tests.mutants.base import Expect, Mutant

EXPECT = Expect("full_attention", "attention", position=16)


class WindowOnEveryLayer(Mutant):
    bug = "window on every layer"

    def misread(self, config):
        return config.replace(layer_types=(SLIDING,) * config.num_hidden_layers)


CANDIDATE = WindowOnEveryLayer()
