"""load.py's step for experts="mxfp4": the experts keep the checkpoint's MXFP4 bytes (gptoss_model/mxfp4_experts.py).

`load_model(source, experts="mxfp4")` builds the model with MXFP4Experts in every layer and fills their
`*_blocks` / `*_scales` buffers with the checkpoint's own uint8 tensors, read as they are (the 0xFF NaN scale byte
is still refused, exit 3). A checkpoint whose experts are stored dense (our own format, Transformers' dequantized
layout) is quantized to MXFP4 on load: exact for weights that were dequantized from MXFP4 in the first place
(`mxfp4.quantize` round-trips them bit for bit), an approximation for any other weights.
"""

import torch

from gptoss_convert import mxfp4
from gptoss_convert.remap import iter_tensors
from gptoss_model.mxfp4_experts import MXFP4Experts

PACKED_NAMES = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")  # the dense name each packed pair replaces


def split_source_map(source_map: dict) -> tuple[dict, dict]:
    """The audited source map -> (everything but the expert weights, the expert weights alone)."""
    packed = {n: s for n, s in source_map.items() if n.endswith(PACKED_NAMES)}
    return {n: s for n, s in source_map.items() if n not in packed}, packed


def fill_packed(model, ckpt, packed_map: dict, device) -> None:
    """Fill each MXFP4Experts' blocks/scales buffers from the checkpoint, one expert weight at a time."""
    for name, source in packed_map.items():
        module_name, _, leaf = name.rpartition(".")
        blocks, scales = _packed(ckpt, name, source)
        module = model.get_submodule(module_name)
        setattr(module, f"{leaf}_blocks", blocks.to(device))
        setattr(module, f"{leaf}_scales", scales.to(device))
    for module in model.modules():
        if isinstance(module, MXFP4Experts):  # which decoding its scales allow on CUDA
            module.note_scales()


def _packed(ckpt, name: str, source) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(source, tuple):  # MXFP4 in the checkpoint: the bytes as they are
        blocks_name, scales_name = source
        blocks, scales = ckpt.read(blocks_name), ckpt.read(scales_name)
        mxfp4._check_inputs(blocks, scales, f"{ckpt.tensors[scales_name].file}: {scales_name}")
        return blocks, scales
    (_, dense), = iter_tensors(ckpt, dtype=torch.float32, source_map={name: source})
    return mxfp4.quantize(dense, name=name)
