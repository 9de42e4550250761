"""gptoss_convert.checkpoint (and the streaming safetensors writer): layout detection, config parsing, header and
index validation, sha256. Damaged checkpoints are built by copying the embedded tiny one and breaking one thing."""

import hashlib
import json
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from gptoss_convert.checkpoint import file_sha256, open_checkpoint, read_header
from gptoss_convert.config_files import config_from_original
from gptoss_convert.errors import InputError, IntegrityError
from gptoss_model.config import ORIGINAL_CONFIG_KEYS, original_config_dict
from gptoss_model.io import ShardWriter, TensorSpec, encode_header
from gptoss_convert.tiny import TINY_CONFIG, tiny_checkpoint_dir

INDEX = "model.safetensors.index.json"


@pytest.fixture
def tiny(tmp_path):
    return shutil.copytree(tiny_checkpoint_dir(), tmp_path / "tiny")


def shard_of(directory, name="model.layers.1.self_attn.sinks"):
    return directory / json.loads((directory / INDEX).read_text())["weight_map"][name]


# ---- detection and configs -----------------------------------------------------------------------------------------

def test_layouts_are_detected(tiny):
    hf = open_checkpoint(tiny)
    assert (hf.layout, hf.experts, hf.root) == ("hf", "mxfp4", tiny)
    assert [p.name for p in hf.files] == [f"model-0000{i}-of-00002.safetensors" for i in range(3)]
    assert {p.name for p in hf.side_files} >= {"tokenizer.json", "generation_config.json"}
    original = open_checkpoint(tiny / "original")
    assert (original.layout, original.experts, original.root) == ("original", "mxfp4", tiny / "original")
    forced = open_checkpoint(tiny, layout="original")
    assert forced.layout == "original" and forced.root == tiny / "original"
    assert "block.0.attn.qkv.weight" in original.tensors and "model.embed_tokens.weight" in hf.tensors


def test_directory_holding_only_original_is_read_as_original(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_checkpoint_dir() / "original", repo / "original")
    ckpt = open_checkpoint(repo)
    assert ckpt.layout == "original" and ckpt.root == repo / "original"


def test_both_configs_parse_to_the_tiny_config(tiny):
    assert open_checkpoint(tiny).config == TINY_CONFIG
    assert open_checkpoint(tiny / "original").config == TINY_CONFIG  # token ids from the repo's HF config
    alone = config_from_original(json.loads((tiny / "original" / "config.json").read_text()))
    assert alone == TINY_CONFIG.replace(bos_token_id=None, eos_token_id=None, pad_token_id=None)


def test_config_without_quantization_config_reads(tiny):
    body = json.loads((tiny / "config.json").read_text())
    del body["quantization_config"]
    (tiny / "config.json").write_text(json.dumps(body))
    assert open_checkpoint(tiny).config == TINY_CONFIG


def test_original_config_round_trip_and_strict_keys():
    body = original_config_dict(TINY_CONFIG)
    assert tuple(body) == ORIGINAL_CONFIG_KEYS and len(body) == 16
    assert config_from_original(body).num_local_experts == TINY_CONFIG.num_local_experts
    with pytest.raises(InputError, match="unknown bogus"):
        config_from_original({**body, "bogus": 1})
    with pytest.raises(InputError, match="missing num_experts"):
        config_from_original({k: v for k, v in body.items() if k != "num_experts"})


def test_single_file_hf_checkpoint(tiny):
    tensors = {}
    for shard in sorted(tiny.glob("model-*.safetensors")):
        tensors.update(load_file(shard))
        shard.unlink()
    (tiny / INDEX).unlink()
    save_file(tensors, tiny / "model.safetensors")
    ckpt = open_checkpoint(tiny)
    assert ckpt.layout == "hf" and ckpt.index_file is None and len(ckpt.tensors) == len(tensors)
    assert torch.equal(ckpt.get("lm_head.weight"), tensors["lm_head.weight"])


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(InputError, match="no checkpoint found"):
        open_checkpoint(tmp_path)
    with pytest.raises(InputError, match="not a directory"):
        open_checkpoint(tmp_path / "nope")


def test_quant_method_other_than_mxfp4_is_refused(tiny):
    body = json.loads((tiny / "config.json").read_text())
    body["quantization_config"]["quant_method"] = "gptq"
    (tiny / "config.json").write_text(json.dumps(body))
    with pytest.raises(InputError, match="quant_method must be 'mxfp4'"):
        open_checkpoint(tiny)


