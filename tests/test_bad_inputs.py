"""Bad inputs never corrupt, hang or mislead (issue 6; the case table is docs/reliability.md).

Every case runs on a copy of the embedded tiny checkpoint with one thing broken, through each entry point that can
meet it (`convert`, `verify`, `load_model`; `download` for its own options), and asserts the same three things:
- the exit code (or, for `load_model`, the exception type and its `exit_code`);
- ONE line of error, the last line printed, naming the file, tensor or option and what was expected; no traceback;
- nothing written: the whole test directory (checkpoint, working directory, would-be outputs) is unchanged.

The security rules (safetensors only, no remote code, paths confined to the checkpoint, tokens never written) are
at the end.
"""

import json
import os
import re
import shutil
import struct
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

import gptoss_convert
from gptoss_convert.cli import cli
from gptoss_convert.errors import GptossConvertError, InputError, IntegrityError
from gptoss_convert.tiny import tiny_checkpoint_dir

INDEX = "model.safetensors.index.json"
SINKS = "model.layers.1.self_attn.sinks"
O_PROJ = "model.layers.2.self_attn.o_proj.weight"
SCALES = "model.layers.2.mlp.experts.down_proj_scales"
REPO_ROOT = Path(__file__).resolve().parents[1]


# ---- the harness ---------------------------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root (symlinks not followed) with its kind, size and mtime: what 'unchanged' means."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            st = path.lstat()
            kind = "link" if path.is_symlink() else "dir" if path.is_dir() else "file"
            seen[path.relative_to(root).as_posix()] = (kind, st.st_size if kind == "file" else 0,
                                                       st.st_mtime_ns if kind == "file" else 0)
    return seen


