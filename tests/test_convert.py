"""gptoss_convert.convert, `gptoss-convert convert` and `load_model`: the round trip through our own format, dry-run,
--force, refusals, and every damaged checkpoint failing with one clear line, exit 3, and nothing left behind."""

import json
import re
import shutil
import struct

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

import gptoss_convert
from gptoss_model import GPTOssModelFull
from gptoss_convert import convert as conversion
from gptoss_convert.checkpoint import open_checkpoint
from gptoss_convert.cli import cli
from gptoss_convert.remap import iter_tensors
from gptoss_convert.tiny import TINY_CONFIG, tiny_checkpoint_dir

INDEX = "model.safetensors.index.json"


def run(*args):
    result = CliRunner().invoke(cli, ["convert", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture
def tiny(tmp_path):
    return shutil.copytree(tiny_checkpoint_dir(), tmp_path / "tiny")


# ---- the round trip ------------------------------------------------------------------------------------------------

def test_convert_tiny_then_from_pretrained_equals_load_model(tmp_path):
    code, out, err = run("--model", "tiny", "--out", tmp_path / "ours")
    assert code == 0, err
    assert out.startswith(f"wrote {tmp_path / 'ours'}: 71 tensors in 1 shard(s)")
    loaded = GPTOssModelFull.from_pretrained(tmp_path / "ours", dtype=torch.float32)
    direct = gptoss_convert.load_model("tiny")
    assert loaded.config == direct.config == TINY_CONFIG
    ours, theirs = loaded.state_dict(), direct.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[n], theirs[n]) for n in ours)
    assert {p.name for p in (tmp_path / "ours").iterdir()} >= {"config.json", INDEX, "tokenizer.json",
                                                              "model-00001-of-00001.safetensors"}
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["format"] == "gptoss_model"
    assert leftovers(tmp_path) == []


def test_hf_and_original_convert_to_identical_files(tmp_path):
    assert run("--model", "tiny", "--out", tmp_path / "a")[0] == 0
    assert run("--model", tiny_checkpoint_dir() / "original", "--out", tmp_path / "b")[0] == 0
    shard = "model-00001-of-00001.safetensors"
    assert (tmp_path / "a" / shard).read_bytes() == (tmp_path / "b" / shard).read_bytes()


def test_float32_sharded_output_and_reading_our_own_format(tmp_path):
    plan = conversion.convert("tiny", tmp_path / "f32", torch.float32, progress=False, max_shard_bytes=400_000)
    assert len(plan.shards) > 1 and plan.total_size == 2 * 633_536
    tensors = load_file(tmp_path / "f32" / plan.shards[0].file)
    assert all(t.dtype == torch.float32 for t in tensors.values())
    ckpt = open_checkpoint(tmp_path / "f32")
    assert ckpt.layout == "gptoss_model" and ckpt.config == TINY_CONFIG
    again = gptoss_convert.load_model(tmp_path / "f32", dtype="bfloat16")
    reference = gptoss_convert.load_model("tiny", dtype=torch.bfloat16)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), reference.state_dict().values()))


