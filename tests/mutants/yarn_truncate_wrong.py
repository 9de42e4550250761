"""Sabotage (tests/sabotage.py): YaRN's `truncate` read the wrong way round (gpt-oss says false: the correction
range stays fractional)."""

from tests.mutants.base import Expect, Mutant

EXPECT = Expect("sliding_attention", "attention")


class YarnTruncateWrong(Mutant):
    bug = "sabotage: YaRN truncate inverted"

    def misread(self, config):
        return config.replace(rope_truncate=not config.rope_truncate)


CANDIDATE = YarnTruncateWrong()
