"""gptoss_model's own on-disk format: config.json + sharded safetensors + index (docs/design.md).

Reading the official hub layouts is gptoss_convert's job; this module only knows our format.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gptoss_model.config import GPTOssConfig

FORMAT_NAME = "gptoss_model"
FORMAT_VERSION = 1
INDEX_NAME = "model.safetensors.index.json"


def shard_name(index: int, count: int) -> str:
    return f"model-{index:05d}-of-{count:05d}.safetensors"


def write_config(directory: Path, config: GPTOssConfig):
    body = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": config.to_dict()}
    (directory / "config.json").write_text(json.dumps(body, indent=2) + "\n")


def read_config(directory) -> GPTOssConfig:
    path = Path(directory) / "config.json"
    body = json.loads(path.read_text())
    if body.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: not a {FORMAT_NAME} config (no \"format\": \"{FORMAT_NAME}\")")
    if body.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {body.get('format_version')!r}, expected {FORMAT_VERSION}")
    return GPTOssConfig.from_dict(body["config"])


def is_model_dir(directory) -> bool:
    try:
        return json.loads((Path(directory) / "config.json").read_text()).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def group_into_shards(sizes: dict[str, int], max_shard_bytes: int) -> list[list[str]]:
    """Greedy, in key order: a new shard starts when the next tensor would overflow the current one."""
    shards, current, used = [], [], 0
    for name, size in sizes.items():
        if current and used + size > max_shard_bytes:
            shards.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    if current or not shards:
        shards.append(current)
    return shards


def save_model(model, directory, max_shard_bytes: int):
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    # written beside the target and renamed at the end: a killed run leaves only a clearly named temporary directory
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-{os.getpid()}-", dir=directory.parent))
    try:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        sizes = {k: v.numel() * v.element_size() for k, v in state.items()}
        shards = group_into_shards(sizes, max_shard_bytes)
        weight_map = {}
        for i, names in enumerate(shards, start=1):
            fname = shard_name(i, len(shards))
            save_file({k: state[k].cpu() for k in names}, str(tmp / fname), metadata={"format": "pt"})
            weight_map.update({k: fname for k in names})
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        write_config(tmp, model.config)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_model_dir(cls, directory, dtype=None, device="cpu"):
    """Build the model without allocating random weights, then fill it tensor by tensor from the shards."""
    directory = Path(directory)
    config = read_config(directory)
    index = json.loads((directory / INDEX_NAME).read_text())
    with torch.device("meta"):
        model = cls(config, device="meta")
    expected = dict(model.state_dict())
    files = sorted(set(index["weight_map"].values()))
    loaded = {}
    for fname in files:
        with safe_open(str(directory / fname), framework="pt", device="cpu") as f:
            for key in f.keys():
                if key not in expected:
                    raise ValueError(f"{directory / fname}: unexpected tensor {key!r}")
                tensor = f.get_tensor(key)
                if tuple(tensor.shape) != tuple(expected[key].shape):
                    raise ValueError(
                        f"{directory / fname}: tensor {key!r} has shape {tuple(tensor.shape)}, "
                        f"expected {tuple(expected[key].shape)}"
                    )
                loaded[key] = tensor.to(device=device, dtype=dtype or tensor.dtype)
    missing = sorted(set(expected) - set(loaded))
    if missing:
        raise ValueError(f"{directory}: missing tensors {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    model.load_state_dict(loaded, assign=True)
    model.model.rotary_emb = type(model.model.rotary_emb)(config, device=device)
    return model
