"""CI-friendly progress (gptoss_convert/progress.py): a redrawn bar only on a terminal; elsewhere at most one plain
line per INTERVAL seconds; --progress / --no-progress force either way, for verify, convert, download and
make_checkpoint."""

import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from gptoss_convert import progress
from gptoss_convert.cli import cli
from tests.test_hub import download, fake, repo_dir  # noqa: F401
from tests.load_file import load_module


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_lines_at_most_one_per_interval():
    stream, clock = io.StringIO(), Clock()
    bar = progress.PlainProgress(total=1000, desc="convert", unit="B", stream=stream, clock=clock)
    for i in range(350):  # 35 simulated seconds, an update every 0.1 s
        clock.now = (i + 1) / 10
        bar.update(2)
    bar.close()
    lines = stream.getvalue().splitlines(keepends=True)
    assert len(lines) == 3 and all(line.endswith("\n") for line in lines) and "\r" not in stream.getvalue()
    assert lines[0] == "convert: 20% (200 B of 1.00 kB), 0:00:10 elapsed\n"
    assert lines[2].startswith("convert: 60% (600 B of 1.00 kB), 0:00:30")


def test_policy_picks_by_terminal_and_the_flags_force_it():
    tty, log = Terminal(), io.StringIO()
    assert progress.mode(None, tty) == "bar" and progress.mode(None, log) == "lines"
    assert progress.mode(True, log) == "bar" and progress.mode(False, tty) == "off"
    assert isinstance(progress.progress_bar(total=1, desc="x", stream=log), progress.PlainProgress)
    with progress.progress_bar(total=10, desc="x", stream=tty) as bar:
        bar.update(10)
    assert "\r" in tty.getvalue() and "100%" in tty.getvalue()
    with progress.progress_bar(total=10, desc="x", stream=log, enabled=False) as bar:
        bar.update(10)
    assert log.getvalue() == ""


def test_watch_writes_lines_from_what_is_on_disk(monkeypatch):
    monkeypatch.setattr(progress, "INTERVAL", 0.02)
    stream, done = io.StringIO(), iter(range(0, 10_000, 100))
    import time

    with progress.watch(total=10_000, measure=lambda: next(done), desc="download", stream=stream):
        time.sleep(0.2)
    lines = stream.getvalue().splitlines()
    assert lines and all(line.startswith("download: ") for line in lines) and "\r" not in stream.getvalue()
    with progress.watch(total=1, measure=lambda: 1, desc="download", stream=Terminal()) as quiet:
        assert quiet.lines is None  # on a terminal huggingface_hub's own bars show


@pytest.mark.parametrize("flag, expect", [(None, "lines"), ("--progress", "bar"), ("--no-progress", "off")])
def test_convert_progress_modes(tmp_path, monkeypatch, flag, expect):
    monkeypatch.setattr(progress, "INTERVAL", 0.0)  # every update may write a line
    args = ["convert", "--model", "tiny", "--out", str(tmp_path / "out")] + ([flag] if flag else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    err = result.stderr
    if expect == "lines":
        assert "\r" not in err and err.splitlines()[0].startswith("convert: ") and "% (" in err
    elif expect == "bar":
        assert "\r" in err and "convert:" in err
    else:
        assert err == ""


@pytest.mark.parametrize("flag", [None, "--progress", "--no-progress"])
def test_verify_progress_modes(tmp_path, flag):
    args = ["verify", "--prompt", "1 2 3", "--report", str(tmp_path / "r")] + ([flag] if flag else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert ("\r" in result.stderr) == (flag == "--progress")


@pytest.mark.parametrize("flag", [None, "--progress", "--no-progress"])
def test_download_progress_modes(fake, flag):  # noqa: F811
    result = download("--model", "20b", *([flag] if flag else []))
    assert result.exit_code == 0, result.output
    assert ("\r" in result.stderr) == (flag == "--progress")  # huggingface_hub's bars only when forced here


def test_make_checkpoint_progress_modes(tmp_path, capsys, monkeypatch):
    make = load_module(Path(__file__).resolve().parents[1] / "scripts" / "make_checkpoint.py", "mk")
    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    make.main(["--shape", "tiny", "--layout", "hf", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert "\r" not in err and err.startswith("writing: ")
    make.main(["--shape", "tiny", "--layout", "hf", "--out", str(tmp_path / "b"), "--no-progress"])
    assert capsys.readouterr().err == ""
    make.main(["--shape", "tiny", "--layout", "hf", "--out", str(tmp_path / "c"), "--progress"])
    assert "\r" in capsys.readouterr().err
