"""scripts/make_checkpoint.py and the embedded tiny checkpoint: the 20b/120b plans reproduce the hub's file names and
index total_size (computed, nothing written), the tiny checkpoint has the properties the verify tests rely on, is
reproducible byte for byte, and Transformers reads it to the same weights we do."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from gptoss_model.config import FULL, SLIDING
from gptoss_convert.checkpoint import open_checkpoint
from gptoss_model.config import ORIGINAL_CONFIG_KEYS
from gptoss_convert.remap import iter_tensors
from gptoss_convert.tiny import TINY_CONFIG, TINY_SPECIAL_TOKENS, tiny_checkpoint_dir
from tests.load_file import load_module

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_checkpoint.py"


@pytest.fixture(scope="module")
def make():
    return load_module(SCRIPT)


# ---- plans for the real shapes (headers only) ----------------------------------------------------------------------

def test_20b_plan_matches_the_hub(make):
    plan = make.plan_checkpoint(make.shape_config("20b"), "hf")
    assert [name for name, _ in plan.files] == [f"model-0000{i}-of-00002.safetensors" for i in range(3)]
    assert plan.total_size == 13_761_264_768 == plan.index["metadata"]["total_size"]
    assert all(shard.nbytes <= 4_800_000_000 for _, shard in plan.files)
    specs = {t.name: (t.dtype, t.shape) for _, shard in plan.files for t in shard.tensors}
    assert len(specs) == 3 + 24 * 19
    assert specs["model.embed_tokens.weight"] == ("BF16", (201088, 2880))
    assert specs["model.layers.23.self_attn.q_proj.weight"] == ("BF16", (4096, 2880))
    assert specs["model.layers.0.self_attn.k_proj.bias"] == ("BF16", (512,))
    assert specs["model.layers.5.self_attn.sinks"] == ("BF16", (64,))
    assert specs["model.layers.0.mlp.router.weight"] == ("BF16", (32, 2880))
    assert specs["model.layers.0.mlp.experts.gate_up_proj_blocks"] == ("U8", (32, 5760, 90, 16))
    assert specs["model.layers.0.mlp.experts.gate_up_proj_scales"] == ("U8", (32, 5760, 90))
    assert specs["model.layers.0.mlp.experts.down_proj_blocks"] == ("U8", (32, 2880, 90, 16))
    assert specs["model.layers.0.mlp.experts.down_proj_bias"] == ("BF16", (32, 2880))
    assert specs["lm_head.weight"] == ("BF16", (201088, 2880))
    names = list(plan.index["weight_map"])
    assert names[:2] == ["model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.o_proj.bias"]
    assert names[19 * 2] == "model.layers.10.input_layernorm.weight"  # layers in lexicographic order of the index
    assert names[-3:] == ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    # the hub's split (hub-metadata/README.md): 196 tensors in shard 0, shard 1 from layer 18's q_proj.weight,
    # shard 2 from layer 6's gate_up_proj_blocks
    assert [len(shard.tensors) for _, shard in plan.files] == [196, 197, 66]
    assert names[196] == "model.layers.18.self_attn.q_proj.weight"
    assert names[393] == "model.layers.6.mlp.experts.gate_up_proj_blocks"


def test_120b_plan_matches_the_hub(make):
    plan = make.plan_checkpoint(make.shape_config("120b"), "hf")
    assert [name for name, _ in plan.files] == [f"model-{i:05d}-of-00014.safetensors" for i in range(15)]
    assert plan.total_size == 65_248_815_744
    specs = {t.name: t for _, shard in plan.files for t in shard.tensors}
    assert len(specs) == 3 + 36 * 19 and specs["model.layers.35.mlp.experts.gate_up_proj_blocks"].shape == (128, 5760, 90, 16)


def test_original_plans(make):
    plan = make.plan_checkpoint(make.shape_config("20b"), "original")
    assert [name for name, _ in plan.files] == ["original/model.safetensors"] and plan.index is None
    assert plan.total_size == 13_761_264_768
    specs = {t.name: (t.dtype, t.shape) for t in plan.files[0][1].tensors}
    assert specs["block.0.attn.qkv.weight"] == ("BF16", (5120, 2880))
    assert specs["block.23.mlp.mlp1_weight.blocks"] == ("U8", (32, 5760, 90, 16))
    assert specs["unembedding.weight"] == ("BF16", (201088, 2880)) and len(specs) == 3 + 24 * 15
    big = make.plan_checkpoint(make.shape_config("120b"), "original")
    assert len(big.files) == 7 and big.total_size == 65_248_815_744  # original/ of 120b is sharded (7 files)
    assert [name for name, _ in big.files] == [f"original/model--0000{i}-of-00007.safetensors" for i in range(1, 8)]


def test_20b_shard_files_have_the_hubs_sizes(make):
    """Headers like the safetensors library's (no __metadata__, BF16 before U8, then by name): the three 20b
    shards total 13,761,316,904 bytes on the hub, 52,136 of them headers."""
    from gptoss_model.io import encode_header

    plan = make.plan_checkpoint(make.shape_config("20b"), "hf")
    headers = sum(len(encode_header(shard.tensors, with_metadata=False)) for _, shard in plan.files)
    assert headers == 52_136 and plan.total_size + headers == 13_761_316_904
    first = plan.files[0][1].tensors
    assert [t.dtype for t in first] == sorted((t.dtype for t in first), key=lambda d: d != "BF16")


def test_layers_override(make):
    config = make.shape_config("20b", layers=3)
    assert config.num_hidden_layers == 3 and config.layer_types == (SLIDING, FULL, SLIDING)


def test_hub_config_json_spelling(make):
    body = make.hf_config_json(make.shape_config("20b"))
    assert body["quantization_config"] == {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                                     "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"}
    assert body["rope_scaling"] == {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                    "original_max_position_embeddings": 4096, "truncate": False}
    assert (body["eos_token_id"], body["pad_token_id"], body["experts_per_token"]) == (200002, 199999, 4)
    assert "bos_token_id" not in body and "torch_dtype" not in body and body["rope_theta"] == 150000
    assert make.generation_config_json(make.shape_config("20b"))["eos_token_id"] == [200002, 199999, 200012]


# ---- the embedded tiny checkpoint ----------------------------------------------------------------------------------

def test_tiny_checkpoint_properties():
    root = tiny_checkpoint_dir()
    shards = sorted(p.name for p in root.glob("model-*.safetensors"))
    assert len(shards) >= 2 and shards[0] == f"model-00000-of-{len(shards) - 1:05d}.safetensors"
    index = json.loads((root / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    config = json.loads((root / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "mxfp4"
    assert config["num_hidden_layers"] >= 4 and config["layer_types"][0] == SLIDING
    assert config["layer_types"] == [SLIDING if i % 2 == 0 else FULL for i in range(config["num_hidden_layers"])]
    assert config["sliding_window"] <= 32 and config["num_local_experts"] >= 4 and config["num_experts_per_tok"] >= 2
    assert config["hidden_size"] % 32 == 0 and config["intermediate_size"] % 32 == 0
    assert config["rope_scaling"]["truncate"] is False and config["rope_scaling"]["factor"] == 32.0
    original = json.loads((root / "original" / "config.json").read_text())
    assert tuple(original) == ORIGINAL_CONFIG_KEYS
    dtypes = json.loads((root / "original" / "dtypes.json").read_text())
    assert dtypes["block.0.mlp.mlp1_weight.blocks"] == "FP4" and dtypes["block.0.mlp.mlp1_weight.scales"] == "UE8"
    with safe_open(root / shards[0], "pt") as f:
        dtypes_seen = {f.get_slice(n).get_dtype() for n in f.keys()}
    assert dtypes_seen <= {"BF16", "U8"}
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) < 1_000_000
    assert open_checkpoint(root).config == TINY_CONFIG


def test_tiny_tokenizer():
    from tokenizers import Tokenizer

    root = tiny_checkpoint_dir()
    tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == TINY_CONFIG.vocab_size
    assert {t: tokenizer.token_to_id(t) for t in TINY_SPECIAL_TOKENS} == TINY_SPECIAL_TOKENS
    ids = tokenizer.encode("The experts are stored in a compact format.").ids
    assert max(ids) < 509 and tokenizer.decode(ids) == "The experts are stored in a compact format."
    special = json.loads((root / "special_tokens_map.json").read_text())
    assert special == {"bos_token": "<|startoftext|>", "eos_token": "<|return|>", "pad_token": "<|endoftext|>"}


def test_tiny_tokenizer_has_the_harmony_tokens_on_ids_no_text_reaches():
    """The harmony tokens sit on the ids of byte tokens for bytes 0xF5..0xFA, which UTF-8 never contains: every
    text (all of Unicode's planes sampled here) tokenizes to ids other than those, and decodes back."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_checkpoint_dir() / "tokenizer.json"))
    harmony = {"<|constrain|>": 177, "<|channel|>": 178, "<|start|>": 179, "<|end|>": 180, "<|message|>": 181,
               "<|call|>": 182, "<|return|>": 511}
    assert {t: tokenizer.token_to_id(t) for t in harmony} == harmony
    assert tokenizer.encode("<|start|>user<|message|>hi<|end|>").ids[:2] == [179, tokenizer.encode("user").ids[0]]
    text = "".join(chr(c) for c in range(1, 0x30000, 37) if not 0xD800 <= c < 0xE000) + " ÿõöúùø"
    ids = tokenizer.encode(text).ids
    assert not set(ids) & set(TINY_SPECIAL_TOKENS.values()) and tokenizer.decode(ids) == text


def test_tiny_chat_template_renders_harmony_through_transformers():
    """Transformers' own chat templating (AutoTokenizer.apply_chat_template) reads the tiny checkpoint's
    chat_template.jinja; the text is the harmony format written out by hand here."""
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_checkpoint_dir())
    messages = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Sky colour?"},
                {"role": "assistant", "thinking": "It is blue.", "content": "Blue"}]
    header = ("<|start|>system<|message|>You are a helpful assistant.\n\nReasoning: low\n\n# Valid channels: "
              "analysis, commentary, final. Channel must be included for every message.<|end|>")
    text = tokenizer.apply_chat_template(messages, tokenize=False, reasoning_effort="low")
    assert text == (header + "<|start|>developer<|message|># Instructions\n\nAnswer in one word.<|end|>"
                    "<|start|>user<|message|>Sky colour?<|end|>"
                    "<|start|>assistant<|channel|>analysis<|message|>It is blue.<|end|>"
                    "<|start|>assistant<|channel|>final<|message|>Blue<|return|>")
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True,
                                           reasoning_effort="low")
    assert prompt.endswith("<|start|>user<|message|>Sky colour?<|end|><|start|>assistant")
    ids = tokenizer.apply_chat_template(messages, tokenize=True, reasoning_effort="low")["input_ids"]
    assert ids[0] == 179 and ids[-1] == 511 and ids.count(181) == 5 and tokenizer.decode(ids) == text


