"""The fused MXFP4 Triton kernel, tested against dequantize-then-matmul (cases in tests/mxfp4_kernel_cases.py).

Without CUDA the cases run in a child pytest under Triton's CPU interpreter (TRITON_INTERPRET=1 must be set before
triton is first imported, and other tests import it through torch); with CUDA they run here, compiled."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

if torch.cuda.is_available():
    from tests.mxfp4_kernel_cases import *  # noqa: F401,F403  (the cases, compiled on the GPU)
else:
    def test_kernel_cases_pass_under_the_triton_interpreter():
        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(root)}
        child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                "tests/mxfp4_kernel_cases.py"], cwd=root, env=env, capture_output=True, text=True,
                               timeout=600)
        assert child.returncode == 0, child.stdout[-3000:] + child.stderr[-2000:]
        assert " passed" in child.stdout and "skipped" not in child.stdout, child.stdout[-500:]
