"""Item 1 of issue 15: `make_checkpoint.py --metadata-only` (and the full writer) reproduce the hub's metadata files
byte for byte, and our 20b/120b presets equal the hub's configs field by field.

The sha256 of the hub's files are facts held here (they come with ../shared/reference/hub-metadata/README.md, as
do the pins in gptoss_convert/pins.py); where that folder is present, the files are also compared byte for byte."""

import collections
import hashlib
import json
from pathlib import Path

import pytest

from gptoss_model.config import GPTOss_20B, GPTOss_120B, GPTOssConfig
from gptoss_convert import pins
from tests.load_file import load_module

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference" / "hub-metadata"
HUB_20B = {  # sha256 of openai/gpt-oss-20b's files at 6cee5e81ee83917806bbde320786a8fb61efebee
    "config.json": "3a2a26ded679375b7928ddeca59764df7cea83220c1961035f6d6e232659e9ce",
    "generation_config.json": "f9970ada892d2d1f72e3ed0a6535ccebadd11897318794ca671d8c7014c957da",
    "tokenizer_config.json": "9279e942392b742d633c7adbb89ebe002c98399db8926a7af5125c726f404070",
    "model.safetensors.index.json": "0e085b977c4c9942f85938828e8c989ed7d5cdabf852e4da6a67c116cd502cd1",
}
HUB_120B_CONFIG = "933aeb666a3fd851133ddd7686414f369bc564c4185fb5704416550879f10566"
# special_tokens_map.json has no published hash; it is compared with the reference copy when that is present.
BYTE_COMPARED_20B = (*HUB_20B, "special_tokens_map.json")


@pytest.fixture(scope="module")
def make():
    return load_module(ROOT / "scripts" / "make_checkpoint.py")


@pytest.fixture(scope="module")
def metadata_20b(make, tmp_path_factory):
    out = tmp_path_factory.mktemp("meta") / "gpt-oss-20b"
    make.main(["--shape", "20b", "--metadata-only", "--out", str(out), "--quiet"])
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference(repo: str, name: str) -> Path:
    path = REFERENCE / repo / name
    if not path.is_file():
        pytest.skip(f"{path} is not here (the hub-metadata reference folder sits beside the repository)")
    return path


def test_metadata_only_20b_files_have_the_hubs_sha256(metadata_20b):
    assert {name: sha256(metadata_20b / name) for name in HUB_20B} == HUB_20B
    assert HUB_20B.items() <= pins.pinned_files("openai/gpt-oss-20b", pins.GPT_OSS_20B_COMMIT).items()


def test_metadata_only_writes_no_tensor_data(metadata_20b):
    files = sorted(p.relative_to(metadata_20b).as_posix() for p in metadata_20b.rglob("*") if p.is_file())
    assert files == ["chat_template.jinja", "config.json", "generation_config.json", "model.safetensors.index.json",
                     "original/config.json", "original/dtypes.json", "special_tokens_map.json",
                     "tokenizer_config.json"]
    assert sum((metadata_20b / f).stat().st_size for f in files) < 100_000


@pytest.mark.parametrize("name", BYTE_COMPARED_20B)
def test_metadata_only_20b_files_equal_the_reference_copies(metadata_20b, name):
    assert (metadata_20b / name).read_bytes() == reference("openai__gpt-oss-20b", name).read_bytes()


def test_original_json_follow_the_hubs_values_and_order(metadata_20b):
    for ours, theirs in (("original/config.json", "original_config.values.json"),
                         ("original/dtypes.json", "original_dtypes.values.json")):
        body = json.loads((metadata_20b / ours).read_text())
        expected = json.loads(reference("openai__gpt-oss-20b", theirs).read_text())
        assert list(body.items()) == list(expected.items()), ours  # values, types and key order


def test_original_json_facts_without_the_reference(metadata_20b):
    config = json.loads((metadata_20b / "original/config.json").read_text())
    assert config == {"num_hidden_layers": 24, "num_experts": 32, "experts_per_token": 4, "vocab_size": 201088,
                      "hidden_size": 2880, "intermediate_size": 2880, "swiglu_limit": 7.0, "head_dim": 64,
                      "num_attention_heads": 64, "num_key_value_heads": 8, "sliding_window": 128,
                      "initial_context_length": 4096, "rope_theta": 150000, "rope_scaling_factor": 32.0,
                      "rope_ntk_alpha": 1, "rope_ntk_beta": 32}
    assert [type(config[k]) for k in ("rope_theta", "rope_scaling_factor", "swiglu_limit")] == [int, float, float]
    dtypes = json.loads((metadata_20b / "original/dtypes.json").read_text())
    assert list(dtypes)[:5] == ["embedding.weight", "block.0.attn.norm.scale", "block.0.attn.qkv.weight",
                                "block.0.attn.qkv.bias", "block.0.attn.sinks"]
    assert list(dtypes)[-2:] == ["norm.scale", "unembedding.weight"] and len(dtypes) == 3 + 24 * 15
    assert set(dtypes.values()) == {"BF16", "FP4", "UE8"}


