"""scripts/bench_attention_kernel.py's masks (the timing itself needs CUDA): the token sits at the buffer's middle
slot; a full layer keeps every key up to it, a sliding layer the last `window` of those, in every batch row."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench_attention_kernel as bench  # noqa: E402


def test_the_masks_keep_a_causal_prefix_or_a_window_ending_at_the_middle_slot():
    full, sliding = (bench.keep_mask(3, 1024, layer, window=128) for layer in ("full", "sliding"))
    assert full.shape == sliding.shape == (3, 1, 1, 1024) and full.dtype == torch.bool
    slots = torch.arange(1024)
    assert torch.equal(full[2, 0, 0], slots <= 512)
    assert torch.equal(sliding[1, 0, 0], (slots <= 512) & (slots >= 512 - 127))
    assert sliding.sum().item() == 3 * 128
