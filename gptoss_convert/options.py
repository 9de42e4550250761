"""dtype and device names -> torch objects, in one place (load_model's arguments, convert's and verify's options)."""

import torch

from gptoss_convert.errors import InputError

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}  # the names --dtype accepts


def parse_dtype(dtype) -> torch.dtype:
    """None (float32), "float32" / "bfloat16", or a torch float dtype -> a torch dtype; else an InputError."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        return DTYPES[dtype]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise InputError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
    return dtype


def parse_device(device) -> torch.device:
    """"cpu", "cuda", "cuda:N" or a torch.device -> a torch.device that exists here; else an InputError."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r}: not a torch device; expected 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {str(device)!r}: no CUDA device is available; expected 'cpu'")
    return device


def resolve_device_option(device: str) -> str:
    """verify's --device choice: auto (cuda when there is one) | cpu | cuda."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return device
