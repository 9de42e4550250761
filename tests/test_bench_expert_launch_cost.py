"""scripts/bench_expert_launch_cost.py on the CPU: its fit and its byte count (the timing needs a GPU)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import bench_expert_launch_cost as cost  # noqa: E402


def test_the_fit_gives_back_a_fixed_cost_and_a_bandwidth():
    bytes_read = [cost.packed_bytes_read(rows) for rows in (720, 1440, 5760)]
    times = [4.0 + b / 3.5e6 for b in bytes_read]  # 4 µs a launch, then 3.5 TB/s (3.5e6 bytes a µs)
    fixed, per_byte = cost.fit_line(bytes_read, times)
    assert fixed == pytest.approx(4.0) and 1 / per_byte / 1e6 == pytest.approx(3.5)


def test_a_launch_reads_the_chosen_experts_packed_bytes():
    assert cost.packed_bytes_read(5760) == 4 * 5760 * 90 * 17  # 20b gate/up: 16 bytes + 1 scale per 32 weights


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_without_cuda_it_stops_in_one_line():
    run = subprocess.run([sys.executable, "scripts/bench_expert_launch_cost.py"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1].endswith("needs a CUDA GPU (the fragments "
                                                                                "kernel compiles for the GPU only)")
