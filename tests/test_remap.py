"""gptoss_convert.remap: tables cover the model, HF and original/ give bit-identical tensors, dense experts are
transposed, layer-by-layer reading equals the full stream, and the coverage audit names every kind of mismatch."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from gptoss_model import GPTOssModelFull
from gptoss_convert import mxfp4
from gptoss_convert.checkpoint import open_checkpoint
from gptoss_convert.errors import IntegrityError
from gptoss_convert.remap import (
    HF_MXFP4,
    ORIGINAL,
    Part,
    audit,
    expected_tensors,
    global_tensors,
    iter_tensors,
    layer_tensors,
    our_shapes,
)
from gptoss_convert.tiny import TINY_CONFIG, tiny_checkpoint_dir

INDEX = "model.safetensors.index.json"


@pytest.fixture
def tiny(tmp_path):
    return shutil.copytree(tiny_checkpoint_dir(), tmp_path / "tiny")


def bits(t):
    return t.contiguous().view(-1).view(torch.uint8) if t.dtype != torch.uint8 else t.reshape(-1)


def rewrite(directory, change):
    """Load every tensor of an indexed checkpoint, apply change(dict) -> dict, write the shards and index back
    (new tensors go to the last shard)."""
    index = json.loads((directory / INDEX).read_text())
    weight_map = index["weight_map"]
    files = sorted(set(weight_map.values()))
    tensors = {}
    for f in files:
        tensors.update(load_file(directory / f))
    new = change(dict(tensors))
    placed = {n: weight_map.get(n, files[-1]) for n in new}
    for f in files:
        save_file({n: t.contiguous() for n, t in new.items() if placed[n] == f}, directory / f)
    index["weight_map"] = dict(sorted(placed.items()))
    index["metadata"]["total_size"] = sum(t.numel() * t.element_size() for t in new.values())
    (directory / INDEX).write_text(json.dumps(index))


def test_our_shapes_match_the_model():
    with torch.device("meta"):
        model = GPTOssModelFull(TINY_CONFIG, device="meta")
    assert {n: tuple(p.shape) for n, p in model.state_dict().items()} == our_shapes(TINY_CONFIG)


def test_tables_are_data_with_layer_slots():
    assert all("{layer}" in k for k in HF_MXFP4)
    assert isinstance(HF_MXFP4["model.layers.{layer}.mlp.experts.down_proj"], tuple)
    assert ORIGINAL["model.layers.{layer}.self_attn.k_proj.bias"] == Part("block.{layer}.attn.qkv.bias", "k")
    assert ORIGINAL["lm_head.weight"] == "unembedding.weight"


def test_hf_and_original_give_bit_identical_tensors():
    root = tiny_checkpoint_dir()
    for dtype in (None, torch.float32):
        hf = dict(iter_tensors(open_checkpoint(root), dtype))
        original = dict(iter_tensors(open_checkpoint(root / "original"), dtype))
        assert list(hf) == list(original) == list(our_shapes(TINY_CONFIG))
        for name in hf:
            assert hf[name].dtype == original[name].dtype and hf[name].shape == original[name].shape, name
            assert torch.equal(bits(hf[name]), bits(original[name])), name


def test_tensors_have_our_orientation_and_dtype():
    ckpt = open_checkpoint(tiny_checkpoint_dir())
    tensors = dict(iter_tensors(ckpt, torch.float32))
    assert all(t.dtype == torch.float32 and tuple(t.shape) == s for t, s in
               zip(tensors.values(), our_shapes(TINY_CONFIG).values()))
    name = "model.layers.2.mlp.experts.down_proj"
    blocks = ckpt.get("model.layers.2.mlp.experts.down_proj_blocks")
    scales = ckpt.get("model.layers.2.mlp.experts.down_proj_scales")
    assert torch.equal(tensors[name], mxfp4.dequantize(blocks, scales, torch.float32))


def test_qkv_is_split_q_k_v_in_order():
    original = open_checkpoint(tiny_checkpoint_dir() / "original")
    fused = original.get("block.1.attn.qkv.weight")
    layer = layer_tensors(original, 1, None)
    parts = [layer[f"model.layers.1.self_attn.{p}_proj.weight"] for p in "qkv"]
    assert [p.shape[0] for p in parts] == [64, 32, 32]
    assert torch.equal(torch.cat(parts), fused)


def test_dense_hf_experts_are_transposed_to_ours(tiny):
    """A checkpoint as Transformers saves its dequantized experts: gate_up_proj [E, H, 2I], down_proj [E, I, H]."""
    reference = dict(iter_tensors(open_checkpoint(tiny), None))

    def densify(tensors):
        for layer in range(TINY_CONFIG.num_hidden_layers):
            for proj in ("gate_up_proj", "down_proj"):
                prefix = f"model.layers.{layer}.mlp.experts.{proj}"
                weight = mxfp4.dequantize(tensors.pop(prefix + "_blocks"), tensors.pop(prefix + "_scales"))
                tensors[prefix] = weight.transpose(1, 2).contiguous()  # [E, in, out]
        return tensors

    rewrite(tiny, densify)
    ckpt = open_checkpoint(tiny)
    assert ckpt.experts == "dense" and ckpt.tensors["model.layers.0.mlp.experts.gate_up_proj"].shape == (4, 64, 128)
    dense = dict(iter_tensors(ckpt, None))
    assert all(torch.equal(dense[n], reference[n]) for n in reference)


def test_layer_and_global_tensors_cover_the_stream():
    ckpt = open_checkpoint(tiny_checkpoint_dir())
    stream = dict(iter_tensors(ckpt, torch.bfloat16))
    plan = audit(ckpt)
    pieces = global_tensors(ckpt, torch.bfloat16, plan)
    for layer in range(TINY_CONFIG.num_hidden_layers):
        part = layer_tensors(ckpt, layer, torch.bfloat16, plan)
        assert len(part) == 17 and all(n.startswith(f"model.layers.{layer}.") for n in part)
        pieces.update(part)
    assert set(pieces) == set(stream) and all(torch.equal(pieces[n], stream[n]) for n in stream)
    assert list(global_tensors(ckpt, None, plan, names=("lm_head.weight",))) == ["lm_head.weight"]
    with pytest.raises(IndexError):
        layer_tensors(ckpt, 4)


def test_expected_tensors_match_the_tiny_checkpoint():
    for root, layout in ((tiny_checkpoint_dir(), "hf"), (tiny_checkpoint_dir() / "original", "original")):
        ckpt = open_checkpoint(root)
        expected = expected_tensors(TINY_CONFIG, layout, "mxfp4")
        assert {n: (s.dtype, s.shape) for n, s in expected.items()} == \
               {n: (t.dtype, t.shape) for n, t in ckpt.tensors.items()}


# ---- the audit -----------------------------------------------------------------------------------------------------

SINKS = "model.layers.1.self_attn.sinks"
SCALES = "model.layers.2.mlp.experts.down_proj_scales"


def _set(name, value):
    def change(tensors):
        tensors[name] = value(tensors[name]) if callable(value) else value
        return tensors
    return change


def _poke(name, index, value):
    def change(tensors):
        t = tensors[name].clone()
        t[index] = value
        tensors[name] = t
        return tensors
    return change


DAMAGE = {
    "missing": (lambda t: {k: v for k, v in t.items() if k != SINKS},
                rf"missing tensor {SINKS}: expected BF16 \[4\], found none"),
    "extra": (_set("model.layers.1.self_attn.extra_bias", torch.zeros(3, dtype=torch.bfloat16)),
              r"unexpected tensor model.layers.1.self_attn.extra_bias \(BF16 \[3\] in model-00002-of-00002.safetensors\)"),
    "shape": (_set(SINKS, torch.zeros(5, dtype=torch.bfloat16)), rf"{SINKS}: expected shape \[4\], found \[5\]"),
    "dtype": (_set(SINKS, lambda t: t.float()), rf"{SINKS}: expected dtype BF16, found F32"),
    "pairing": (_set(SCALES, lambda t: t[:, :, :1]),
                rf"model.layers.2.mlp.experts.down_proj_blocks \[4, 64, 2, 16\] and {SCALES} \[4, 64, 1\] do not pair up"),
    "nan": (_poke("model.layers.0.self_attn.q_proj.weight", (3, 5), float("nan")),
            r"model.layers.0.self_attn.q_proj.weight holds 1 NaN/Inf value\(s\), first at index \[3, 5\]"),
    "inf": (_poke("lm_head.weight", (0, 0), float("inf")), r"lm_head.weight holds 1 NaN/Inf"),
    "scale_0xff": (_poke(SCALES, (1, 2, 0), 255), rf"{SCALES}: 1 of 512 MXFP4 scale bytes are 0xFF \(NaN in the MX spec\), first at scales index \[1, 2, 0\]"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_audit_and_reading_name_the_bad_tensor(tiny, kind):
    change, message = DAMAGE[kind]
    rewrite(tiny, change)
    with pytest.raises(IntegrityError, match=message):
        for _ in iter_tensors(open_checkpoint(tiny), torch.float32):
            pass


def test_audit_lists_several_problems_in_one_line(tiny):
    rewrite(tiny, lambda t: {k: v for k, v in t.items() if not k.startswith("model.layers.3.")})
    with pytest.raises(IntegrityError) as error:
        audit(open_checkpoint(tiny))
    message = str(error.value)
    assert "\n" not in message and "missing tensor model.layers.3.input_layernorm.weight" in message
    assert "(and 16 more problems)" in message


def test_audit_is_headers_only_and_returns_sources():
    plan = audit(open_checkpoint(tiny_checkpoint_dir() / "original"))
    assert plan["model.layers.0.self_attn.v_proj.bias"] == Part("block.0.attn.qkv.bias", "v")
    assert plan["model.layers.3.mlp.experts.gate_up_proj"] == ("block.3.mlp.mlp1_weight.blocks", "block.3.mlp.mlp1_weight.scales")
