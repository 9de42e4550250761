"""A checkpoint -> a model: `load_model` (a GPTOssModelFull) and `load_offloaded` (layers kept in host memory).

Both read any layout `checkpoint` opens, through the audited remap, one tensor at a time; with experts="mxfp4"
both keep the expert weights packed (packed.py fills load_model's MXFP4Experts; docs/design.md "Packed experts").
"""

from pathlib import Path

import torch

from gptoss_model.io import fill_meta_model
from gptoss_convert import mxfp4, packed
from gptoss_convert.checkpoint import open_checkpoint
from gptoss_convert.errors import InputError
from gptoss_convert.options import parse_device, parse_dtype, parse_experts
from gptoss_convert.remap import audit, global_tensors, iter_tensors, layer_tensors
from gptoss_convert.sources import resolve_source


def load_model(source: str | Path = "tiny", dtype: torch.dtype | str | None = None, device="cpu",
               experts: str = "dequantized"):
    """Build a GPTOssModelFull from `source` (tiny, a downloaded 20b/120b, or a directory in any supported layout),
    with parameters in `dtype` (default float32) on `device`. `experts="mxfp4"` keeps the expert weights packed
    (gptoss_model.mxfp4_experts.MXFP4Experts, filled by packed.py): 20b then takes ~13.8 GB.

    The model is built on the meta device (no memory, no random init), then each parameter is replaced by the
    tensor read from the checkpoint, one at a time, so peak memory is the model's own size plus one tensor."""
    from gptoss_model import GPTOssModelFull

    experts = parse_experts(experts)
    dtype = parse_dtype(dtype)
    device = parse_device(device)
    ckpt = open_checkpoint(resolve_source(source))
    source_map = audit(ckpt)
    with torch.device("meta"):
        model = GPTOssModelFull(ckpt.config, device="meta", dtype=dtype)
    if experts == "mxfp4":
        source_map = _fill_packed_experts(model, ckpt, source_map, device)
    tensors = iter_tensors(ckpt, dtype=dtype, source_map=source_map, owned=True)  # owned: not the file's mmap
    fill_meta_model(model, tensors, device, source=str(ckpt.root))  # the audit has matched names and shapes
    return model.eval()


def _fill_packed_experts(model, ckpt, source_map: dict, device) -> dict:
    """Swap every layer's experts for MXFP4Experts and fill their bytes -> the source map of everything else."""
    from gptoss_model.mxfp4_experts import use_packed_experts

    use_packed_experts(model)
    rest, packed_map = packed.split_source_map(source_map)
    packed.fill_packed(model, ckpt, packed_map, device)
    return rest


def load_offloaded(source="tiny", dtype=torch.bfloat16, device="cuda", experts: str = "dequantized"):
    """A gptoss_model.offload.OffloadedModel: decoder layers in pinned host memory, MXFP4 experts kept packed there
    (about 4.25 bits a weight: 120b's experts take ~61 GB instead of ~230 GB in bf16) and dequantized on the GPU
    right after each copy. experts="mxfp4": the GPU slots keep the experts packed too (no dequantization after each
    copy; the fused kernels of gptoss_model/kernels/ compute with the bytes); the checkpoint must store them MXFP4."""
    from gptoss_model.offload import OffloadedModel

    experts = parse_experts(experts)
    ckpt = open_checkpoint(resolve_source(source))
    source_map = audit(ckpt)
    if experts == "mxfp4" and not any(isinstance(s, tuple) for s in source_map.values()):
        raise InputError(f"{ckpt.root}: experts='mxfp4' offloading needs a checkpoint with MXFP4 experts; "
                         "this one stores them dense (use load_model(..., experts='mxfp4'), which re-packs them)")
    resident = global_tensors(ckpt, dtype, source_map)
    layers = [_host_layer(ckpt, index, dtype, source_map) for index in range(ckpt.config.num_hidden_layers)]
    return OffloadedModel(ckpt.config, resident, layers, device=device, dtype=dtype, unpack=_unpack,
                          packed_experts=experts == "mxfp4")


def _host_layer(ckpt, index: int, dtype, source_map: dict) -> dict:
    """One layer's tensors in pinned host memory, names relative to the layer; MXFP4 pairs stay (blocks, scales)."""
    prefix = f"model.layers.{index}."
    packed_pairs = {n: s for n, s in source_map.items() if n.startswith(prefix) and isinstance(s, tuple)}
    dense_map = {n: s for n, s in source_map.items() if not (n.startswith(prefix) and n in packed_pairs)}
    dense = layer_tensors(ckpt, index, dtype, dense_map)
    host = {n[len(prefix):]: t.pin_memory() for n, t in dense.items()}
    for name, (blocks, scales) in packed_pairs.items():
        host[name[len(prefix):]] = (ckpt.get(blocks).pin_memory(), ckpt.get(scales).pin_memory())
    return host


def _unpack(blocks, scales, dtype):
    return mxfp4.dequantize(blocks, scales, dtype=dtype, name="offloaded expert weight")
