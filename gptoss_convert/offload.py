"""Kept for the documented name `gptoss_convert.offload.load_offloaded`; the code lives in load.py."""

from gptoss_convert.load import load_offloaded

__all__ = ["load_offloaded"]
