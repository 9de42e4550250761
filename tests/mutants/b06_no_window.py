"""B6 (NVIDIA/TensorRT-Model-Connect#399; B7 openvinotoolkit/openvino#32911 had the same effect): the sliding
window not implemented, a full causal mask on every layer. Short prompts pass; the sliding layers go wrong at
position W."""

from gptoss_model.config import FULL
from tests.mutants.base import Expect, Mutant

EXPECT = Expect("sliding_attention", "attention", position=16)


class NoWindow(Mutant):
    bug = "B6: no sliding window"

    def misread(self, config):
        return config.replace(layer_types=(FULL,) * config.num_hidden_layers)


CANDIDATE = NoWindow()
