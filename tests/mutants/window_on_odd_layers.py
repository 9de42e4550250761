"""A window on the wrong layers (docs/mutants.md, the checklist, item 1): the window put on the odd
layers instead of the even ones. Layer 0 then attends to everything and fails at position W."""

from gptoss_model.config import FULL, SLIDING
from tests.mutants.base import Expect, Mutant

EXPECT = Expect("sliding_attention", "attention", position=16)


class WindowOnOddLayers(Mutant):
    bug = "window on the odd layers"

    def misread(self, config):
        return config.replace(layer_types=tuple(FULL if t == SLIDING else SLIDING for t in config.layer_types))


CANDIDATE = WindowOnOddLayers()
