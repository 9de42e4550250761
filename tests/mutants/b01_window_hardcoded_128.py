"""B1, second half (NVIDIA-NeMo/Megatron-Bridge#2656): the window hard-coded to 128 instead of read from the
config's `sliding_window`. Right for the real models by luck; on a checkpoint with another window (16 here) the
sliding layers see too much from position W on."""

from tests.mutants.base import Expect, Mutant

EXPECT = Expect("sliding_attention", "attention", position=16)


class WindowHardcoded(Mutant):
    bug = "B1: window hard-coded to 128"

    def misread(self, config):
        return config.replace(sliding_window=128)


CANDIDATE = WindowHardcoded()