def test_chat_template_tool_calls_and_earlier_thinking():
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_checkpoint_dir())
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                                               "parameters": {"type": "object"}}}]
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "thinking": "old", "content": "Hello"},
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
                {"role": "assistant", "tool_calls": [{"type": "function", "function": {
                    "name": "get_weather", "arguments": {"city": "Paris"}}}]},
                {"role": "tool", "content": "20 C"}]
    text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    assert "Calls to these tools must go to the commentary channel: 'functions'.<|end|>" in text
    assert "type get_weather = (_: {\"type\": \"object\"}) => any;" in text
    assert "old" not in text  # analysis of an earlier turn is dropped
    assert text.endswith("<|start|>user<|message|>Weather in Paris?<|end|>"
                         "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
                         "<|message|>{\"city\": \"Paris\"}<|call|>"
                         "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>20 C<|end|>"
                         "<|start|>assistant")
    with pytest.raises(Exception, match="unknown role narrator"):
        tokenizer.apply_chat_template([{"role": "narrator", "content": "x"}], tokenize=False)


def test_generated_checkpoints_carry_our_template_not_openais(make, tmp_path):
    import hashlib

    from gptoss_convert.prompts import harmony_template_path

    ours = harmony_template_path().read_bytes()
    assert (tiny_checkpoint_dir() / "chat_template.jinja").read_bytes() == ours
    # the hub's chat_template.jinja of openai/gpt-oss-20b (its sha256: ../shared/reference/hub-metadata/README.md)
    assert hashlib.sha256(ours).hexdigest() != "a4c9919cbbd4acdd51ccffe22da049264b1b73e59055fa58811a99efbd7c8146"