def test_metadata_only_120b(make, tmp_path):
    out = tmp_path / "gpt-oss-120b"
    make.main(["--shape", "120b", "--metadata-only", "--out", str(out), "--quiet"])
    assert sha256(out / "config.json") == HUB_120B_CONFIG
    index = json.loads((out / "original/model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [f"model--0000{i}-of-00007.safetensors" for i in range(1, 8)]
    assert index["metadata"]["total_size"] == 65_248_815_744
    hf_index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(hf_index["weight_map"].values())) == 15 and hf_index["metadata"]["total_size"] == 65_248_815_744


def test_120b_config_equals_the_reference_copy(make, tmp_path):
    expected = reference("openai__gpt-oss-120b", "config.json").read_bytes()
    assert make.official.pretty_json(make.hf_config_json(GPTOss_120B())).encode() == expected


def test_full_writer_writes_the_same_metadata_files(make, tmp_path, monkeypatch):
    """The full writer and --metadata-only share every metadata file: the 20b written whole (its tensor writing
    stubbed out, 13.8 GB being too much for a test) gives the same bytes; the tiny shape written for real too."""
    written = []

    class NoData:
        def __init__(self, path, tensors, **kwargs):
            written.append(Path(path).name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(make, "ShardWriter", NoData)
    monkeypatch.setattr(make, "tensor_chunks", lambda *args: collections.defaultdict(lambda: lambda: iter(())))
    make.main(["--shape", "20b", "--layout", "hf", "--out", str(tmp_path / "full"), "--quiet"])
    assert written == [f"model-0000{i}-of-00002.safetensors" for i in range(3)]
    assert {n: sha256(tmp_path / "full" / n) for n in HUB_20B} == HUB_20B
    monkeypatch.undo()
    make.main(["--shape", "tiny", "--metadata-only", "--out", str(tmp_path / "meta"), "--quiet"])
    make.main(["--shape", "tiny", "--out", str(tmp_path / "whole"), "--quiet"])
    for path in (tmp_path / "meta").rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (tmp_path / "whole" / path.relative_to(tmp_path / "meta")).read_bytes()


@pytest.mark.parametrize("preset, config_sha, layers, experts", [
    (GPTOss_20B, HUB_20B["config.json"], 24, 32), (GPTOss_120B, HUB_120B_CONFIG, 36, 128)])
def test_presets_equal_the_hub_configs_field_by_field(make, tmp_path, preset, config_sha, layers, experts):
    """GPTOssConfig.from_hf_config of the hub's config.json (regenerated byte-identical here, or the reference
    copy) plus generation_config.json's bos equals the preset in every field."""
    text = make.official.pretty_json(make.hf_config_json(preset()))
    assert hashlib.sha256(text.encode()).hexdigest() == config_sha
    hub = json.loads(text)
    parsed = GPTOssConfig.from_hf_config(hub).replace(bos_token_id=199998)
    ours = preset()
    for field in GPTOssConfig.__dataclass_fields__:
        if field != "extra":
            assert getattr(parsed, field) == getattr(ours, field), field
    assert (ours.num_hidden_layers, ours.num_local_experts) == (layers, experts)
    assert ours.bos_token_id == 199998  # generation_config.json's bos_token_id


@pytest.mark.parametrize("repo, preset", [("openai__gpt-oss-20b", GPTOss_20B), ("openai__gpt-oss-120b", GPTOss_120B)])
def test_presets_equal_the_reference_configs(repo, preset):
    parsed = GPTOssConfig.from_hf_config(reference(repo, "config.json")).replace(bos_token_id=199998)
    ours = preset()
    assert {f: getattr(parsed, f) for f in GPTOssConfig.__dataclass_fields__ if f != "extra"} == \
           {f: getattr(ours, f) for f in GPTOssConfig.__dataclass_fields__ if f != "extra"}
