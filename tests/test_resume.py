"""A download killed mid-file (SIGKILL: huggingface_hub cannot clean up) continues that file on the next run with
an HTTP Range request from where the leftover ends (gptoss_convert/resume.py), instead of starting it again."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gptoss_convert.manifest import read_manifest
from tests.test_hub import SHARD, download, fake, repo_dir, target  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import sys
from huggingface_hub import constants
constants.HF_HUB_DISABLE_XET = True
constants.DOWNLOAD_CHUNK_SIZE = 16384  # small chunks reach the disk before the stall, as 10 MB ones do for real files
from gptoss_convert.cli import cli
cli(["download", "--model", "20b"])
"""


def _leftovers(directory: Path) -> list[Path]:
    """huggingface_hub's temporary files, largest first (the shard's; small files may have left one too). A small
    file can finish, and its temporary file be renamed, between the listing and the stat: it is no leftover then
    (CI once failed on exactly that race)."""
    sized = []
    for path in directory.rglob("*.incomplete"):
        try:
            sized.append((path.stat().st_size, path))
        except FileNotFoundError:
            continue
    return [path for _, path in sorted(sized, key=lambda pair: -pair[0])]


def _killed_mid_file(fake, target, tmp_path) -> int:  # noqa: F811
    """Run `download` in a child process, stall the shard after 100,000 bytes, SIGKILL the child once part of
    the shard is on disk; returns the leftover's size."""
    fake.faults[SHARD] = ["stall:100000"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_TELEMETRY": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            partial = _leftovers(target)
            if partial and partial[0].stat().st_size >= 16384:
                break
            assert child.poll() is None, "the download ended before the stall"
            time.sleep(0.05)
        else:
            raise AssertionError("no partial file appeared")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    fake.release()
    return _leftovers(target)[0].stat().st_size


def test_download_killed_mid_file_resumes_that_file(fake, repo_dir, target, tmp_path):  # noqa: F811
    left = _killed_mid_file(fake, target, tmp_path)
    size = (repo_dir / SHARD).stat().st_size
    assert 0 < left < size and read_manifest(target) is None and not (target / SHARD).exists()
    served = fake.bytes_served(SHARD)
    gets = len(fake.file_requests("GET", SHARD))

    result = download("--model", "20b")
    assert result.exit_code == 0, result.output
    requests = fake.file_requests("GET", SHARD)[gets:]
    assert [r[2] for r in requests] == [f"bytes={left}-"]  # one request, continuing from the leftover's end
    fetched_now = fake.bytes_served(SHARD) - served
    assert fetched_now == size - left < size
    digest = hashlib.sha256((target / SHARD).read_bytes()).hexdigest()
    assert digest == hashlib.sha256((repo_dir / SHARD).read_bytes()).hexdigest()
    assert f"resumed 1 file(s) left half-fetched by an earlier run: {SHARD}" in result.stdout
    assert _leftovers(target) == [] and read_manifest(target)["verified"] is True


def test_a_leftover_that_does_not_check_out_is_fetched_whole(fake, repo_dir, target, tmp_path):  # noqa: F811
    left = _killed_mid_file(fake, target, tmp_path)
    partial = _leftovers(target)[0]
    partial.write_bytes(b"\0" * left)  # not the file's first bytes (e.g. a sparse Xet leftover)
    result = download("--model", "20b")
    assert result.exit_code == 0, result.output
    assert (target / SHARD).read_bytes() == (repo_dir / SHARD).read_bytes()
    assert [r[2] for r in fake.file_requests("GET", SHARD)[-2:]] == [f"bytes={left}-", None]
    assert "resumed" not in result.stdout and _leftovers(target) == []
