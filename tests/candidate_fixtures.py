"""Candidates for tests/test_candidates.py, loaded as `tests.candidate_fixtures:NAME` (the package.module:OBJECT
form). Broken ones each break one rule of the protocol (docs/candidates.md); mutants carry one real bug."""

from gptoss_convert.candidates.builtin_gptoss import GptossLayer, GptossModelCandidate


class Nothing:
    """Neither build_layer nor run_model."""


class BuildRaises(GptossModelCandidate):
    def build_layer(self, index, config, tensors):
        raise KeyError("self_attn.qkv.weight")


class _Wrapped(GptossModelCandidate):
    """gptoss_model with its layers' outputs passed through edit(index, outputs, position_ids)."""

    def build_layer(self, index, config, tensors):
        layer = super().build_layer(index, config, tensors)
        owner = self

        class Edited(GptossLayer):
            def run(self, hidden, position_ids, cache=None):
                return owner.edit(index, super().run(hidden, position_ids, cache), position_ids)

        return Edited(layer.layer, index, self)

    def edit(self, index, outputs, position_ids):
        return outputs


class RunRaises(_Wrapped):
    def edit(self, index, outputs, position_ids):
        if index == 1:
            raise RuntimeError("CUDA kernel not found")
        return outputs


class WrongShape(_Wrapped):
    def edit(self, index, outputs, position_ids):
        return {**outputs, "moe": outputs["moe"][:, :-1]}


class WrongDtype(_Wrapped):
    def edit(self, index, outputs, position_ids):
        return {**outputs, "router_logits": outputs["router_logits"].double()}


class NaNFromPosition5(_Wrapped):
    def edit(self, index, outputs, position_ids):
        if index != 2:
            return outputs
        attention = outputs["attention"].clone()
        attention[:, 5:] = float("nan")
        return {**outputs, "attention": attention}


class ReturnsNothing(_Wrapped):
    def edit(self, index, outputs, position_ids):
        return {}


class OnlyLayerOutput(_Wrapped):
    def edit(self, index, outputs, position_ids):
        return {"layer_output": outputs["layer_output"]}


class WindowOffByOne(GptossModelCandidate):
    """real-bugs B1-B3: the window keeps one key too many (W + 1 keys)."""

    def setup(self, context):
        super().setup(context)
        self.config = self.config.replace(sliding_window=self.config.sliding_window + 1)


class CachedWindowOffByOne(GptossModelCandidate):
    """real-bugs B2 (the rotating KV cache one key off the window): prefill is right, but decoding through the cache
    keeps and attends W keys instead of W - 1 + the new one. Only the cached column can see it."""

    def wide(self):
        return self.config.replace(sliding_window=self.config.sliding_window + 1)

    def masks(self, shape, cache, device):
        from gptoss_model.model import attention_masks

        return attention_masks(self.config if cache is None else self.wide(), shape, None, cache, device)[0]

    def new_cache(self):
        from gptoss_model.model import KVCache

        return KVCache(self.wide())


class WholeModel:
    """The whole-model fallback: gptoss_model loaded in one piece, giving per-layer hidden states and logits."""

    name = "whole-gptoss_model"

    def setup(self, context):
        import gptoss_convert

        self.model = gptoss_convert.load_model(str(context.checkpoint_dir), dtype=context.dtype)

    def run_model(self, token_ids):
        normed, states = self.model.model(token_ids, output_hidden_states=True)
        return {"hidden_states": states, "logits": self.model.lm_head(normed)}


class LogitsOnly(WholeModel):
    """The whole-model fallback at its thinnest: logits only."""

    def run_model(self, token_ids):
        return {"logits": super().run_model(token_ids)["logits"]}


def factory():
    """A factory function (the OBJECT may be one)."""
    return GptossModelCandidate("eager")


instance = GptossModelCandidate("eager")  # an instance (the OBJECT may be one)
