"""scripts/bench_expert_access_pattern.py without a GPU: its refusals (what its kernel reads: the interpreter case
test_access_pattern_bench_reads_each_weight_word_once in tests/mxfp4_kernel_cases.py)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_without_cuda_it_stops_in_one_line():
    run = subprocess.run([sys.executable, "scripts/bench_expert_access_pattern.py"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].endswith("needs a CUDA GPU (the reads are timed as CUDA graphs)")