def error_line(result, code: int) -> str:
    """The one error line of a failed CLI run: exit `code`, no traceback, exactly one `error:` (ours) or `Error:`
    (Click's usage errors) line, and it is the last line printed (after any progress bar)."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error: ", "Error: "))]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "\n" not in errors[0]
    return errors[0]


class Case:
    """A test directory holding `ckpt/` (a copy of the tiny checkpoint) and `cwd/` (the working directory)."""

    def __init__(self, root: Path):
        self.root = root
        self.ckpt = shutil.copytree(tiny_checkpoint_dir(), root / "ckpt")
        self.cwd = root / "cwd"
        self.cwd.mkdir()
        self.before = None

    def freeze(self):
        self.before = snapshot(self.root)

    def assert_untouched(self):
        assert snapshot(self.root) == self.before, "a file was written, changed or left behind"

    def cli(self, *args) -> tuple:
        self.freeze()
        result = CliRunner().invoke(cli, [str(a) for a in args])
        return result

    def fails(self, code: int, pattern: str, *args) -> str:
        """Run the CLI, expect exit `code` with one error line matching `pattern`, and nothing written."""
        line = error_line(self.cli(*args), code)
        assert re.search(pattern, line), line
        self.assert_untouched()
        return line


@pytest.fixture
def case(tmp_path, monkeypatch):
    c = Case(tmp_path)
    monkeypatch.chdir(c.cwd)  # a stray default output (verify-report/, ...) would show up in the snapshot
    monkeypatch.setenv("GPTOSS_CONVERT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GPTOSS_CONVERT_DEBUG", raising=False)
    return c


# ---- damage: each function breaks one thing in a copy of the tiny checkpoint ---------------------------------------

def shard_holding(d: Path, tensor: str = SINKS) -> Path:
    return d / json.loads((d / INDEX).read_text())["weight_map"][tensor]


def read_raw(path: Path):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return length, json.loads(data[8:8 + length]), data[8 + length:]


def write_raw(path: Path, header, body: bytes, length: int | None = None):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + body)


def edit_header(edit):
    def damage(d):
        path = shard_holding(d)
        _, header, body = read_raw(path)
        edit(header)
        write_raw(path, header, body)
    return damage


def by_offset(header) -> list[str]:
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])


def overlap(header):
    a, b = (header[n] for n in by_offset(header)[:2])
    size = b["data_offsets"][1] - b["data_offsets"][0]
    b["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + size]


def past_the_end(header):
    last = header[by_offset(header)[-1]]
    begin, end = last["data_offsets"]
    last["shape"] = [last["shape"][0] * 2, *last["shape"][1:]]  # consistent with its offsets, but no such bytes
    last["data_offsets"] = [begin, begin + 2 * (end - begin)]


def truncate(n):
    def damage(d):
        path = shard_holding(d)
        data = path.read_bytes()
        path.write_bytes(data[:-n] if n > 0 else b"")
    return damage


def append_bytes(d):
    path = shard_holding(d)
    path.write_bytes(path.read_bytes() + b"\0" * 16)


def header_length(change):
    def damage(d):
        path = shard_holding(d)
        data = path.read_bytes()
        (length,) = struct.unpack("<Q", data[:8])
        path.write_bytes(struct.pack("<Q", change(length, len(data))) + data[8:])
    return damage


def header_bytes(raw: bytes):
    def damage(d):
        path = shard_holding(d)
        length, _, body = read_raw(path)
        raw_padded = raw + b" " * (length - len(raw))
        path.write_bytes(struct.pack("<Q", length) + raw_padded + body)
    return damage


def edit_json(name, edit):
    def damage(d):
        path = d / name
        body = json.loads(path.read_text())
        result = edit(body)
        path.write_text(json.dumps(body if result is None else result))
    return damage


def write_text(name, text):
    return lambda d: (d / name).write_text(text)


def rewrite_tensors(change):
    """Load every tensor, change the dict, save the shards again (valid files; only the content is wrong)."""
    def damage(d):
        index = json.loads((d / INDEX).read_text())
        files = sorted(set(index["weight_map"].values()))
        tensors = {}
        for f in files:
            tensors.update(load_file(d / f))
        new = change(dict(tensors))
        placed = {n: index["weight_map"].get(n, files[-1]) for n in new}
        for f in files:
            save_file({n: t.contiguous() for n, t in new.items() if placed[n] == f}, d / f)
        index["weight_map"] = dict(sorted(placed.items()))
        index["metadata"]["total_size"] = sum(t.numel() * t.element_size() for t in new.values())
        (d / INDEX).write_text(json.dumps(index))
    return damage


def set_value(name, index, value):
    def change(tensors):
        t = tensors[name].clone()
        t[index] = value
        return {**tensors, name: t}
    return change


def symlink_out(d):
    shard = shard_holding(d)
    outside = d.parent / "elsewhere.safetensors"
    shutil.move(shard, outside)
    shard.symlink_to(outside)


def shard_as_directory(d):
    shard = shard_holding(d)
    shard.unlink()
    shard.mkdir()


def no_config(d):
    (d / "config.json").unlink()  # the HF weights stay, and original/ is still beside them


def config_as_directory(d):
    (d / "config.json").unlink()
    (d / "config.json").mkdir()


def only_original_without_weights(d):
    (d / "original" / "model.safetensors").unlink()


def own_format_version_2(d):
    for p in list(d.iterdir()):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    (d / "config.json").write_text(json.dumps({"format": "gptoss_model", "format_version": 2, "config": {}}))


def empty_directory(d):
    shutil.rmtree(d)
    d.mkdir()


def a_file(d):
    shutil.rmtree(d)
    d.write_text("not a checkpoint\n")


def nothing(d):
    shutil.rmtree(d)


def first_shard(d):
    return shard_holding(d).name


S = r"model-0000\d-of-00002\.safetensors"  # the damaged shard, named in the message
# id: (damage, which directory to pass (relative to ckpt), exit code, message pattern)
CHECKPOINT_CASES = {
    # safetensors files
    "truncated shard": (truncate(64), "", 3, rf"{S}: tensor data ends at byte \d+ but the file holds \d+ data bytes \(truncated\)"),
    "zero-byte shard": (truncate(0), "", 3, rf"{S}: truncated: 0 bytes, expected at least the 8-byte header length"),
    "header length past the end": (header_length(lambda n, size: size * 4), "", 3,
                                   rf"{S}: header length \d+ runs past the end of the file \(\d+ bytes\)"),
    "header length too short": (header_length(lambda n, size: n // 2), "", 3, rf"{S}: header is not valid JSON"),
    "header length absurd (2**63)": (header_length(lambda n, size: 2**63), "", 3, rf"{S}: header length \d+ runs past the end"),
    "header not JSON (binary)": (header_bytes(b"\xff\xfe\x00garbage"), "", 3, rf"{S}: header is not valid JSON"),
    "header a JSON list": (header_bytes(b"[1, 2, 3]"), "", 3, rf"{S}: header must be a JSON object, found list"),
    "header entry not an object": (edit_header(lambda h: h.update({SINKS: 5})), "", 3,
                                   rf"{S}: header entry for {SINKS} must be an object"),
    "offsets overlapping": (edit_header(overlap), "", 3, rf"{S}: \S+ data_offsets \[\d+, \d+\] overlap those of \S+"),
    "offsets past the end": (edit_header(past_the_end), "", 3,
                             rf"{S}: tensor data ends at byte \d+ but the file holds \d+ data bytes"),
    "offsets negative": (edit_header(lambda h: h[SINKS].update(data_offsets=[-8, 0])), "", 3,
                         rf"{S}: {SINKS} has invalid data_offsets \[-8, 0\]"),
    "bytes after the last tensor": (append_bytes, "", 3, rf"{S}: 16 unexpected bytes after the last tensor"),
    # the index
    "index names a missing file": (edit_json(INDEX, lambda i: i["weight_map"].update({SINKS: "model-00009-of-00002.safetensors"})),
                                   "", 3, r"index.json: weight_map names model-00009-of-00002.safetensors, but \S+ does not exist"),
    "index path ../": (edit_json(INDEX, lambda i: i["weight_map"].update({SINKS: "../elsewhere.safetensors"})), "", 3,
                       r"index.json: weight_map names '\.\./elsewhere\.safetensors', a path outside \S+; expected a file inside it"),
    "index path absolute": (edit_json(INDEX, lambda i: i["weight_map"].update({SINKS: "/etc/hostname"})), "", 3,
                            r"index.json: weight_map names '/etc/hostname', a path outside \S+; expected a file inside it"),
    "shard symlink escaping": (symlink_out, "", 3, rf"{S} is a symlink to \S+elsewhere.safetensors, outside the checkpoint directory"),
    "shard is a directory": (shard_as_directory, "", 3, rf"weight_map names {S}, but \S+ is not a regular file"),
    "index not JSON": (write_text(INDEX, "{\"weight_map\": "), "", 3, r"index.json: cannot read JSON"),
    "index without weight_map": (write_text(INDEX, "{\"metadata\": {}}"), "", 3, r"index.json: expected a non-empty 'weight_map' object"),
    "index lists a tensor no file holds": (edit_json(INDEX, lambda i: i["weight_map"].update({"model.ghost": "model-00000-of-00002.safetensors"})),
                                           "", 3, rf"index.json: model.ghost is listed in {S} but that file does not hold it"),
    # tensors vs the config
    "missing tensor": (rewrite_tensors(lambda t: {k: v for k, v in t.items() if k != SINKS}), "", 3,
                       rf"missing tensor {SINKS}: expected BF16 \[4\], found none"),
    "unexpected extra tensor": (rewrite_tensors(lambda t: {**t, "model.extra.weight": torch.zeros(2, dtype=torch.bfloat16)}), "", 3,
                                r"unexpected tensor model.extra.weight \(BF16 \[2\] in \S+\): not used by a 4-layer, 4-expert gpt-oss"),
    "wrong shape": (rewrite_tensors(lambda t: {**t, SINKS: torch.zeros(8, dtype=torch.bfloat16)}), "", 3,
                    rf"{SINKS}: expected shape \[4\], found \[8\] \(in {S}\)"),
    "wrong dtype": (rewrite_tensors(lambda t: {**t, SINKS: t[SINKS].float()}), "", 3, rf"{SINKS}: expected dtype BF16, found F32"),
    "blocks/scales shape mismatch": (rewrite_tensors(lambda t: {**t, SCALES: t[SCALES][..., :1].contiguous()}), "", 3,
                                     rf"down_proj_blocks \[4, 64, 2, 16\] and {SCALES} \[4, 64, 1\] do not pair up "
                                     r"\(expected \[4, 64, 2, 16\] and \[4, 64, 2\]\)"),
    "0xFF scale": (rewrite_tensors(set_value(SCALES, (0, 0, 0), 0xFF)), "", 3,
                   rf"{S}: {SCALES}: 1 of 512 MXFP4 scale bytes are 0xFF"),
    "NaN in a bf16 weight": (rewrite_tensors(set_value(O_PROJ, (3, 5), float("nan"))), "", 3,
                             rf"{S}: {O_PROJ} holds 1 NaN/Inf value\(s\), first at index \[3, 5\]; expected finite weights"),
    "Inf in a bf16 weight": (rewrite_tensors(set_value("model.norm.weight", 7, float("-inf"))), "", 3,
                             r"model.norm.weight holds 1 NaN/Inf value\(s\), first at index \[7\]; expected finite weights"),
    # configs
    "config.json missing": (no_config, "", 2, r"ckpt/config.json: missing; expected the checkpoint's config.json"),
    "config.json a directory": (config_as_directory, "", 2, r"ckpt/config.json: not a regular file; expected"),
    "config.json malformed": (write_text("config.json", "{\"hidden_size\": 64,"), "", 2, r"ckpt/config.json: cannot read JSON"),
    "config.json a list": (write_text("config.json", "[64]"), "", 2, r"ckpt/config.json: expected a JSON object, found list"),
    "config.json more layers than the tensors": (edit_json("config.json", lambda c: c.update(num_hidden_layers=5, layer_types=None)),
                                                 "", 3, r"missing tensor model.layers.4.\S+: expected"),
    "config.json other hidden_size": (edit_json("config.json", lambda c: c.update(hidden_size=96)), "", 3,
                                      r"model.embed_tokens.weight: expected shape \[512, 96\], found \[512, 64\]"),
    "config.json size not an integer": (edit_json("config.json", lambda c: c.update(num_attention_heads="four")), "", 2,
                                        r"ckpt/config.json: num_attention_heads must be a positive integer, found 'four'"),
    "config.json negative size": (edit_json("config.json", lambda c: c.update(hidden_size=-64)), "", 2,
                                  r"ckpt/config.json: hidden_size must be a positive integer, found -64"),
    "unknown quant_method": (edit_json("config.json", lambda c: c["quantization_config"].update(quant_method="gptq")), "", 2,
                             r"ckpt/config.json: quantization_config.quant_method must be 'mxfp4', found 'gptq'$"),
    "original/config.json unknown key": (edit_json("original/config.json", lambda c: c.update(bogus=1)), "original", 2,
                                         r"original/config.json: expected exactly the 16 OpenAI ModelConfig keys; unknown bogus"),
    "original/ without weights": (only_original_without_weights, "original", 3,
                                  r"original: original layout without weights; expected model.safetensors"),
    "own format, format_version 2": (own_format_version_2, "", 2, r"ckpt/config.json: expected format_version 1 and a 'config' object, found 2"),
    # not a checkpoint at all
    "empty directory": (empty_directory, "", 2, r"ckpt: no checkpoint found; expected config.json with"),
    "a file where a directory is expected": (a_file, "", 2, r"--model \S+ckpt: not a directory; expected tiny, 20b, 120b or a checkpoint directory"),
    "no such path": (nothing, "", 2, r"--model \S+ckpt: no such directory; expected tiny, 20b, 120b, a downloaded OWNER/NAME"),
}


def _damaged(case, kind):
    damage, sub, code, pattern = CHECKPOINT_CASES[kind]
    damage(case.ckpt)
    return case.ckpt / sub if sub else case.ckpt, code, pattern


@pytest.mark.parametrize("kind", list(CHECKPOINT_CASES))
def test_convert_refuses_damaged_checkpoint(case, kind):
    source, code, pattern = _damaged(case, kind)
    out = case.root / "out"
    line = case.fails(code, pattern, "convert", "--model", source, "--out", out)
    assert line.startswith("error: ")
    assert not out.exists()


@pytest.mark.parametrize("kind", list(CHECKPOINT_CASES))
def test_verify_refuses_damaged_checkpoint(case, kind):
    source, code, pattern = _damaged(case, kind)
    case.fails(code, pattern, "verify", "--model", source, "--quiet", "--report", case.root / "report",
               "--junit", case.root / "junit.xml")


@pytest.mark.parametrize("kind", list(CHECKPOINT_CASES))
def test_load_model_refuses_damaged_checkpoint(case, kind):
    source, code, pattern = _damaged(case, kind)
    case.freeze()
    error_type = IntegrityError if code == 3 else InputError
    with pytest.raises(error_type) as raised:
        gptoss_convert.load_model(source)
    assert raised.value.exit_code == code
    assert "\n" not in str(raised.value) and re.search(pattern, f"error: {raised.value}"), str(raised.value)
    case.assert_untouched()


def test_dry_run_of_damaged_checkpoint_writes_nothing(case):
    rewrite_tensors(lambda t: {k: v for k, v in t.items() if k != SINKS})(case.ckpt)
    case.fails(3, rf"missing tensor {SINKS}", "convert", "--model", case.ckpt, "--out", case.root / "out", "--dry-run")


# ---- convert: options and the output directory ---------------------------------------------------------------------

def test_convert_out_inside_the_checkpoint(case):
    case.fails(2, r"--out \S+ckpt/converted is inside the checkpoint \S+; choose a directory outside it",
               "convert", "--model", case.ckpt, "--out", case.ckpt / "converted")


def test_convert_out_under_a_regular_file(case):
    (case.root / "afile").write_text("x")
    case.fails(2, r"--out \S+afile/out: \S+afile is a file, not a directory; expected a directory path",
               "convert", "--model", "tiny", "--out", case.root / "afile" / "out")


def test_convert_out_is_an_existing_file(case):
    (case.root / "out").write_text("keep me")
    case.fails(2, r"--out \S+/out already exists; pass --force to replace it", "convert", "--model", "tiny",
               "--out", case.root / "out")
    assert (case.root / "out").read_text() == "keep me"


def test_convert_bad_dtype(case):
    case.fails(2, r"Invalid value for '--dtype': 'int8' is not one of 'bfloat16', 'float32'",
               "convert", "--model", "tiny", "--out", case.root / "out", "--dtype", "int8")


def test_convert_unknown_model_name(case):
    case.fails(2, r"--model 30b: no such directory; expected tiny, 20b, 120b", "convert", "--model", "30b",
               "--out", case.root / "out")


def test_convert_model_not_downloaded_names_the_command(case):
    case.fails(2, r"openai/gpt-oss-7b is not downloaded .*: run `gptoss-convert download --model openai/gpt-oss-7b` first",
               "convert", "--model", "openai/gpt-oss-7b", "--out", case.root / "out")


def test_damaged_download_manifest(case, tmp_path):
    target = tmp_path / "home" / "models" / "openai--gpt-oss-20b"
    shutil.copytree(tiny_checkpoint_dir(), target)
    (target / "gptoss-manifest.json").write_text("{\"repo_id\": ")
    case.fails(3, r"openai--gpt-oss-20b/gptoss-manifest.json: unreadable download manifest .*; re-run `gptoss-convert download`",
               "convert", "--model", "20b", "--out", case.root / "out")
    (target / "gptoss-manifest.json").write_text("{\"repo_id\": \"openai/gpt-oss-20b\"}")
    case.fails(3, r"gptoss-manifest.json: download manifest lacks revision, commit, layout, files",
               "verify", "--model", "20b", "--report", case.root / "report")


# ---- verify: options -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, pattern", [
    (["--atol", "-1"], r"Invalid value for '--atol': must be a number >= 0, got -1.0"),
    (["--atol", "nan"], r"Invalid value for '--atol': must be a number >= 0, got nan"),
    (["--rtol", "-0.5"], r"Invalid value for '--rtol': must be a number >= 0, got -0.5"),
    (["--max-kl", "abc"], r"Invalid value for '--max-kl': 'abc' is not a valid float"),
    (["--min-top1", "1.5"], r"Invalid value for '--min-top1': must be between 0 and 1, got 1.5"),
    (["--dtype", "int8"], r"Invalid value for '--dtype': 'int8' is not one of 'float32', 'bfloat16'"),
    (["--model", "gpt-oss-7b"], r"--model gpt-oss-7b: no such directory; expected tiny, 20b, 120b"),
], ids=["atol -1", "atol nan", "rtol -0.5", "max-kl abc", "min-top1 1.5", "dtype int8", "unknown model"])
def test_verify_bad_option(case, args, pattern):
    case.fails(2, pattern, "verify", *args, "--report", case.root / "report")


def test_verify_report_path_is_a_file(case):
    (case.root / "report").write_text("x")
    case.fails(2, r"Invalid value for '--report': Directory \S+report' is a file", "verify", "--report", case.root / "report")


@pytest.mark.parametrize("content, pattern", [
    (None, r"--token-ids \S+ids.json: cannot read a JSON list of token ids \(.*No such file"),
    ("[1, 2,", r"--token-ids \S+ids.json: cannot read a JSON list of token ids"),
    ("{\"ids\": [1, 2]}", r"--token-ids \S+ids.json: expected a JSON list of ints, or a list of such lists"),
    ("[[1, 2], []]", r"--token-ids \S+ids.json: expected a JSON list of ints, or a list of such lists"),
    ("[1, 2, 512]", r"prompt 0: token id 512 is outside the vocabulary 0..511"),
], ids=["missing file", "not JSON", "an object", "an empty prompt", "id outside the vocabulary"])
def test_verify_bad_token_ids(case, content, pattern):
    ids = case.root / "ids.json"
    if content is not None:
        ids.write_text(content)
    case.fails(2, pattern, "verify", "--token-ids", ids, "--report", case.root / "report")


# ---- load_model: arguments -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, pattern", [
    ({"dtype": "int8"}, r"dtype must be one of bfloat16, float32, got 'int8'"),
    ({"dtype": torch.int64}, r"dtype must be float32, bfloat16 or float16, got torch.int64"),
    ({"device": "tpu"}, r"device 'tpu': not a torch device; expected 'cpu', 'cuda' or 'cuda:N'"),
    ({"source": "gpt-oss-7b"}, r"--model gpt-oss-7b: no such directory"),
], ids=["dtype int8", "dtype int64", "device tpu", "unknown source"])
def test_load_model_bad_argument(case, kwargs, pattern):
    case.freeze()
    with pytest.raises(InputError) as raised:
        gptoss_convert.load_model(**kwargs)
    assert raised.value.exit_code == 2 and "\n" not in str(raised.value)
    assert re.search(pattern, str(raised.value)), str(raised.value)
    case.assert_untouched()


# ---- download: options and places ----------------------------------------------------------------------------------

@pytest.fixture
def hub_env(case, monkeypatch, tmp_path):
    """A fake hub serving the tiny checkpoint as openai/gpt-oss-20b (tests/fakehub.py); no internet."""
    from tests.fakehub import FakeHub
    from tests.test_hub import _isolate

    with FakeHub({"openai/gpt-oss-20b": tiny_checkpoint_dir()}) as server:
        _isolate(monkeypatch, tmp_path, server.url)
        yield server


def test_download_bad_layout(case, hub_env):
    case.fails(2, r"Invalid value for '--layout': 'bogus' is not one of 'hf', 'original', 'all'",
               "download", "--model", "20b", "--layout", "bogus")
    assert hub_env.requests == []


def test_download_local_dir_under_a_regular_file(case, hub_env):
    (case.root / "afile").write_text("x")
    case.fails(2, r"--local-dir \S+afile/sub: \S+afile is a file, not a directory; expected a directory to download into",
               "download", "--model", "20b", "--local-dir", case.root / "afile" / "sub")


def test_download_endpoint_not_a_url(case, hub_env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "not-a-url")
    case.fails(2, r"cannot reach not-a-url \(UnsupportedProtocol: .*\): check the network; HF_ENDPOINT can point at a mirror",
               "download", "--model", "20b")


def test_download_bad_model_name(case, hub_env):
    case.fails(2, r"--model '\.\./x': expected 20b, 120b or a hub repo id OWNER/NAME", "download", "--model", "../x")
    assert hub_env.requests == []


# ---- security: checkpoints are data, never code ---------------------------------------------------------------------

SOURCES = sorted(p for package in ("gptoss_convert", "gptoss_model") for p in (REPO_ROOT / package).rglob("*.py"))
FORBIDDEN = {
    "torch.load": re.compile(r"\btorch\.load\b"),
    "pickle": re.compile(r"\b(c?pickle|dill|joblib|marshal)\b"),
    "weights_only=False": re.compile(r"weights_only\s*=\s*False"),
    "trust_remote_code": re.compile(r"trust_remote_code"),
    "eval/exec": re.compile(r"(?<![.\w])(eval|exec)\s*\("),
    "dynamic import": re.compile(r"\b(importlib\.import_module|__import__|spec_from_file_location|get_class_from_dynamic_module)\b"),
}


def _code_lines(path: Path):
    """Source lines without comments and docstrings (a docstring may say 'nothing here unpickles anything')."""
    import ast
    import io
    import tokenize

    text = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = dict(enumerate(text.splitlines(), start=1))
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            lines[row] = lines[row][:col]
    return {n: line for n, line in lines.items() if n not in docstrings}


# Importing code is the feature of `verify --candidate SPEC` (the implementation the user names on the command line,
# docs/candidates.md) and of the `openai` built-in (OpenAI's installed gpt-oss package): those two modules, and only
# for that rule. Nothing a checkpoint holds is ever imported or run.
ALLOWED = {"dynamic import": {"gptoss_convert/candidates/__init__.py", "gptoss_convert/candidates/openai_torch.py"}}


@pytest.mark.parametrize("rule", list(FORBIDDEN))
def test_source_never_unpickles_or_runs_checkpoint_code(rule):
    assert len(SOURCES) > 15
    hits = [f"{p.relative_to(REPO_ROOT)}:{n}: {line}" for p in SOURCES for n, line in _code_lines(p).items()
            if FORBIDDEN[rule].search(line) and p.relative_to(REPO_ROOT).as_posix() not in ALLOWED.get(rule, ())]
    assert hits == [], f"{rule} in the product code: {hits}"


class Planted:
    """A hostile checkpoint: the tiny one plus a pickle that would run code if loaded, `auto_map` pointing at a
    Python file that would run code if imported, and both marker files' paths to check nothing ran."""

    def __init__(self, d: Path):
        self.dir, self.marker = d, d.parent / "PWNED"
        payload = f"open({str(self.marker)!r}, 'w').write('code from the checkpoint ran')"
        # protocol 0 pickle calling builtins.exec(payload) when unpickled
        pickle_bytes = b"cbuiltins\nexec\n(V" + payload.encode("raw_unicode_escape") + b"\ntR."
        for name in ("pytorch_model.bin", "model.bin", "original/consolidated.00.pth", "training_args.bin"):
            (d / name).write_bytes(pickle_bytes)
        (d / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {"lm_head.weight": "pytorch_model.bin"}}))
        (d / "modeling_evil.py").write_text(payload + "\n")
        (d / "configuration_evil.py").write_text(payload + "\n")
        config = json.loads((d / "config.json").read_text())
        config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                              "AutoModelForCausalLM": "modeling_evil.EvilModel"}
        (d / "config.json").write_text(json.dumps(config))

    def assert_nothing_ran(self):
        assert not self.marker.exists(), "code from the checkpoint ran"
        assert not {"modeling_evil", "configuration_evil"} & set(sys.modules)


