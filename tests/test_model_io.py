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
