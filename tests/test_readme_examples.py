"""The README's Python examples (the original design's quick start and training loop) run as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_quick_start_and_training_loop_run_as_written(capsys):
    quick_start, training = python_blocks()[:2]
    namespace: dict = {}
    exec(compile(quick_start, "README quick start", "exec"), namespace)
    assert namespace["logits"].shape == (2, 5, namespace["config"].vocab_size)
    torch.manual_seed(0)
    exec(compile(training, "README training loop", "exec"), namespace)
    out = capsys.readouterr().out
    losses = [float(x) for x in re.findall(r"Loss: ([0-9.]+)", out)]
    assert len(losses) == 100
    assert losses[-1] < 0.5 * losses[0], "training on a fixed batch must drive the loss down"
