"""B12 (vllm-project/vllm#27722, sgl-project/sglang#14270): YaRN's correction range always rounded (floor the low
end, ceil the high end) although the checkpoint says `truncate: false`: some inverse frequencies move by up to
76 %, an error that grows with the position."""

from gptoss_model import model as M
from tests.mutants.base import Expect, Mutant

EXPECT = Expect("sliding_attention", "attention")


class YarnAlwaysTruncated(Mutant):
    bug = "B12: YaRN truncate ignored"

    def edit_rotary(self, rotary):
        rotary.inv_freq = M.yarn_inv_freq(self.config.replace(rope_truncate=True)).to(rotary.inv_freq.device)


CANDIDATE = YarnAlwaysTruncated()
