"""One implementation (a candidate or the reference) as verify calls it: every call guarded and every returned
tensor checked against the protocol (candidates/protocol.py), so a broken candidate ends in one line naming it,
the layer and the component. The three columns of a layer are run here; measuring is compare.py's job.

  isolated     run(reference input of the layer)                       one call per prompt
  accumulated  run(the candidate's own previous output)                one call per prompt
  cached       run(first `split` tokens, cache), then run(one token, cache) for each later one, up to
               CACHED_WINDOWS windows of tokens: the KV-cache path against the reference's full prefill
"""

import torch

from gptoss_convert.candidates.protocol import (BUILD, LAYER_COMPONENTS, RUN, check_tensor, component_shape, guarded,
                                                provides)
from gptoss_convert.errors import CandidateError

CACHED_WINDOWS = 3  # the cached column decodes token by token up to 3 sliding windows: the window is crossed twice


class Implementation:
    def __init__(self, role: str, obj, described, dtype: torch.dtype):
        self.obj, self.described, self.dtype = obj, described, dtype
        self.who = f"{role} {described.name}"
        self.config = None

    def has(self, method: str) -> bool:
        return provides(self.obj, method)

    def capabilities(self) -> dict:
        return {m: self.has(m) for m in ("build_layer", "embed", "final_norm", "head", "run_model")}

    def setup(self, context) -> None:
        self.config = context.config
        if self.has("setup"):
            with guarded(self.who, "setup()", BUILD):
                self.obj.setup(context)

    def build_layer(self, index: int, tensors: dict):
        with guarded(self.who, f"layer {index} build_layer()", BUILD):
            layer = self.obj.build_layer(index, self.config, tensors)
        if not callable(getattr(layer, "run", None)):
            raise_build(self.who, f"layer {index} build_layer() returned a {type(layer).__name__} without run()")
        return layer

    def run(self, layer, index: int, x: torch.Tensor, positions: torch.Tensor, cache=None) -> dict:
        """x [1, T, H] -> the components the layer returned, checked."""
        where = f"layer {index} ({self.config.layer_types[index]})"
        with guarded(self.who, f"{where} run()", RUN):
            out = layer.run(x, positions, cache=cache) if cache is not None else layer.run(x, positions)
        if not isinstance(out, dict):
            raise_run(self.who, f"{where} run() returned a {type(out).__name__}, expected a dict of tensors")
        B, T = positions.shape
        checked = {}
        for name in LAYER_COMPONENTS:
            if out.get(name) is not None:
                dtype = None if name == "expert_indices" else self.dtype
                checked[name] = check_tensor(self.who, where, name, out[name], component_shape(name, self.config, B, T),
                                             dtype)
        return checked

    def run_cached(self, layer, index: int, x: torch.Tensor, positions: torch.Tensor, split: int) -> dict:
        """Prefill x[:, :split] into a fresh cache, then one token at a time; the outputs joined along T."""
        with guarded(self.who, f"layer {index} new_cache()", RUN):
            cache = layer.new_cache()
        steps = [self.run(layer, index, x[:, :split], positions[:, :split], cache)]
        for t in range(split, x.shape[1]):
            steps.append(self.run(layer, index, x[:, t:t + 1], positions[:, t:t + 1], cache))
        names = set.intersection(*(set(s) for s in steps))
        return {name: torch.cat([s[name] for s in steps], dim=1) for name in names}

    def model_part(self, method: str, tensors: dict, value: torch.Tensor, tokens: int) -> torch.Tensor:
        """embed / final_norm / head, checked: [1, T, H] (or [1, T, V] for head)."""
        with guarded(self.who, f"{method}()", RUN):
            out = getattr(self.obj, method)(tensors, value)
        name = "logits" if method == "head" else "hidden"
        return check_tensor(self.who, method + "()", name, out, component_shape(name, self.config, 1, tokens),
                            self.dtype)

    def run_model(self, token_ids: torch.Tensor) -> dict:
        """The whole-model fallback: {"hidden_states": [L + 1 x [1, T, H]], "logits": [1, T, V]}, checked."""
        with guarded(self.who, "run_model()", RUN):
            out = self.obj.run_model(token_ids)
        T, layers = token_ids.shape[1], self.config.num_hidden_layers
        if not isinstance(out, dict):
            raise_run(self.who, f"run_model() returned a {type(out).__name__}, expected a dict")
        checked = {}
        if out.get("hidden_states") is not None:
            states = list(out["hidden_states"])
            if len(states) != layers + 1:
                raise_run(self.who, f"run_model() hidden_states has {len(states)} tensors, expected {layers + 1} "
                                    "(after the embedding and after each layer)")
            shape = component_shape("hidden", self.config, 1, T)
            checked["hidden_states"] = [check_tensor(self.who, "run_model()", f"hidden_states[{i}]", h, shape,
                                                     self.dtype) for i, h in enumerate(states)]
        if out.get("logits") is not None:
            checked["logits"] = check_tensor(self.who, "run_model()", "logits", out["logits"],
                                             component_shape("logits", self.config, 1, T), self.dtype)
        return checked


def raise_build(who: str, message: str):
    raise CandidateError(f"{who}: {message}", BUILD)


def raise_run(who: str, message: str):
    raise CandidateError(f"{who}: {message}", RUN)


def cached_split(tokens: int, window: int) -> tuple[int, int] | None:
    """(prefill length, tokens covered) of the cached column for a prompt, or None when it is too short."""
    covered = min(tokens, CACHED_WINDOWS * window)
    if covered < 2:
        return None
    return max(1, min(window // 2, covered - 1)), covered
