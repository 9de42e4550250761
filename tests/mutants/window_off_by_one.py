"""Sabotage (tests/sabotage.py): the sliding window one key too wide (W + 1 keys). The first query that can see
W + 1 keys is at position W, so the error starts there exactly."""

from tests.mutants.base import Expect, Mutant

EXPECT = Expect("sliding_attention", "attention", position=16)  # the tiny checkpoint's window


class WindowOffByOne(Mutant):
    bug = "sabotage: window off by one"

    def misread(self, config):
        return config.replace(sliding_window=config.sliding_window + 1)


CANDIDATE = WindowOffByOne()
