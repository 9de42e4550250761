"""A checkpoint -> a model: `load_model` (a GPTOssModelFull) and `load_offloaded` (layers kept in host memory).

Both read any layout `checkpoint` opens, through the audited remap, one tensor at a time.
"""

from pathlib import Path

import torch

from gptoss_model.io import fill_meta_model
from gptoss_convert import mxfp4
from gptoss_convert.checkpoint import open_checkpoint
from gptoss_convert.options import parse_device, parse_dtype
from gptoss_convert.remap import audit, global_tensors, iter_tensors, layer_tensors
from gptoss_convert.sources import resolve_source


def load_model(source: str | Path = "tiny", dtype: torch.dtype | str | None = None, device="cpu"):
    """Build a GPTOssModelFull from `source` (tiny, a downloaded 20b/120b, or a directory in any supported layout),
    with parameters in `dtype` (default float32) on `device`.

    The model is built on the meta device (no memory, no random init), then each parameter is replaced by the
    tensor read from the checkpoint, one at a time, so peak memory is the model's own size plus one tensor."""
    from gptoss_model import GPTOssModelFull

    dtype = parse_dtype(dtype)
    device = parse_device(device)
    ckpt = open_checkpoint(resolve_source(source))
    source_map = audit(ckpt)
    with torch.device("meta"):
        model = GPTOssModelFull(ckpt.config, device="meta")
    tensors = iter_tensors(ckpt, dtype=dtype, source_map=source_map, owned=True)  # owned: not the file's mmap
    fill_meta_model(model, tensors, device, source=str(ckpt.root))  # the audit has matched names and shapes
    return model.eval()


def load_offloaded(source="tiny", dtype=torch.bfloat16, device="cuda"):
    """A gptoss_model.offload.OffloadedModel: decoder layers in pinned host memory, MXFP4 experts kept packed there
    (about 4.25 bits a weight: 120b's experts take ~61 GB instead of ~230 GB in bf16) and dequantized on the GPU
    right after each copy."""
    from gptoss_model.offload import OffloadedModel

    ckpt = open_checkpoint(resolve_source(source))
    source_map = audit(ckpt)
    resident = global_tensors(ckpt, dtype, source_map)
    layers = [_host_layer(ckpt, index, dtype, source_map) for index in range(ckpt.config.num_hidden_layers)]
    return OffloadedModel(ckpt.config, resident, layers, device=device, dtype=dtype, unpack=_unpack)


def _host_layer(ckpt, index: int, dtype, source_map: dict) -> dict:
    """One layer's tensors in pinned host memory, names relative to the layer; MXFP4 pairs stay (blocks, scales)."""
    prefix = f"model.layers.{index}."
    packed = {n: s for n, s in source_map.items() if n.startswith(prefix) and isinstance(s, tuple)}
    dense_map = {n: s for n, s in source_map.items() if not (n.startswith(prefix) and n in packed)}
    dense = layer_tensors(ckpt, index, dtype, dense_map)
    host = {n[len(prefix):]: t.pin_memory() for n, t in dense.items()}
    for name, (blocks, scales) in packed.items():
        host[name[len(prefix):]] = (ckpt.get(blocks).pin_memory(), ckpt.get(scales).pin_memory())
    return host


def _unpack(blocks, scales, dtype):
    return mxfp4.dequantize(blocks, scales, dtype=dtype, name="offloaded expert weight")
