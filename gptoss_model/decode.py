"""The static-cache / CUDA-graph decoder now lives in gptoss_model/generate.py; this name stays importable."""

from gptoss_model.generate import StaticDecoder, StaticLayerCache

__all__ = ["StaticDecoder", "StaticLayerCache"]
