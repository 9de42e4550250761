"""Faults in the middle of a run (issue 6): disk full, permission refused, the process killed, Ctrl-C. Each leaves a
clear one-line error with its exit code and nothing half-written; a killed conversion's temporary directory is
removed by the next run to the same --out. The harness (Case, error_line, snapshot) is tests/test_bad_inputs.py's."""

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import gptoss_convert
from gptoss_convert import convert as conversion
from gptoss_convert import report as report_module
from gptoss_convert.checkpoint import open_checkpoint
from gptoss_convert.cli import cli
from gptoss_convert.errors import GptossConvertError
from gptoss_model.io import ShardWriter
from gptoss_model import GPTOssModelFull
from tests.test_bad_inputs import case, error_line, hub_env, snapshot  # noqa: F401 (fixtures)

REPO_ROOT = Path(__file__).resolve().parents[1]


def temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name or ".old-" in p.name)


# ---- convert: the disk and the file system say no ------------------------------------------------------------------

def test_disk_full_midway_through_convert(case, monkeypatch):
    real, calls = ShardWriter.write, []

    def write(self, name, chunk):
        calls.append(name)
        if len(calls) == 30:  # well into the shard: header and 29 tensors are on disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        real(self, name, chunk)

    monkeypatch.setattr(ShardWriter, "write", write)
    out = case.root / "new" / "deeper" / "out"  # parents that convert creates are removed again too
    case.fails(2, r"--out \S+/out: cannot write \(\S+\.tmp-\d+-\w+/model-00001-of-00001\.safetensors\): "
                  r"No space left on device; nothing was written", "convert", "--model", "tiny", "--out", out)
    assert len(calls) == 30 and not (case.root / "new").exists()


def test_output_directory_not_writable(case, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)  # what a read-only parent directory does
    case.fails(2, r"--out \S+/out: cannot write \(\S+\): Permission denied; nothing was written",
               "convert", "--model", "tiny", "--out", case.root / "out")


def test_rename_into_place_refused(case, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(src), str(dst))

    monkeypatch.setattr(conversion.os, "replace", refuse)
    case.fails(2, r"--out \S+/out: cannot write \(\S+\.tmp-\d+-\w+\): Permission denied",
               "convert", "--model", "tiny", "--out", case.root / "out")


def test_force_rename_refused_keeps_the_previous_output(case, monkeypatch):
    out = case.root / "out"
    assert CliRunner().invoke(cli, ["convert", "--model", "tiny", "--out", str(out)]).exit_code == 0
    real = os.replace

    def refuse_new(src, dst):
        if ".tmp-" in Path(src).name:  # moving the old output aside works; moving the new one in does not
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(src), str(dst))
        real(src, dst)

    monkeypatch.setattr(conversion.os, "replace", refuse_new)
    case.fails(2, r"--out \S+/out: cannot write \(\S+\): Permission denied",
               "convert", "--model", "tiny", "--out", out, "--force", "--dtype", "float32")
    assert open_checkpoint(out).tensors["lm_head.weight"].dtype == "BF16"  # the previous bfloat16 output, whole


# ---- convert: killed mid-write -------------------------------------------------------------------------------------

KILLABLE = """
import pathlib, sys, time
from gptoss_model.io import ShardWriter
real, count = ShardWriter.write, [0]
def write(self, name, chunk):  # the real writer, slowed down once it has written part of the shard
    real(self, name, chunk)
    count[0] += 1
    if count[0] == 20:
        self._file.flush()
        pathlib.Path(sys.argv[1]).write_text("writing")
        time.sleep(120)
ShardWriter.write = write
from gptoss_convert.cli import cli
cli(["convert", "--model", sys.argv[2], "--out", sys.argv[3]])
"""


