"""Control: every overridable module of base.py put in place, nothing changed. It must pass, so a failing mutant
fails because of its bug, not because of the scaffolding."""

from tests.mutants.base import AttentionWith, ExpertsWith, Mutant, RouterWith, become

EXPECT = None  # passes


class Control(Mutant):
    def edit_layer(self, layer, index):
        become(layer.self_attn, AttentionWith)
        become(layer.mlp.experts, ExpertsWith)
        become(layer.mlp.router, RouterWith)


CANDIDATE = Control()
