"""Save and load LoRA adapters as one safetensors file, written atomically.

Tensor names are '<module path>.<parameter>.lora_A' / '.lora_B'; the file's metadata records rank, alpha and the
targets, so `load_adapters` can attach the same adapters to a fresh model. The file is written to a temporary
name beside the target and renamed over it, so a run that fails or is killed leaves the previous file intact.
"""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gptoss_model.io import atomic_write_with
from gptoss_model.train.errors import TrainingInputError
from gptoss_model.train.lora import adapters, attach_lora


def save_adapters(model, path, targets) -> Path:
    found = adapters(model)
    if not found:
        raise TrainingInputError("save_adapters: the model has no LoRA adapters attached (call attach_lora first)")
    tensors = {}
    for name, delta in found.items():
        tensors[f"{name}.lora_A"] = delta.A.detach().contiguous().cpu()
        tensors[f"{name}.lora_B"] = delta.B.detach().contiguous().cpu()
    first = next(iter(found.values()))
    metadata = {"format": "gptoss_model.lora", "rank": str(first.rank), "alpha": str(first.alpha),
                "targets": json.dumps(list(targets))}
    return atomic_write_with(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_adapters(model, path):
    """Attach adapters as recorded in `path` and fill them; every tensor must match an adapter and vice versa."""
    path = Path(path)
    if not path.is_file():
        raise TrainingInputError(f"{path}: no such adapter file")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != "gptoss_model.lora":
            raise TrainingInputError(f"{path}: not a gptoss_model LoRA file (metadata format is {metadata.get('format')!r})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    dtype = next(iter(tensors.values())).dtype
    attach_lora(model, int(metadata["rank"]), float(metadata["alpha"]), json.loads(metadata["targets"]), dtype)
    found = adapters(model)
    expected = {f"{n}.lora_{ab}" for n in found for ab in "AB"}
    if set(tensors) != expected:
        extra, missing = sorted(set(tensors) - expected), sorted(expected - set(tensors))
        raise TrainingInputError(f"{path}: adapter tensors do not match the model (missing {missing[:3]}, unexpected {extra[:3]})")
    with torch.no_grad():
        for name, delta in found.items():
            delta.A.copy_(tensors[f"{name}.lora_A"])
            delta.B.copy_(tensors[f"{name}.lora_B"])
    return model