# ---- headers -------------------------------------------------------------------------------------------------------

def test_truncated_shard(tiny):
    shard = shard_of(tiny)
    data = shard.read_bytes()
    shard.write_bytes(data[:-100])
    with pytest.raises(IntegrityError, match=rf"{shard.name}.*truncated"):
        open_checkpoint(tiny)
    shard.write_bytes(data[:5])
    with pytest.raises(IntegrityError, match=rf"{shard.name}: truncated: 5 bytes"):
        open_checkpoint(tiny)


def test_header_length_past_end_of_file(tiny):
    shard = shard_of(tiny)
    data = shard.read_bytes()
    shard.write_bytes(struct.pack("<Q", len(data)) + data[8:])
    with pytest.raises(IntegrityError, match=rf"{shard.name}: header length \d+ runs past the end"):
        open_checkpoint(tiny)


def test_bad_header_json(tiny):
    shard = shard_of(tiny)
    data = bytearray(shard.read_bytes())
    data[8] = ord("X")  # the header's opening brace
    shard.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"{shard.name}: header is not valid JSON"):
        open_checkpoint(tiny)


def _rewrite_header(path, edit):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length :])


def test_overlapping_offsets(tiny):
    shard = shard_of(tiny)

    def overlap(header):
        names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
        a, b = header[names[0]], header[names[1]]
        size = b["data_offsets"][1] - b["data_offsets"][0]
        b["data_offsets"] = [a["data_offsets"][0], a["data_offsets"][0] + size]

    _rewrite_header(shard, overlap)
    with pytest.raises(IntegrityError, match=rf"{shard.name}: \S+ data_offsets \[\d+, \d+\] overlap those of \S+ \["):
        open_checkpoint(tiny)


def test_offsets_disagreeing_with_shape(tiny):
    shard = shard_of(tiny)
    _rewrite_header(shard, lambda h: h["model.layers.1.self_attn.sinks"].update(shape=[5]))
    with pytest.raises(IntegrityError, match=r"model.layers.1.self_attn.sinks data_offsets span 8 bytes, expected 10"):
        open_checkpoint(tiny)


def test_unknown_dtype_in_header(tiny):
    shard = shard_of(tiny)
    _rewrite_header(shard, lambda h: h["model.layers.1.self_attn.sinks"].update(dtype="Q4"))
    with pytest.raises(IntegrityError, match="sinks has unsupported dtype 'Q4'"):
        open_checkpoint(tiny)


# ---- the index -----------------------------------------------------------------------------------------------------

def _edit_index(directory, edit):
    index = json.loads((directory / INDEX).read_text())
    edit(index)
    (directory / INDEX).write_text(json.dumps(index))


def test_index_naming_a_missing_file(tiny):
    _edit_index(tiny, lambda i: i["weight_map"].update({"lm_head.weight": "model-00007-of-00002.safetensors"}))
    with pytest.raises(IntegrityError, match=r"weight_map names model-00007-of-00002.safetensors, but .* does not exist"):
        open_checkpoint(tiny)


