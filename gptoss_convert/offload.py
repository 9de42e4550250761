"""Build a layer-offloaded model (gptoss_model.offload.OffloadedModel) from a checkpoint.

Decoder layers go to pinned host memory; MXFP4 experts stay packed there (about 4.25 bits a weight: 120b's
experts take ~61 GB instead of ~230 GB in bf16) and are dequantized on the GPU right after each copy.
"""

import torch

from gptoss_convert import mxfp4
from gptoss_convert.errors import InputError
from gptoss_convert.remap import audit, global_tensors, layer_tensors


def load_offloaded(source="tiny", dtype=torch.bfloat16, device="cuda", experts="dequantized"):
    """experts="mxfp4": the GPU slots keep the experts packed too (no dequantization after each copy; the fused
    kernels of gptoss_model/kernels/ compute with the bytes)."""
    from gptoss_convert.checkpoint import open_checkpoint
    from gptoss_convert.convert import resolve_source
    from gptoss_model.offload import OffloadedModel

    from gptoss_convert.packed import check_experts_option

    check_experts_option(experts)
    ckpt = open_checkpoint(resolve_source(source))
    plan = audit(ckpt)
    resident = global_tensors(ckpt, dtype, plan)
    layers = []
    for i in range(ckpt.config.num_hidden_layers):
        prefix = f"model.layers.{i}."
        packed = {n: s for n, s in plan.items() if n.startswith(prefix) and isinstance(s, tuple)}
        dense_plan = {n: s for n, s in plan.items() if not (n.startswith(prefix) and n in packed)}
        dense = layer_tensors(ckpt, i, dtype, dense_plan)
        host = {n[len(prefix):]: t.pin_memory() for n, t in dense.items()}
        if experts == "mxfp4" and not packed:
            raise InputError(f"{ckpt.root}: experts='mxfp4' offloading needs a checkpoint with MXFP4 experts; "
                             "this one stores them dense (use load_model(..., experts='mxfp4'), which re-packs them)")
        for name, (blocks, scales) in packed.items():
            host[name[len(prefix):]] = (ckpt.get(blocks).pin_memory(), ckpt.get(scales).pin_memory())
        layers.append(host)
    return OffloadedModel(ckpt.config, resident, layers, device=device, dtype=dtype, unpack=_unpack,
                          packed_experts=experts == "mxfp4")


def _unpack(blocks, scales, dtype):
    return mxfp4.dequantize(blocks, scales, dtype=dtype, name="offloaded expert weight")