def test_load_model_dtype_and_meta_free():
    model = gptoss_convert.load_model("tiny", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    logits = model(torch.tensor([[1, 2, 3]]))
    assert logits.shape == (1, 3, 512) and torch.isfinite(logits).all()


# ---- options -------------------------------------------------------------------------------------------------------

def test_dry_run_writes_nothing(tmp_path):
    code, out, _ = run("--model", "tiny", "--out", tmp_path / "x", "--dry-run")
    assert code == 0
    assert "model-00001-of-00001.safetensors  71 tensors  633,536 bytes" in out
    assert "total: 71 tensors in 1 shard(s), 633,536 bytes" in out
    assert list(tmp_path.iterdir()) == []


def test_existing_out_needs_force(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    code, _, err = run("--model", "tiny", "--out", target)
    assert code == 2 and err.strip() == f"error: --out {target} already exists; pass --force to replace it"
    assert (target / "keep.txt").exists()
    code, _, err = run("--model", "tiny", "--out", target, "--force")
    assert code == 0, err
    assert not (target / "keep.txt").exists() and (target / INDEX).exists()
    assert leftovers(tmp_path) == []


def test_out_inside_or_around_the_checkpoint_is_refused(tiny, tmp_path):
    code, _, err = run("--model", tiny, "--out", tiny / "converted")
    assert code == 2 and "is inside the checkpoint" in err
    code, _, err = run("--model", tiny, "--out", tmp_path, "--force")
    assert code == 2 and "contains the checkpoint" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_unknown_model_names_the_download_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTOSS_CONVERT_HOME", str(tmp_path / "home"))
    code, _, err = run("--model", "20b", "--out", tmp_path / "x")
    assert code == 2 and "gptoss-convert download --model 20b" in err


def test_bad_dtype_is_a_usage_error(tmp_path):
    code, _, err = run("--model", "tiny", "--out", tmp_path / "x", "--dtype", "int8")
    assert code == 2 and "Invalid value for '--dtype'" in err


def test_interrupt_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []
    real = conversion._cast_chunks

    def interrupted(tensor, dtype):
        calls.append(1)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return real(tensor, dtype)

    monkeypatch.setattr(conversion, "_cast_chunks", interrupted)
    code, _, err = run("--model", "tiny", "--out", tmp_path / "x")
    assert code == 130 and "interrupted" in err
    assert list(tmp_path.iterdir()) == []


# ---- damaged checkpoints -------------------------------------------------------------------------------------------

def _rewrite(directory, change):
    index = json.loads((directory / INDEX).read_text())
    files = sorted(set(index["weight_map"].values()))
    tensors = {}
    for f in files:
        tensors.update(load_file(directory / f))
    new = change(dict(tensors))
    placed = {n: index["weight_map"].get(n, files[-1]) for n in new}
    for f in files:
        save_file({n: t.contiguous() for n, t in new.items() if placed[n] == f}, directory / f)
    index["weight_map"] = dict(sorted(placed.items()))
    index["metadata"]["total_size"] = sum(t.numel() * t.element_size() for t in new.values())
    (directory / INDEX).write_text(json.dumps(index))


def _edit_tensors(change):
    return lambda d: _rewrite(d, change)


def _set_scale_ff(tensors):
    t = tensors["model.layers.2.mlp.experts.down_proj_scales"].clone()
    t[0, 0, 0] = 0xFF
    tensors["model.layers.2.mlp.experts.down_proj_scales"] = t
    return tensors


def _edit_index(path_value):
    def damage(d):
        index = json.loads((d / INDEX).read_text())
        index["weight_map"]["lm_head.weight"] = path_value
        (d / INDEX).write_text(json.dumps(index))
    return damage


def _truncate(d):
    shard = d / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:-64])


def _bad_json(d):
    shard = d / "model-00001-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[8:10] = b"[{"
    shard.write_bytes(bytes(data))


def _length_past_eof(d):
    shard = d / "model-00001-of-00002.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(struct.pack("<Q", 10**9) + data[8:])


SINKS = "model.layers.1.self_attn.sinks"
BAD = {
    "truncated shard": (_truncate, r"model-00001-of-00002.safetensors: tensor data ends at byte \d+ but the file holds \d+ data bytes \(truncated\)"),
    "missing tensor": (_edit_tensors(lambda t: {k: v for k, v in t.items() if k != SINKS}), rf"missing tensor {SINKS}"),
    "extra tensor": (_edit_tensors(lambda t: {**t, "model.extra.weight": torch.zeros(2, dtype=torch.bfloat16)}),
                     r"unexpected tensor model.extra.weight"),
    "wrong shape": (_edit_tensors(lambda t: {**t, SINKS: torch.zeros(8, dtype=torch.bfloat16)}),
                    rf"{SINKS}: expected shape \[4\], found \[8\]"),
    "wrong dtype": (_edit_tensors(lambda t: {**t, SINKS: t[SINKS].half()}), rf"{SINKS}: expected dtype BF16, found F16"),
    "0xFF scale": (_edit_tensors(_set_scale_ff), r"down_proj_scales: 1 of 512 MXFP4 scale bytes are 0xFF"),
    "index names a missing file": (_edit_index("model-00003-of-00002.safetensors"),
                                   r"weight_map names model-00003-of-00002.safetensors, but .* does not exist"),
    "index path escapes": (_edit_index("../tiny/model-00000-of-00002.safetensors"), r"a path outside"),
    "bad header JSON": (_bad_json, r"model-00001-of-00002.safetensors: header is not valid JSON"),
    "header length past EOF": (_length_past_eof, r"header length 1000000000 runs past the end of the file"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_damaged_checkpoint_fails_cleanly(tiny, tmp_path, kind):
    damage, message = BAD[kind]
    damage(tiny)
    code, out, err = run("--model", tiny, "--out", tmp_path / "out")
    assert code == 3, (kind, err)
    errors = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.strip().endswith(errors[0]), err  # one line, last (after the progress bar)
    assert re.search(message, errors[0]), errors[0]
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no output, no temporary directory