@pytest.mark.parametrize("path", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_index_path_outside_the_directory(tiny, path):
    (tiny.parent / "outside.safetensors").write_bytes((tiny / "model-00002-of-00002.safetensors").read_bytes())
    _edit_index(tiny, lambda i: i["weight_map"].update({"lm_head.weight": path}))
    with pytest.raises(IntegrityError, match=r"a path outside .*; expected a file inside it"):
        open_checkpoint(tiny)


def test_symlink_escaping_the_directory(tiny):
    shard = tiny / "model-00002-of-00002.safetensors"
    outside = tiny.parent / "elsewhere.safetensors"
    shutil.move(shard, outside)
    shard.symlink_to(outside)
    with pytest.raises(IntegrityError, match=r"model-00002-of-00002.safetensors is a symlink to .*elsewhere.safetensors, outside"):
        open_checkpoint(tiny)


def test_hub_cache_symlinks_into_blobs_are_accepted(tmp_path):
    repo = tmp_path / "models--openai--tiny"
    snapshot, blobs = repo / "snapshots" / "abc123", repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for path in tiny_checkpoint_dir().iterdir():
        if path.is_file():
            blob = blobs / hashlib.sha256(path.read_bytes()).hexdigest()
            shutil.copyfile(path, blob)
            (snapshot / path.name).symlink_to(f"../../blobs/{blob.name}")
    assert open_checkpoint(snapshot).config == TINY_CONFIG


def test_index_and_headers_must_agree(tiny):
    _edit_index(tiny, lambda i: i["weight_map"].update({"model.norm.weight": "model-00000-of-00002.safetensors"}))
    with pytest.raises(IntegrityError, match=r"holds model.norm.weight, which model.safetensors.index.json places in model-00000"):
        open_checkpoint(tiny)


def test_index_listing_a_tensor_no_file_holds(tiny):
    _edit_index(tiny, lambda i: i["weight_map"].update({"model.ghost.weight": "model-00000-of-00002.safetensors"}))
    with pytest.raises(IntegrityError, match=r"model.ghost.weight is listed in model-00000-of-00002.safetensors but"):
        open_checkpoint(tiny)


def test_index_total_size_is_checked(tiny):
    _edit_index(tiny, lambda i: i["metadata"].update(total_size=123))
    with pytest.raises(IntegrityError, match=r"metadata.total_size is 123 but the shards hold 344,768 bytes"):
        open_checkpoint(tiny)


def test_index_bad_json(tiny):
    (tiny / INDEX).write_text("{not json")
    with pytest.raises(IntegrityError, match=r"model.safetensors.index.json: cannot read JSON"):
        open_checkpoint(tiny)


# ---- reading tensors, sha256 ---------------------------------------------------------------------------------------

def test_get_reads_one_tensor_equal_to_safetensors(tiny):
    ckpt = open_checkpoint(tiny)
    name = "model.layers.3.mlp.experts.gate_up_proj_blocks"
    expected = load_file(ckpt.tensors[name].file)[name]
    assert torch.equal(ckpt.get(name), expected) and expected.dtype == torch.uint8
    with pytest.raises(IntegrityError, match="no tensor named nope"):
        ckpt.get("nope")


def test_read_without_memory_map_equals_get(tiny):
    ckpt = open_checkpoint(tiny)
    for name in ckpt.tensors:
        tensor = ckpt.read(name)
        assert tensor.dtype == ckpt.get(name).dtype and torch.equal(tensor, ckpt.get(name)), name


def test_sha256_is_streamed_and_correct(tiny, tmp_path):
    ckpt = open_checkpoint(tiny)
    sums = ckpt.sha256s()
    assert set(sums) == {p.name for p in ckpt.files}
    for path in ckpt.files:
        assert sums[path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_sha256(ckpt.files[0], chunk_bytes=7) == sums[ckpt.files[0].name]


# ---- the streaming writer ------------------------------------------------------------------------------------------

def test_streaming_writer_matches_safetensors(tmp_path):
    tensors = {"a": torch.randn(5, 3).to(torch.bfloat16), "b": torch.arange(7, dtype=torch.uint8),
               "c": torch.randn(2, 2, 2), "empty": torch.zeros(0, 4)}
    specs = [TensorSpec(n, {torch.bfloat16: "BF16", torch.uint8: "U8", torch.float32: "F32"}[t.dtype], tuple(t.shape))
             for n, t in tensors.items()]
    with ShardWriter(tmp_path / "x.safetensors", specs) as writer:
        writer.write("a", tensors["a"][:2])  # row chunks
        writer.write("a", tensors["a"][2:])
        writer.write("b", tensors["b"])
        writer.write("c", tensors["c"])
    loaded = load_file(tmp_path / "x.safetensors")
    assert all(torch.equal(loaded[n], t) for n, t in tensors.items())
    assert set(read_header(tmp_path / "x.safetensors")) == set(tensors)
    assert len(encode_header(specs)) % 8 == 0


def test_streaming_writer_refuses_wrong_order_dtype_and_short_data(tmp_path):
    specs = [TensorSpec("a", "F32", (2,)), TensorSpec("b", "F32", (2,))]
    with pytest.raises(ValueError, match="expected tensor a next, got b"):
        with ShardWriter(tmp_path / "y.safetensors", specs) as writer:
            writer.write("b", torch.zeros(2))
    with pytest.raises(ValueError, match="planned as F32"):
        with ShardWriter(tmp_path / "y.safetensors", specs) as writer:
            writer.write("a", torch.zeros(2, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="closed before b was completely written"):
        with ShardWriter(tmp_path / "y.safetensors", specs) as writer:
            writer.write("a", torch.zeros(2))