def test_tiny_is_reproducible_byte_for_byte(make, tmp_path):
    make.main(["--shape", "tiny", "--out", str(tmp_path / "again"), "--quiet"])
    shipped = {p.relative_to(tiny_checkpoint_dir()): p for p in tiny_checkpoint_dir().rglob("*") if p.is_file()}
    rebuilt = {p.relative_to(tmp_path / "again"): p for p in (tmp_path / "again").rglob("*") if p.is_file()}
    assert set(shipped) == set(rebuilt)
    assert [str(n) for n in shipped if shipped[n].read_bytes() != rebuilt[n].read_bytes()] == []


def test_seed_changes_values_layers_change_shape(make, tmp_path):
    make.main(["--shape", "tiny", "--seed", "1", "--layers", "2", "--layout", "hf", "--out", str(tmp_path / "s1"),
               "--quiet"])
    ckpt = open_checkpoint(tmp_path / "s1")
    assert ckpt.config.num_hidden_layers == 2 and not (tmp_path / "s1" / "original").exists()
    shipped = open_checkpoint(tiny_checkpoint_dir())
    assert not torch.equal(ckpt.get("lm_head.weight"), shipped.get("lm_head.weight"))


def test_random_codes_path_for_big_tensors(make, monkeypatch, tmp_path):
    """Big shapes get random FP4 codes with scales around 1/sqrt(fan_in) instead of a real quantization."""
    monkeypatch.setattr(make, "QUANTIZE_MAX_ELEMENTS", 0)
    make.write_checkpoint(TINY_CONFIG, tmp_path / "codes", "both", progress=False)
    hf, original = open_checkpoint(tmp_path / "codes"), open_checkpoint(tmp_path / "codes" / "original")
    a, b = dict(iter_tensors(hf, None)), dict(iter_tensors(original, None))
    assert all(torch.equal(a[n].view(-1).view(torch.uint8), b[n].view(-1).view(torch.uint8)) for n in a)
    std = a["model.layers.0.mlp.experts.down_proj"].float().std().item()
    assert 0.5 / 8 < std < 2 / 8  # fan_in 64 -> 1/8


def test_transformers_reads_the_tiny_checkpoint_to_our_weights():
    """Transformers' own dequantization of the hub layout equals ours (up to its transpose)."""
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tiny_checkpoint_dir(), quantization_config=transformers.Mxfp4Config(dequantize=True), dtype=torch.bfloat16)
    theirs = model.state_dict()
    ours = dict(iter_tensors(open_checkpoint(tiny_checkpoint_dir()), torch.bfloat16))
    assert set(theirs) == set(ours)
    for name, tensor in ours.items():
        other = theirs[name].transpose(1, 2) if name.endswith(("experts.gate_up_proj", "experts.down_proj")) else theirs[name]
        assert torch.equal(other, tensor), name
