"""Run one adapter (candidates/protocol.py) over a checkpoint, layer by layer, and collect its outputs under the
goldens' tensor names (goldens_files.py): rows of all prompts stacked, on the CPU.

Two uses, one loop:
  recording (`goldens`): the reference is fed its own previous output; each layer's input is kept too
  replaying (`verify --goldens`): a candidate is fed the recorded inputs (teacher-forced, the isolated column)
Streams: one layer's weights at a time, as `verify` does. Nothing here imports Transformers.
"""

import torch

from gptoss_convert.candidates.protocol import LAYER_COMPONENTS, Context
from gptoss_convert.goldens_files import layer_name

EMBED, NORM, HEAD = "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"


class Session:
    """The checkpoint, its config and the prompts' rows, shared by every stage."""

    def __init__(self, checkpoint_dir, ckpt, source_map, config, token_ids, positions, prompt, dtype, device):
        self.checkpoint_dir, self.ckpt, self.source_map, self.config = checkpoint_dir, ckpt, source_map, config
        self.dtype, self.device = dtype, device
        self.token_ids, self.positions, self.prompt = token_ids, positions, prompt  # [T] int64 each
        self.spans = []  # (start, end) rows of each prompt
        start = 0
        for p in range(int(prompt.max()) + 1 if len(prompt) else 0):
            end = start + int((prompt == p).sum())
            self.spans.append((start, end))
            start = end

    def per_prompt(self, rows: torch.Tensor) -> list:
        """[T, X] -> [[1, T_p, X] on the device] per prompt."""
        return [rows[s:e][None].to(device=self.device, dtype=self.dtype) for s, e in self.spans]

    def global_tensor(self, name: str) -> torch.Tensor:
        from gptoss_convert.remap import global_tensors

        return global_tensors(self.ckpt, self.dtype, self.source_map, names=(name,))[name].to(self.device)


def stacked(tensors: list) -> torch.Tensor:
    """Per-prompt [1, T_p, X] -> [ΣT_p, X] on the CPU."""
    return torch.cat([t.reshape(-1, t.shape[-1]).cpu() for t in tensors]).contiguous()


def run_adapter(impl, session: Session, recorded: dict | None = None, progress=False) -> tuple[dict, dict]:
    """impl: a columns.Implementation (every call guarded, every tensor checked, as in `verify`).
    -> (inputs, outputs): the hidden states each stage was fed and what the implementation produced, goldens names.
    recorded None: feed it its own previous outputs (recording); else feed recorded[...] (replaying)."""
    s = session
    impl.setup(Context(s.checkpoint_dir, s.config, s.dtype, s.device))
    if not impl.has("build_layer"):
        return {}, _run_whole_model(impl, s)
    inputs, outputs = {}, {}
    with torch.no_grad():
        hidden = None
        if impl.has("embed"):
            weight = {EMBED: s.global_tensor(EMBED)}
            hidden = [impl.model_part("embed", weight, s.token_ids[a:b][None].to(s.device), b - a) for a, b in s.spans]
            outputs["embedding"] = stacked(hidden)
        layers = range(s.config.num_hidden_layers)
        if progress:
            from tqdm import tqdm

            layers = tqdm(layers, desc=impl.who, unit="layer", leave=False)
        for i in layers:
            if recorded is not None:
                hidden = s.per_prompt(recorded[layer_name(i, "input")])
            inputs[layer_name(i, "input")] = stacked(hidden)
            hidden = _run_layer(impl, s, i, hidden, outputs)
        if recorded is not None:
            hidden = s.per_prompt(recorded["final_norm.input"])
        inputs["final_norm.input"] = stacked(hidden)
        _run_head(impl, s, hidden, outputs)
    return inputs, outputs


def _run_layer(impl, s: Session, i: int, hidden: list, outputs: dict) -> list:
    """Layer i on every prompt; its components go to outputs; returns its outputs (or its inputs if it gave none)."""
    from gptoss_convert.remap import layer_tensors

    tensors = layer_tensors(s.ckpt, i, s.dtype, s.source_map, device=s.device if s.device != "cpu" else None)
    layer = impl.build_layer(i, {name: t.to(s.device) for name, t in tensors.items()})
    per_prompt = [impl.run(layer, i, x, s.positions[a:b][None].to(s.device)) for (a, b), x in zip(s.spans, hidden)]
    del layer, tensors
    for component in LAYER_COMPONENTS:
        if all(component in got for got in per_prompt):
            outputs[layer_name(i, component)] = stacked([got[component] for got in per_prompt])
    if all("layer_output" in got for got in per_prompt):
        return [got["layer_output"] for got in per_prompt]
    return hidden


def _run_head(impl, s: Session, hidden: list, outputs: dict) -> None:
    if not impl.has("final_norm"):
        return
    weight = {NORM: s.global_tensor(NORM)}
    normed = [impl.model_part("final_norm", weight, x, x.shape[1]) for x in hidden]
    outputs["final_norm"] = stacked(normed)
    if impl.has("head"):
        weight = {HEAD: s.global_tensor(HEAD)}
        outputs["logits"] = stacked([impl.model_part("head", weight, x, x.shape[1]) for x in normed])


def _run_whole_model(impl, s: Session) -> dict:
    """The whole-model fallback: end-to-end hidden states (the accumulated column) and logits, where given."""
    per_prompt = [impl.run_model(s.token_ids[a:b][None].to(s.device)) for a, b in s.spans]
    outputs = {}
    if all("hidden_states" in got for got in per_prompt):
        outputs["embedding"] = stacked([got["hidden_states"][0] for got in per_prompt])
        for i in range(s.config.num_hidden_layers):
            outputs[layer_name(i, "layer_output")] = stacked([got["hidden_states"][i + 1] for got in per_prompt])
    if all("logits" in got for got in per_prompt):
        outputs["logits"] = stacked([got["logits"] for got in per_prompt])
    return outputs
