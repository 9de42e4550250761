"""Run one adapter (candidates/protocol.py) over a checkpoint, layer by layer, and collect its outputs under the
goldens' tensor names (goldens_files.py): rows of all prompts stacked, on the CPU.

Two uses, one loop:
  recording (`goldens`): the reference is fed its own previous output; each layer's input is kept too
  replaying (`verify --goldens`): a candidate is fed the recorded inputs (teacher-forced, the isolated column)
Streams: one layer's weights at a time, as `verify` does. Nothing here imports Transformers.
"""

import torch

from gptoss_convert.candidates.protocol import BUILD, LAYER_COMPONENTS, RUN, Context, check_tensor, guarded, provides
from gptoss_convert.goldens_files import layer_name

EMBED, NORM, HEAD = "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"


class Session:
    """The checkpoint, its config and the prompts' rows, shared by every stage."""

    def __init__(self, checkpoint_dir, ckpt, plan, config, token_ids, positions, prompt, dtype, device):
        self.checkpoint_dir, self.ckpt, self.plan, self.config = checkpoint_dir, ckpt, plan, config
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

        return global_tensors(self.ckpt, self.dtype, self.plan, names=(name,))[name].to(self.device)


def stacked(tensors: list) -> torch.Tensor:
    """Per-prompt [1, T_p, X] -> [ΣT_p, X] on the CPU."""
    return torch.cat([t.reshape(-1, t.shape[-1]).cpu() for t in tensors]).contiguous()


def run_adapter(adapter, who: str, session: Session, recorded: dict | None = None, progress=False) -> tuple[dict, dict]:
    """-> (inputs, outputs): the hidden states each stage was fed and what the adapter produced, goldens names.
    recorded None: feed the adapter its own previous outputs (recording); else feed recorded[...] (replaying)."""
    s = session
    with guarded(who, "setup()", BUILD):
        if provides(adapter, "setup"):
            adapter.setup(Context(s.checkpoint_dir, s.config, s.dtype, s.device))
    inputs, outputs = {}, {}
    ids = [s.token_ids[a:b][None].to(s.device) for a, b in s.spans]
    with torch.no_grad():
        if provides(adapter, "embed"):
            weight = {EMBED: s.global_tensor(EMBED)}
            with guarded(who, "embed()", RUN):
                hidden = [adapter.embed(weight, x) for x in ids]
            outputs["embedding"] = _checked_rows(who, "embed()", "embedding", hidden, s)
        elif recorded is None:
            raise ValueError(f"{who}: recording needs embed()")
        layers = range(s.config.num_hidden_layers)
        if progress:
            from tqdm import tqdm

            layers = tqdm(layers, desc=who, unit="layer", leave=False)
        for i in layers:
            if recorded is not None:
                hidden = s.per_prompt(recorded[layer_name(i, "input")])
            inputs[layer_name(i, "input")] = stacked(hidden)
            hidden = _run_layer(adapter, who, s, i, hidden, outputs)
        if recorded is not None:
            hidden = s.per_prompt(recorded["final_norm.input"])
        inputs["final_norm.input"] = stacked(hidden)
        _run_head(adapter, who, s, hidden, outputs, recorded)
    return inputs, outputs


def _run_layer(adapter, who, s: Session, i: int, hidden: list, outputs: dict) -> list:
    from gptoss_convert.remap import layer_tensors

    tensors = layer_tensors(s.ckpt, i, s.dtype, s.plan, device=s.device if s.device != "cpu" else None)
    tensors = {name: t.to(s.device) for name, t in tensors.items()}
    with guarded(who, f"build_layer({i})", BUILD):
        layer = adapter.build_layer(i, s.config, tensors)
    per_prompt = []
    for (a, b), x in zip(s.spans, hidden):
        with guarded(who, f"layer {i} run()", RUN):
            per_prompt.append(layer.run(x, s.positions[a:b][None].to(s.device)))
    del layer, tensors
    for component in LAYER_COMPONENTS:
        if all(component in got for got in per_prompt):
            values = [got[component] for got in per_prompt]
            outputs[layer_name(i, component)] = _checked_rows(who, f"layer {i}", component, values, s)
    return [got["layer_output"] for got in per_prompt] if all("layer_output" in g for g in per_prompt) else hidden


def _checked_rows(who, where, name, values: list, s: Session) -> torch.Tensor:
    """Check each prompt's tensor is [1, T_p, X] (X fixed by the config where known) and stack the rows."""
    width = {"router_logits": s.config.num_local_experts, "expert_indices": s.config.num_experts_per_tok,
             "expert_weights": s.config.num_experts_per_tok, "logits": s.config.vocab_size}.get(name, s.config.hidden_size)
    for (a, b), value in zip(s.spans, values):
        dtype = None if name == "expert_indices" else s.dtype
        check_tensor(who, where, name, value, (1, b - a, width), dtype)
    return stacked(values)


def _run_head(adapter, who, s: Session, hidden: list, outputs: dict, recorded) -> None:
    normed = None
    if provides(adapter, "final_norm"):
        weight = {NORM: s.global_tensor(NORM)}
        with guarded(who, "final_norm()", RUN):
            normed = [adapter.final_norm(weight, x) for x in hidden]
        outputs["final_norm"] = _checked_rows(who, "final_norm()", "final_norm", normed, s)
    if provides(adapter, "head") and normed is not None:
        weight = {HEAD: s.global_tensor(HEAD)}
        with guarded(who, "head()", RUN):
            logits = [adapter.head(weight, x) for x in normed]
        outputs["logits"] = _checked_rows(who, "head()", "logits", logits, s)
