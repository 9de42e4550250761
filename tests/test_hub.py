"""`gptoss-convert download` and gptoss_convert.hub against a local hub stand-in (tests/fakehub.py); no internet."""

import hashlib
import json
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from gptoss_convert import hub, sources
from gptoss_convert.cli import cli
from gptoss_convert.errors import InputError
from tests.fakehub import FakeHub

REPO = "openai/gpt-oss-20b"
HF_FILES = {
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
}
ORIGINAL_FILES = {"original/config.json", "original/dtypes.json", "original/model.safetensors"}
OTHER_FILES = {"README.md", "LICENSE", ".gitattributes"}
METAL_FILES = {"metal/model.bin"}
SHARD = "model-00002-of-00002.safetensors"  # the big one: 256 KiB


@pytest.fixture
def repo_dir(tmp_path) -> Path:
    """A small repo in the official gpt-oss layout (hf root files, original/, metal/)."""
    root = tmp_path / "repo"
    (root / "original").mkdir(parents=True)
    (root / "metal").mkdir()
    rng = np.random.default_rng(0)
    for name in ("config.json", "original/config.json"):
        (root / name).write_text(json.dumps({"model_type": "gpt_oss", "hidden_size": 8}))
    for name in ("generation_config.json", "tokenizer_config.json", "special_tokens_map.json", "original/dtypes.json"):
        (root / name).write_text(json.dumps({"name": name}))
    (root / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 0}}}))
    (root / "chat_template.jinja").write_text("{{ messages }}")
    small = rng.standard_normal((16, 8), dtype=np.float32)
    save_file({"model.embed_tokens.weight": small}, str(root / "model-00001-of-00002.safetensors"))
    save_file({"lm_head.weight": rng.standard_normal((256, 256), dtype=np.float32)}, str(root / SHARD))
    weight_map = {"model.embed_tokens.weight": "model-00001-of-00002.safetensors", "lm_head.weight": SHARD}
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    save_file({"embedding.weight": small}, str(root / "original/model.safetensors"))
    (root / "metal/model.bin").write_bytes(rng.bytes(4096))
    (root / "README.md").write_text("# tiny\n")
    (root / "LICENSE").write_text("Apache-2.0\n")
    (root / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    return root


def _isolate(monkeypatch, tmp_path, endpoint: str) -> None:
    """Point everything at the test's own endpoint and folders; huggingface_hub read its env at import."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("GPTOSS_CONVERT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "GPTOSS_CONVERT_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # plain HTTP, as the fake hub advertises no Xet
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)  # no agent-registry request to huggingface.co
    # huggingface_hub writes (and can resume from) whole 10 MB chunks; small chunks let a small file be resumed.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16384)


@pytest.fixture
def fake(repo_dir, monkeypatch, tmp_path):
    with FakeHub({REPO: repo_dir}, tags={"v1.0": "main"}) as server:
        _isolate(monkeypatch, tmp_path, server.url)
        yield server


@pytest.fixture
def target(tmp_path) -> Path:
    return tmp_path / "home" / "models" / "openai--gpt-oss-20b"


def download(*args):
    return CliRunner().invoke(cli, ["download", *args])


def error_lines(result) -> list[str]:
    """The `error: ...` lines on stderr (progress bars share stderr)."""
    return [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("error: ")]


def _files_under(directory: Path) -> set[str]:
    """Checkpoint files, leaving out huggingface_hub's bookkeeping (.cache/) and our manifest."""
    return {
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and ".cache" not in p.parts and p.name != sources.MANIFEST_NAME
    }


def _no_partial_files(directory: Path) -> bool:
    return not [p for p in directory.rglob("*") if p.name.endswith((".incomplete", ".tmp"))]


# ---------------------------------------------------------------------------------------------------------------
# The happy path


def test_fresh_download_writes_hf_layout_manifest_and_summary(fake, repo_dir, target):
    result = download("--model", "20b")
    assert result.exit_code == 0, result.output
    assert _files_under(target) == HF_FILES
    for name in HF_FILES:
        assert (target / name).read_bytes() == (repo_dir / name).read_bytes()
    manifest = sources.read_manifest(target)
    assert manifest["repo_id"] == REPO and manifest["revision"] == "main" and manifest["layout"] == "hf"
    assert manifest["commit"] == fake.commit(REPO) and manifest["verified"] is True
    assert {f["path"] for f in manifest["files"]} == HF_FILES
    for entry in manifest["files"]:
        data = (repo_dir / entry["path"]).read_bytes()
        assert entry == {"path": entry["path"], "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert fake.commit(REPO) in result.stdout and str(target) in result.stdout and "9 files" in result.stdout
    assert _no_partial_files(target)
    assert sources.resolve_model_dir("20b") == target == sources.resolve_model_dir(REPO)


def test_fresh_download_summary_says_fetched_and_not_nothing_to_fetch(fake, target):
    """The summary of a first download names what it fetched, and only that (it once also said "nothing to fetch")."""
    result = download("--model", "20b")
    assert result.exit_code == 0, result.output
    assert f"fetched {len(HF_FILES)} file(s)" in result.stdout
    assert "nothing to fetch" not in result.stdout


@pytest.mark.parametrize(
    "layout, expected",
    [("hf", HF_FILES), ("original", ORIGINAL_FILES), ("all", HF_FILES | ORIGINAL_FILES | OTHER_FILES)],
)
def test_layouts_select_their_files_and_never_metal(fake, tmp_path, layout, expected):
    out = tmp_path / f"out-{layout}"
    result = download("--model", REPO, "--layout", layout, "--local-dir", str(out))
    assert result.exit_code == 0, result.output
    assert _files_under(out) == expected
    assert not (out / "metal").exists()
    assert sources.read_manifest(out)["layout"] == layout


def test_second_layout_into_same_dir_merges_manifest(fake, target):
    assert download("--model", "20b").exit_code == 0
    result = download("--model", "20b", "--layout", "original")
    assert result.exit_code == 0, result.output
    manifest = sources.read_manifest(target)
    assert manifest["layout"] == "hf+original"
    assert {f["path"] for f in manifest["files"]} == HF_FILES | ORIGINAL_FILES


def test_revision_tag_and_commit_are_recorded(fake, tmp_path):
    commit = fake.commit(REPO)
    for revision in ("v1.0", commit):
        out = tmp_path / revision
        result = download("--model", REPO, "--revision", revision, "--local-dir", str(out))
        assert result.exit_code == 0, result.output
        manifest = sources.read_manifest(out)
        assert (manifest["revision"], manifest["commit"]) == (revision, commit)


def test_rerun_is_a_noop_without_file_requests(fake, target):
    assert download("--model", "20b").exit_code == 0
    before = len(fake.file_requests("GET")) + len(fake.file_requests("HEAD"))
    assert len(fake.file_requests("GET")) == len(HF_FILES)
    manifest = (target / sources.MANIFEST_NAME).read_bytes()
    result = download("--model", "20b")
    assert result.exit_code == 0, result.output
    assert len(fake.file_requests("GET")) + len(fake.file_requests("HEAD")) == before
    assert "nothing to fetch" in result.stdout
    assert (target / sources.MANIFEST_NAME).read_bytes() == manifest  # not even the manifest is rewritten


def test_modified_file_is_fetched_again_on_rerun(fake, repo_dir, target):
    assert download("--model", "20b").exit_code == 0
    time.sleep(0.01)
    (target / "config.json").write_text('{"edited": true}')  # same commit, changed content on disk
    shard = bytearray((target / SHARD).read_bytes())
    shard[100] ^= 1  # same size, one bit off
    (target / SHARD).write_bytes(bytes(shard))
    gets = len(fake.file_requests("GET"))
    result = download("--model", "20b")
    assert result.exit_code == 0, result.output
    for name in ("config.json", SHARD):
        assert (target / name).read_bytes() == (repo_dir / name).read_bytes()
    assert len(fake.file_requests("GET")) == gets + 2


def test_files_in_the_huggingface_hub_cache_are_copied_not_fetched(fake, target, tmp_path):
    from huggingface_hub import snapshot_download

    cache = tmp_path / "other-cache"
    snapshot_download(REPO, cache_dir=cache, endpoint=fake.url, allow_patterns=["model-*"])
    gets = len(fake.file_requests("GET"))
    dry = download("--model", "20b", "--cache-dir", str(cache), "--dry-run")
    assert dry.exit_code == 0 and dry.stdout.count("cached") == 2
    result = download("--model", "20b", "--cache-dir", str(cache))
    assert result.exit_code == 0, result.output
    assert len(fake.file_requests("GET")) == gets + len(HF_FILES) - 2  # the two shards came from the cache
    assert sources.read_manifest(target)["verified"] is True


# ---------------------------------------------------------------------------------------------------------------
# Dry run and disk space


def test_dry_run_lists_and_writes_nothing(fake, target):
    result = download("--model", "20b", "--dry-run")
    assert result.exit_code == 0, result.output
    assert not target.exists()
    assert fake.file_requests("GET") == [] and fake.file_requests("HEAD") == []
    for name in HF_FILES:
        assert f"fetch" in result.stdout and name in result.stdout
    assert "original/" not in result.stdout and "metal/" not in result.stdout
    assert "would write 9 files" in result.stdout and "free" in result.stdout

    assert download("--model", "20b").exit_code == 0
    again = download("--model", "20b", "--dry-run")
    assert again.exit_code == 0 and "would write 0 files" in again.stdout
    assert again.stdout.count("verified") == len(HF_FILES)


def test_not_enough_disk_fails_before_any_byte_moves(fake, target, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=1000))
    result = download("--model", "20b")
    assert result.exit_code == 2
    assert "not enough disk space" in result.stderr and "1.00 kB is free" in result.stderr
    assert fake.file_requests("GET") == [] and not target.exists()

    dry = download("--model", "20b", "--dry-run")
    assert dry.exit_code == 2 and "would write 9 files" in dry.stdout and "not enough disk space" in dry.stderr


# ---------------------------------------------------------------------------------------------------------------
# Interrupted and damaged downloads


def test_connection_cut_mid_file_resumes_with_range(fake, repo_dir, target):
    fake.faults[SHARD] = ["cut:50000"]
    result = download("--model", "20b")
    assert result.exit_code == 0, result.output
    ranges = [r[2] for r in fake.file_requests("GET", SHARD)]
    assert len(ranges) == 2 and ranges[0] is None
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", ranges[1]).group(1))
    assert 0 < resumed_at <= 50000  # the second GET continues where the written chunks end
    digest = hashlib.sha256((target / SHARD).read_bytes()).hexdigest()
    assert digest == hashlib.sha256((repo_dir / SHARD).read_bytes()).hexdigest()


def test_interrupted_run_leaves_no_partial_file_and_rerun_completes(fake, repo_dir, target):
    fake.faults[SHARD] = ["cut:50000", "status:500"]  # the in-run retry fails too: the run gives up
    first = download("--model", "20b")
    assert first.exit_code == 2, first.output
    assert len(error_lines(first)) == 1 and "HTTP 500" in error_lines(first)[0]
    assert not (target / SHARD).exists() and sources.read_manifest(target) is None and _no_partial_files(target)
    fetched_once = {name: len(fake.file_requests("GET", name)) for name in HF_FILES}

    second = download("--model", "20b")
    assert second.exit_code == 0, second.output
    assert (target / SHARD).read_bytes() == (repo_dir / SHARD).read_bytes()
    refetched = {n for n in HF_FILES if len(fake.file_requests("GET", n)) > fetched_once[n]}
    assert refetched == {SHARD}  # files completed by the first run are kept
    assert sources.read_manifest(target)["commit"] == fake.commit(REPO)


def test_corrupted_body_exits_3_names_file_and_removes_it(fake, repo_dir, target):
    fake.corrupt.add(SHARD)
    result = download("--model", "20b")
    assert result.exit_code == 3, result.output
    (line,) = error_lines(result)
    assert SHARD in line and "sha256" in line and fake.commit(REPO) in line
    assert not (target / SHARD).exists() and sources.read_manifest(target) is None and _no_partial_files(target)

    fake.corrupt.clear()  # the server heals: a re-run fetches the file again and succeeds
    again = download("--model", "20b")
    assert again.exit_code == 0, again.output
    assert (target / SHARD).read_bytes() == (repo_dir / SHARD).read_bytes()


def test_no_verify_skips_sha256_and_a_later_checked_run_repairs(fake, repo_dir, target):
    fake.corrupt.add(SHARD)
    result = download("--model", "20b", "--no-verify")
    assert result.exit_code == 0, result.output
    assert "sha256 not checked" in result.stdout
    assert sources.read_manifest(target)["verified"] is False

    fake.corrupt.clear()  # a checked run finds the damaged file among those already here and fetches it again
    gets = len(fake.file_requests("GET"))
    again = download("--model", "20b")
    assert again.exit_code == 0, again.output
    assert len(fake.file_requests("GET")) == gets + 1 and "fetched 1 file(s)" in again.stdout
    assert f"replaced 1 damaged local file(s): {SHARD}" in again.stdout
    assert (target / SHARD).read_bytes() == (repo_dir / SHARD).read_bytes()
    assert sources.read_manifest(target)["verified"] is True


# ---------------------------------------------------------------------------------------------------------------
# Errors: one line, exit 2


def test_server_down_exits_2_fast_with_mirror_and_offline_hints(fake, monkeypatch):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    result = download("--model", "20b")
    assert time.monotonic() - start < 5
    assert result.exit_code == 2
    (line,) = error_lines(result)
    assert line.startswith("error: cannot reach") and "HF_ENDPOINT" in line and "HF_HUB_OFFLINE=1" in line


def test_401_gives_token_hint_and_never_prints_the_token(fake, monkeypatch, target):
    secret = "hf_SECRETtoken0123456789"
    fake.auth_token = "hf_the_right_one"
    monkeypatch.setenv("HF_TOKEN", secret)
    result = download("--model", "20b")
    assert result.exit_code == 2
    assert "HTTP 401" in result.stderr and "HF_TOKEN" in result.stderr
    assert secret not in result.output and secret not in result.stderr
    assert not target.exists()

    monkeypatch.setenv("HF_TOKEN", "hf_the_right_one")
    assert download("--model", "20b").exit_code == 0


def test_unknown_repo_and_revision_exit_2(fake):
    result = download("--model", "openai/no-such-model")
    assert result.exit_code == 2 and "repository openai/no-such-model not found" in result.stderr
    result = download("--model", "20b", "--revision", "no-such-branch")
    assert result.exit_code == 2 and "revision 'no-such-branch' not found" in result.stderr


@pytest.mark.parametrize("model", ["gpt-oss-20b", "20B", "a/b/c", "/abs", "owner/", "o--x/name", ""])
def test_bad_model_value_exits_2(model, fake):
    result = download("--model", model)
    assert result.exit_code == 2
    assert "--model" in result.stderr and "OWNER/NAME" in result.stderr
    assert fake.requests == []


# ---------------------------------------------------------------------------------------------------------------
# Offline use and finding downloads


def test_offline_uses_earlier_download_and_refuses_missing_one(fake, monkeypatch, target):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = download("--model", "20b")
    assert missing.exit_code == 2 and "HF_HUB_OFFLINE=1" in missing.stderr
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert download("--model", "20b").exit_code == 0
    count = len(fake.requests)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = download("--model", "20b")
    assert result.exit_code == 0, result.output
    assert len(fake.requests) == count and fake.commit(REPO) in result.stdout


def test_resolve_model_dir_and_read_manifest(fake, target, tmp_path):
    with pytest.raises(InputError, match=r"not downloaded.*gptoss-convert download --model 20b"):
        sources.resolve_model_dir("20b")
    with pytest.raises(InputError, match="--model"):
        sources.resolve_model_dir("not a model")
    assert sources.read_manifest(tmp_path) is None
    assert sources.resolve_model_dir(str(tmp_path)) == tmp_path  # an existing directory is taken as is

    assert download("--model", "20b").exit_code == 0
    assert sources.resolve_model_dir("20b") == target
    manifest = sources.read_manifest(target)
    assert sources.read_manifest(target / "original") == manifest  # the original/ layout belongs to the same download
    assert sources.provenance(manifest).startswith(f"{REPO}@{fake.commit(REPO)} (revision main, layout hf")


def test_help_does_not_import_huggingface_hub():
    import subprocess
    import sys

    code = (
        "import sys; from click.testing import CliRunner; from gptoss_convert.cli import cli; "
        "r = CliRunner().invoke(cli, ['download', '--help']); assert r.exit_code == 0, r.output; "
        "print('huggingface_hub' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


# ---------------------------------------------------------------------------------------------------------------
# The embedded tiny checkpoint, served and downloaded (only once tiny.py and the verify command exist)


@pytest.mark.slow
def test_tiny_checkpoint_round_trip(tmp_path, monkeypatch):
    tiny = pytest.importorskip("gptoss_convert.tiny")
    try:
        source = tiny.tiny_checkpoint_dir()
    except InputError as error:
        pytest.skip(f"tiny checkpoint not built yet: {error}")
    with FakeHub({"tiny/gpt-oss-tiny": source}) as server:
        _isolate(monkeypatch, tmp_path, server.url)
        out = tmp_path / "tiny"
        result = download("--model", "tiny/gpt-oss-tiny", "--layout", "all", "--local-dir", str(out))
        assert result.exit_code == 0, result.output
        expected = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()}
        assert _files_under(out) == {p for p in expected if not p.startswith("metal/")}
    if "verify" not in cli.commands:
        pytest.skip("no `verify` command yet")
    report = tmp_path / "report"
    args = ["verify", "--model", str(out), "--prompt", "1 2 3 4", "--report", str(report), "--quiet"]
    verified = CliRunner().invoke(cli, args)
    if isinstance(verified.exception, ImportError):
        pytest.skip(f"the verify pipeline is not complete yet: {verified.exception}")
    assert verified.exit_code == 0, verified.output
    reported = (report / "report.json").read_text()
    assert sources.read_manifest(out)["commit"] in reported  # the download's provenance reaches the report