def test_the_planted_payloads_are_live(tmp_path):
    """The baseline: loaded the unsafe way, the planted pickle and module do run code, so the tests that show they
    are never loaded mean something."""
    import pickle
    import runpy

    planted = Planted(shutil.copytree(tiny_checkpoint_dir(), tmp_path / "ckpt"))
    pickle.loads((planted.dir / "pytorch_model.bin").read_bytes())
    assert planted.marker.read_text() == "code from the checkpoint ran"
    planted.marker.unlink()
    runpy.run_path(str(planted.dir / "modeling_evil.py"))
    assert planted.marker.exists()


@pytest.fixture
def hostile(case, monkeypatch):
    """The planted checkpoint, with every unpickling entry point made to fail loudly if called."""
    import pickle

    planted = Planted(case.ckpt)

    def refuse(*args, **kwargs):
        raise AssertionError(f"an unpickler was called on {args[:1]}")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    opened = []
    real_open = open

    def watching_open(file, *args, **kwargs):
        if str(file).endswith((".bin", ".pth")) or str(file).endswith("_evil.py"):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    import builtins
    import io

    monkeypatch.setattr(builtins, "open", watching_open)
    monkeypatch.setattr(io, "open", watching_open)
    planted.opened = opened
    return planted


def test_pickles_and_remote_code_are_never_touched_by_convert_and_load_model(case, hostile):
    out = case.root / "out"
    result = CliRunner().invoke(cli, ["convert", "--model", str(case.ckpt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = gptoss_convert.load_model(case.ckpt)
    assert model.config.num_hidden_layers == 4
    again = gptoss_convert.load_model(out)
    assert all(torch.equal(a.bfloat16(), b.bfloat16()) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert hostile.opened == []
    assert {p.name for p in out.iterdir()}.isdisjoint({"pytorch_model.bin", "model.bin", "modeling_evil.py",
                                                        "configuration_evil.py", "training_args.bin"})
    hostile.assert_nothing_ran()


def test_pickles_and_remote_code_are_never_touched_by_verify(case, hostile):
    result = CliRunner().invoke(cli, ["verify", "--model", str(case.ckpt), "--quiet", "--prompt", "1 2 3 4 5",
                                      "--report", str(case.root / "r")])
    assert result.exit_code == 0, result.output
    assert hostile.opened == []
    hostile.assert_nothing_ran()


def test_a_checkpoint_of_only_pickles_is_refused(case, monkeypatch):
    """No safetensors at all, only pytorch_model.bin: refused as 'no checkpoint found', never loaded."""
    Planted(case.ckpt)
    for p in [*case.ckpt.glob("*.safetensors"), case.ckpt / INDEX]:
        p.unlink()
    shutil.rmtree(case.ckpt / "original")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    case.fails(2, r"ckpt: config.json but no weights; expected model.safetensors.index.json or model.safetensors",
               "convert", "--model", case.ckpt, "--out", case.root / "out")
    assert not (case.root / "PWNED").exists()


def test_transformers_is_built_from_our_config_never_from_the_checkpoint_directory(monkeypatch):
    """The oracle builds Transformers' classes from a config object, never through Auto* / from_pretrained, which is
    where trust_remote_code would apply."""
    import transformers

    calls = []
    for name in ("AutoConfig", "AutoModel", "AutoModelForCausalLM"):
        auto = getattr(transformers, name)
        monkeypatch.setattr(auto, "from_pretrained", classmethod(lambda cls, *a, **k: calls.append((cls, a, k))))
    from gptoss_convert.candidates import load_reference
    from gptoss_convert.candidates.protocol import Context
    from gptoss_convert.tiny import TINY_CONFIG, tiny_checkpoint_dir

    reference, _ = load_reference("transformers")
    evil = TINY_CONFIG.replace(extra={"auto_map": {"AutoModel": "modeling_evil.EvilModel"}})
    reference.setup(Context(tiny_checkpoint_dir(), evil, torch.float32, "cpu"))
    assert calls == [] and type(reference.hf_config).__name__ == "GptOssConfig"
    assert "modeling_evil" not in sys.modules


# ---- security: hub tokens never leave the process ------------------------------------------------------------------

SECRET = "hf_SeCrEt_issue6_do_not_print_0123456789"


def _files_holding(root: Path, needle: bytes) -> list[str]:
    hits = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink() and needle in path.read_bytes():
                hits.append(str(path))
    return hits


def test_hub_token_never_in_output_logs_reports_or_files(case, hub_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    outputs = []

    hub_env.auth_token = "hf_some_other_token"  # the hub refuses our token: 401
    refused = CliRunner().invoke(cli, ["download", "--model", "20b"])
    line = error_line(refused, 2)
    assert "HTTP 401" in line and "HF_TOKEN" in line
    outputs.append(refused.output)

    hub_env.auth_token = SECRET  # the hub accepts it
    fetched = CliRunner().invoke(cli, ["download", "--model", "20b", "--layout", "all"])
    assert fetched.exit_code == 0, fetched.output
    outputs.append(fetched.output)
    target = tmp_path / "home" / "models" / "openai--gpt-oss-20b"
    assert (target / "gptoss-manifest.json").is_file()

    converted = CliRunner().invoke(cli, ["convert", "--model", "20b", "--out", str(tmp_path / "converted")])
    assert converted.exit_code == 0, converted.output
    outputs.append(converted.output)
    verified = CliRunner().invoke(cli, ["verify", "--model", "20b", "--prompt", "1 2 3 4", "--report",
                                        str(tmp_path / "report"), "--junit", str(tmp_path / "report" / "junit.xml")])
    assert verified.exit_code == 0, verified.output
    outputs.append(verified.output)
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"report.json", "report.md", "report.html", "junit.xml"}
    assert "openai/gpt-oss-20b" in (tmp_path / "report" / "report.json").read_text()  # the manifest reached it

    assert all(SECRET not in text for text in outputs)
    assert _files_holding(tmp_path, SECRET.encode()) == []  # manifest, hub metadata, reports, converted files
