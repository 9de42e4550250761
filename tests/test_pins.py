"""Pinned official checksums (gptoss_convert/pins.py): a mirror serving other files under the official repo name
and a pinned commit fails with exit 3 even when its own listing agrees with its files; verify and convert check the
pins of a download that names a pinned revision (unless --no-verify)."""

import hashlib
import json
import shutil

import pytest
from click.testing import CliRunner

from gptoss_convert import pins
from gptoss_convert.manifest import MANIFEST_NAME, read_manifest
from gptoss_convert.cli import cli
from gptoss_convert.tiny import tiny_checkpoint_dir
from tests.fakehub import FakeHub
from tests.test_hub import HF_FILES, REPO, _isolate, download, error_lines, repo_dir, target  # noqa: F401

PINNED = pins.GPT_OSS_20B_COMMIT


@pytest.fixture
def mirror(repo_dir, monkeypatch, tmp_path):  # noqa: F811
    """A mirror serving the test repo as openai/gpt-oss-20b at the pinned commit (its listing is self-consistent)."""
    with FakeHub({REPO: repo_dir}, commits={REPO: PINNED}) as server:
        _isolate(monkeypatch, tmp_path, server.url)
        yield server


def _pins_of(directory, names) -> dict:
    return {n: hashlib.sha256((directory / n).read_bytes()).hexdigest() for n in names}


def test_the_table_holds_the_official_20b_and_120b_hashes():
    table = pins.pinned_files("openai/gpt-oss-20b", PINNED)
    assert set(table) == {"config.json", "generation_config.json", "tokenizer_config.json", "chat_template.jinja",
                          "model.safetensors.index.json", "tokenizer.json", "model-00000-of-00002.safetensors",
                          "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert table["model-00000-of-00002.safetensors"].startswith("16d0f997")
    assert pins.pinned_files("openai/gpt-oss-120b", pins.GPT_OSS_120B_COMMIT) == {
        "config.json": "933aeb666a3fd851133ddd7686414f369bc564c4185fb5704416550879f10566"}
    assert pins.pinned_files("openai/gpt-oss-20b", "0" * 40) == {} and pins.pinned_files("x/y", PINNED) == {}


def test_mirror_listing_another_weight_file_fails_before_any_byte_moves(mirror, target):
    """The shard the mirror lists (sha256 and body agree with each other) is not the official one."""
    result = download("--model", "20b")
    assert result.exit_code == 3, result.output
    (line,) = error_lines(result)
    assert "model-00002-of-00002.safetensors" in line or "model-00001-of-00002.safetensors" in line
    assert "pinned official sha256" in line and mirror.url in line and "nothing was fetched" in line
    assert mirror.file_requests("GET") == [] and read_manifest(target) is None


def test_mirror_serving_another_small_file_fails_with_exit_3_and_removes_it(mirror, monkeypatch, repo_dir, target):
    """config.json is a plain git file: only its blob id is listed, so the pin is checked after the fetch."""
    table = _pins_of(repo_dir, HF_FILES - {"config.json"})
    table["config.json"] = pins.pinned_files(REPO, PINNED)["config.json"]  # the official one; the mirror differs
    monkeypatch.setitem(pins.PINS, REPO, {PINNED: table})
    result = download("--model", "20b")
    assert result.exit_code == 3, result.output
    (line,) = error_lines(result)
    assert line.startswith(f"error: {target / 'config.json'}: sha256 ") and "pinned official sha256 3a2a26de" in line
    assert "although it matches what" in line
    assert not (target / "config.json").exists() and read_manifest(target) is None


def test_mirror_serving_the_pinned_files_passes_and_says_so(mirror, monkeypatch, repo_dir, target):
    monkeypatch.setitem(pins.PINS, REPO, {PINNED: _pins_of(repo_dir, HF_FILES)})
    result = download("--model", "20b", "--revision", PINNED)
    assert result.exit_code == 0, result.output
    assert f"9 file(s) match the pinned official sha256 of {REPO}@{PINNED}" in result.stdout
    assert read_manifest(target)["commit"] == PINNED


def test_no_verify_still_checks_the_listing_against_the_pins(mirror, target):
    result = download("--model", "20b", "--no-verify")
    assert result.exit_code == 3 and "pinned official sha256" in result.stderr


@pytest.fixture
def pinned_tiny(tmp_path):
    """The tiny checkpoint with a manifest saying it is openai/gpt-oss-20b at the pinned commit."""
    directory = tmp_path / "downloaded"
    shutil.copytree(tiny_checkpoint_dir(), directory)
    files = [{"path": p.relative_to(directory).as_posix(), "size": p.stat().st_size, "sha256": "unchecked"}
             for p in sorted(directory.rglob("*")) if p.is_file()]
    manifest = {"format_version": 1, "repo_id": REPO, "revision": "main", "commit": PINNED, "layout": "hf",
                "verified": True, "files": files}
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    return directory


@pytest.mark.parametrize("command", ["verify", "convert"])
def test_verify_and_convert_check_the_pins_of_a_pinned_download(pinned_tiny, tmp_path, command):
    args = {"verify": ["verify", "--model", str(pinned_tiny), "--report", str(tmp_path / "r"), "--quiet"],
            "convert": ["convert", "--model", str(pinned_tiny), "--out", str(tmp_path / "out")]}[command]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {pinned_tiny}/") and "differs from the pinned official sha256" in line
    assert "--no-verify" in line and not (tmp_path / "out").exists() and not (tmp_path / "r").exists()
    skipped = CliRunner().invoke(cli, args + ["--no-verify"])
    assert skipped.exit_code == 0, skipped.output


def test_pins_pass_when_the_files_match(pinned_tiny, monkeypatch, tmp_path):
    names = ["config.json", "model-00000-of-00002.safetensors", "tokenizer.json"]
    monkeypatch.setitem(pins.PINS, REPO, {PINNED: _pins_of(pinned_tiny, names)})
    assert pins.check_checkpoint(pinned_tiny, read_manifest(pinned_tiny)) == 3
    assert pins.check_checkpoint(pinned_tiny / "original", read_manifest(pinned_tiny / "original")) == 0
    result = CliRunner().invoke(cli, ["convert", "--model", str(pinned_tiny), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