def test_killed_convert_leaves_nothing_valid_and_the_next_run_cleans_up(case):
    out, marker = case.root / "out", case.root / "started"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(marker), str(case.ckpt), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"the conversion never started writing (exit {proc.poll()})"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)

    assert not out.exists()
    (left,) = [case.root / name for name in temps(case.root)]
    assert left.name.startswith(f".out.tmp-{proc.pid}-")  # clearly named: target and process
    shard = left / "model-00001-of-00001.safetensors"
    assert 0 < shard.stat().st_size < 633_536
    with pytest.raises(GptossConvertError):  # nothing there that our own checks would accept
        open_checkpoint(left)
    with pytest.raises(GptossConvertError):
        gptoss_convert.load_model(left)
    with pytest.raises((OSError, ValueError)):
        GPTOssModelFull.from_pretrained(left)

    again = CliRunner().invoke(cli, ["convert", "--model", str(case.ckpt), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert temps(case.root) == []  # the dead run's temporary directory is gone
    loaded = GPTOssModelFull.from_pretrained(out, dtype=torch.float32)
    reference = gptoss_convert.load_model(case.ckpt, dtype=torch.bfloat16)
    assert all(torch.equal(a, b.float()) for a, b in zip(loaded.state_dict().values(), reference.state_dict().values()))


def test_only_temporaries_of_dead_runs_to_the_same_out_are_removed(case):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getppid()
    names = {
        f".out.tmp-{dead.pid}-a1b2": False,  # a killed conversion to out: removed
        f".out.old-{dead.pid}-c3d4": False,  # a killed --force swap to out: removed
        f".out.tmp-{live}-e5f6": True,  # a conversion still running: kept
        f".other.tmp-{dead.pid}-g7h8": True,  # another target: kept
        ".out.tmp-legacy": True,  # not ours to judge (no process id): kept
    }
    for name in names:
        (case.root / name).mkdir()
        (case.root / name / "model-00001-of-00001.safetensors").write_bytes(b"partial")
    result = CliRunner().invoke(cli, ["convert", "--model", "tiny", "--out", str(case.root / "out")])
    assert result.exit_code == 0, result.output
    assert {n for n in names if (case.root / n).exists()} == {n for n, kept in names.items() if kept}


# ---- verify: Ctrl-C and unwritable reports -------------------------------------------------------------------------

def _previous_report(directory: Path) -> dict:
    directory.mkdir(parents=True)
    files = {"report.json": "{\"previous\": true}\n", "report.md": "# previous\n", "report.html": "<p>previous</p>\n"}
    for name, text in files.items():
        (directory / name).write_text(text)
    return files


def test_ctrl_c_during_verify_keeps_the_previous_report(case, monkeypatch):
    from gptoss_convert import verify

    real, seen = verify.layer_stage, []

    def interrupted(i, *args):
        seen.append(i)
        if i == 2:
            raise KeyboardInterrupt
        return real(i, *args)

    monkeypatch.setattr(verify, "layer_stage", interrupted)
    files = _previous_report(case.root / "report")
    case.fails(130, r"^error: interrupted$", "verify", "--prompt", "A short prompt.", "--report", case.root / "report",
               "--junit", case.root / "junit.xml")
    assert seen == [0, 1, 2]
    assert {p.name: p.read_text() for p in (case.root / "report").iterdir()} == files


@pytest.fixture(scope="module")
def tiny_result():
    from gptoss_convert.gate import Thresholds
    from gptoss_convert.verify import run_verify

    return run_verify("tiny", Thresholds(), device="cpu", progress=False, prompts=["A short prompt."])


@pytest.mark.parametrize("fault, pattern", [
    ("rename", r"cannot write the report to \S+report/report.md: Permission denied"),
    ("disk full", r"cannot write the report to \S+report/report.md: No space left on device"),
], ids=["permission refused", "disk full"])
def test_verify_report_not_writable_keeps_the_previous_report(case, monkeypatch, tiny_result, fault, pattern):
    from gptoss_convert import verify

    monkeypatch.setattr(verify, "run_verify", lambda *a, **k: tiny_result)  # the run itself is not the point here
    if fault == "rename":
        def refuse(src, dst):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))

        monkeypatch.setattr(report_module.os, "replace", refuse)
    else:
        def full(fd):  # the temporary file is written, then the disk turns out to be full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(report_module.os, "fsync", full)
    files = _previous_report(case.root / "report")
    case.fails(2, pattern, "verify", "--quiet", "--report", case.root / "report")
    assert {p.name: p.read_text() for p in (case.root / "report").iterdir()} == files


# ---- download: the disk fills up; Ctrl-C while checking ------------------------------------------------------------

def test_download_disk_full(case, hub_env, monkeypatch, tmp_path):
    import huggingface_hub

    target = tmp_path / "home" / "models" / "openai--gpt-oss-20b"

    def full(*args, local_dir, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(local_dir) / "model-00001-of-00002.safetensors"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", full)
    case.freeze()
    line = error_line(CliRunner().invoke(cli, ["download", "--model", "20b"]), 2)
    assert line == (f"error: cannot write the download to {target}/model-00001-of-00002.safetensors: No space left on "
                    "device; expected a writable --local-dir with free space")
    assert not (target / "gptoss-manifest.json").exists()


def test_download_interrupted_while_checking_writes_no_manifest_and_resumes(case, hub_env, monkeypatch, tmp_path):
    from gptoss_convert import hub

    target = tmp_path / "home" / "models" / "openai--gpt-oss-20b"
    real = hub._check_files

    def interrupted(directory, files, verify, *progress):
        if files:  # the check after fetching (the one before it has nothing to check on a first run)
            raise KeyboardInterrupt
        return real(directory, files, verify, *progress)

    monkeypatch.setattr(hub, "_check_files", interrupted)
    line = error_line(CliRunner().invoke(cli, ["download", "--model", "20b"]), 130)
    assert line == "error: interrupted"
    assert not (target / "gptoss-manifest.json").exists()  # nothing vouches for the unchecked files
    assert hub_env.file_requests("GET")

    monkeypatch.setattr(hub, "_check_files", real)
    before = len(hub_env.file_requests("GET"))
    again = CliRunner().invoke(cli, ["download", "--model", "20b"])
    assert again.exit_code == 0, again.output
    assert len(hub_env.file_requests("GET")) == before  # the files that arrived are checked, not fetched again
    assert json.loads((target / "gptoss-manifest.json").read_text())["verified"] is True
