"""Property-based tests (hypothesis) of the readers of untrusted files: safetensors headers, the index, config.json
(HF and original/) and the download manifest. Every generated input either loads or raises our typed error with
exit code 2 or 3 (never another exception), and reading writes nothing. Over 1,000 inputs in all, derandomized
(the same ones on every run) and without hypothesis' example database (which would write .hypothesis/)."""

import json
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from gptoss_convert import pins, sources
from gptoss_convert.manifest import MANIFEST_NAME, read_manifest
from gptoss_convert.checkpoint import open_checkpoint, read_header
from gptoss_convert.errors import GptossConvertError
from gptoss_convert.remap import audit
from gptoss_convert.tiny import tiny_checkpoint_dir

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "gptoss-convert-hypothesis")  # its caches, not in the repo
EXAMPLES = 260  # per test; 5 tests
COUNTS: dict[str, int] = {}
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# JSON values, nested a little: the shapes a damaged or hostile file can take
SCALARS = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=12)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4), max_leaves=12)
NAMES = st.sampled_from(["model-00000-of-00002.safetensors", "../x.safetensors", "/etc/hostname", "", ".", "a/b",
                         "model.safetensors.index.json", "config.json", "nul\0byte", "original"]) | st.text(max_size=10)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz") / "ckpt"
    shutil.copytree(tiny_checkpoint_dir(), directory)
    return directory


def snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def loads_or_typed_error(read, root: Path, what: str):
    """Run `read()`; it may return or raise a GptossConvertError with exit code 2 or 3. Nothing may change."""
    COUNTS[what] = COUNTS.get(what, 0) + 1
    before = snapshot(root)
    try:
        read()
    except GptossConvertError as error:
        assert error.exit_code in (2, 3), error
        assert "\n" not in str(error), error
    assert snapshot(root) == before


# ---- safetensors headers -------------------------------------------------------------------------------------------

DTYPES = st.sampled_from(["BF16", "F32", "U8", "I64", "F8_E4M3", "bf16", ""]) | SCALARS
ENTRY = st.fixed_dictionaries({"dtype": DTYPES, "shape": st.lists(st.integers(-2, 2**40), max_size=3) | JSON,
                               "data_offsets": st.lists(st.integers(-8, 2**62), min_size=0, max_size=3) | JSON})
HEADER = st.dictionaries(st.text(max_size=6) | st.just("__metadata__"), ENTRY | JSON, max_size=4)


@st.composite
def safetensors_files(draw) -> bytes:
    kind = draw(st.sampled_from(["structured", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    body = json.dumps(draw(HEADER if kind == "structured" else JSON)).encode()
    declared = draw(st.sampled_from([len(body), len(body) - 1, len(body) + 3, 2**63, 0]))
    return struct.pack("<Q", declared % 2**64) + body + draw(st.binary(max_size=48))


@FUZZ
@given(data=safetensors_files())
def test_safetensors_headers(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("st", numbered=True)
    path = root / "x.safetensors"
    path.write_bytes(data)
    loads_or_typed_error(lambda: read_header(path), root, "header")


# ---- the index -----------------------------------------------------------------------------------------------------

@st.composite
def indexes(draw, real: dict):
    kind = draw(st.sampled_from(["mutated", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    index = json.loads(json.dumps(real))
    weight_map = index["weight_map"]
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["rename-file", "drop", "add", "total", "metadata", "map"]))
        names = sorted(weight_map)
        if action == "rename-file" and names:
            weight_map[draw(st.sampled_from(names))] = draw(NAMES)
        elif action == "drop" and names:
            weight_map.pop(draw(st.sampled_from(names)))
        elif action == "add":
            weight_map[draw(st.text(max_size=8))] = draw(NAMES | JSON)
        elif action == "total":
            index["metadata"] = {"total_size": draw(JSON | st.integers(-1, 2**64))}
        elif action == "metadata":
            index["metadata"] = draw(JSON)
        else:
            index["weight_map"] = draw(JSON)
            weight_map = {}
    return json.dumps(index).encode()


@FUZZ
@given(data=st.data())
def test_index(tiny, data):
    path = tiny / "model.safetensors.index.json"
    real = json.loads((tiny_checkpoint_dir() / path.name).read_text())
    path.write_bytes(data.draw(indexes(real)))
    try:
        loads_or_typed_error(lambda: audit(open_checkpoint(tiny)), tiny, "index")
    finally:
        shutil.copyfile(tiny_checkpoint_dir() / path.name, path)


# ---- config.json (HF layout) and original/config.json ------------------------------------------------------------

@st.composite
def configs(draw, real: dict):
    kind = draw(st.sampled_from(["mutated", "mutated", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    config = dict(real)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(config)) | st.text(max_size=8))
        if draw(st.booleans()) and key in config:
            config.pop(key)
        else:
            config[key] = draw(JSON | st.integers(-3, 2**40))
    return json.dumps(config).encode()


@FUZZ
@given(data=st.data())
def test_hf_config(tiny, data):
    path = tiny / "config.json"
    path.write_bytes(data.draw(configs(json.loads((tiny_checkpoint_dir() / "config.json").read_text()))))
    try:
        loads_or_typed_error(lambda: audit(open_checkpoint(tiny)), tiny, "config")
    finally:
        shutil.copyfile(tiny_checkpoint_dir() / "config.json", path)


@FUZZ
@given(data=st.data())
def test_original_config(tiny, data):
    path = tiny / "original" / "config.json"
    real = json.loads((tiny_checkpoint_dir() / "original" / "config.json").read_text())
    path.write_bytes(data.draw(configs(real)))
    try:
        loads_or_typed_error(lambda: audit(open_checkpoint(tiny / "original")), tiny, "original config")
    finally:
        shutil.copyfile(tiny_checkpoint_dir() / "original" / "config.json", path)


# ---- the download manifest ---------------------------------------------------------------------------------------

REAL_MANIFEST = {"format_version": 1, "repo_id": "openai/gpt-oss-20b", "revision": "main",
                 "commit": pins.GPT_OSS_20B_COMMIT, "layout": "hf", "verified": True,
                 "files": [{"path": "config.json", "size": 1319, "sha256": "0" * 64}]}


@st.composite
def manifests(draw):
    kind = draw(st.sampled_from(["mutated", "mutated", "json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "json":
        return json.dumps(draw(JSON)).encode()
    manifest = json.loads(json.dumps(REAL_MANIFEST))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(manifest)))
        if key == "files" and draw(st.booleans()):
            manifest["files"] = [draw(st.dictionaries(st.sampled_from(["path", "size", "sha256"]), NAMES | JSON))]
        elif draw(st.booleans()):
            manifest.pop(key)
        else:
            manifest[key] = draw(JSON)
    return json.dumps(manifest).encode()


@FUZZ
@given(data=manifests())
def test_manifest(tiny, data):
    """read_manifest, and what reads a manifest offline: provenance, the pins check, resolve_model_dir."""
    path = tiny / MANIFEST_NAME
    path.write_bytes(data)

    def read():
        manifest = read_manifest(tiny)
        if manifest is not None:
            sources.provenance(manifest)
            pins.check_checkpoint(tiny / "original", manifest)
            sources.resolve_model_dir(str(tiny))

    try:
        loads_or_typed_error(read, tiny, "manifest")
    finally:
        path.unlink()


def test_over_a_thousand_inputs_were_generated():
    if len(COUNTS) < 5:
        pytest.skip("runs after the five fuzz tests of this module")
    assert sum(COUNTS.values()) >= 1000, COUNTS
