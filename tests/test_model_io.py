"""save_pretrained / from_pretrained in gptoss_model's own format."""

import json

import pytest
import torch

from gptoss_model import GPTOss_Small, GPTOssModelFull


def test_round_trip_is_exact_and_sharded(tmp_path):
    model = GPTOssModelFull(GPTOss_Small(num_hidden_layers=2))
    model.save_pretrained(tmp_path / "m", max_shard_bytes=2_000_000)
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    loaded = GPTOssModelFull.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    ids = torch.randint(0, 4096, (1, 7))
    # same weights bit for bit; the forward may differ in the last bit (memory alignment picks other kernels)
    assert torch.allclose(loaded(input_ids=ids), model(input_ids=ids), rtol=0, atol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary directory left"


def test_missing_tensor_is_named(tmp_path):
    model = GPTOssModelFull(GPTOss_Small(num_hidden_layers=1))
    model.save_pretrained(tmp_path / "m")
    from safetensors.torch import load_file, save_file

    shard = next((tmp_path / "m").glob("model-*.safetensors"))
    tensors = load_file(shard)
    del tensors["lm_head.weight"]
    save_file(tensors, shard)
    with pytest.raises(ValueError, match="lm_head.weight"):
        GPTOssModelFull.from_pretrained(tmp_path / "m")


def test_format_bytes_is_decimal():
    from gptoss_model.io import format_bytes

    assert [format_bytes(n) for n in (0, 999, 1000, 13_800_000_000, 2 * 10**15)] == [
        "0 B", "999 B", "1.00 kB", "13.80 GB", "2000.00 TB"]


def test_the_format_version_check_names_the_file():
    from gptoss_model.io import check_format

    assert check_format({"format": "gptoss_model", "format_version": 1, "config": {"a": 1}}, "x/config.json") == {"a": 1}
    with pytest.raises(ValueError, match=r"x/config.json: expected format_version 1 and a 'config' object, found 2"):
        check_format({"format": "gptoss_model", "format_version": 2, "config": {}}, "x/config.json")
    with pytest.raises(ValueError, match="x/config.json: not a gptoss_model config"):
        check_format({"format_version": 1, "config": {}}, "x/config.json")


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    from gptoss_model.io import atomic_directory, atomic_write_text

    target = tmp_path / "out"
    with atomic_directory(target) as temp:
        (temp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as temp:
            (temp / "a.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "first"
    with atomic_directory(target) as temp:
        (temp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    atomic_write_text(tmp_path / "note.txt", "whole")
    assert (tmp_path / "note.txt").read_text() == "whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["note.txt", "out"], "no temporary left behind"
