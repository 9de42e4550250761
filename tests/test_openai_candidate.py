"""The `openai` candidate and reference: OpenAI's own gpt_oss.torch (PyPI gpt-oss==0.0.9, installed by the Makefile
with --no-deps) behind the adapter protocol. Independent code nobody here wrote must pass verify's default gate,
and be usable as the reference."""

import json
import math
import shutil

import pytest
import torch
from click.testing import CliRunner

from gptoss_convert.candidates import load_candidate, load_reference
from gptoss_convert.candidates.openai_torch import model_config, openai_model_module
from gptoss_convert.candidates.protocol import LAYER_COMPONENTS, Context
from gptoss_convert.checkpoint import open_checkpoint
from gptoss_convert.cli import cli
from gptoss_convert.remap import audit, layer_tensors
from gptoss_convert.tiny import TINY_CONFIG, tiny_checkpoint_dir
from gptoss_model.config import FULL, SLIDING, GPTOss_20B
from gptoss_model.model import yarn_inv_freq


@pytest.fixture(scope="module")
def tiny():
    ckpt = open_checkpoint(tiny_checkpoint_dir())
    return ckpt, audit(ckpt)


def built(tiny, index=0, dtype=torch.float32):
    ckpt, plan = tiny
    candidate, described = load_candidate("openai")
    candidate.setup(Context(ckpt.root, ckpt.config, dtype, "cpu"))
    tensors = layer_tensors(ckpt, index, dtype, plan)
    return candidate, candidate.build_layer(index, ckpt.config, tensors), tensors, described


def test_described_with_package_version_and_file(tiny):
    _, _, _, described = built(tiny)
    assert described.name == "openai" and described.version == "gpt-oss 0.0.9"
    assert "gpt_oss/torch/model.py" in described.source


def test_every_component_provided_with_protocol_shapes(tiny):
    _, layer, _, _ = built(tiny)
    config = TINY_CONFIG
    hidden = torch.randn(2, 20, config.hidden_size)
    with torch.no_grad():
        out = layer.run(hidden, torch.arange(20).expand(2, 20))
    assert set(out) == set(LAYER_COMPONENTS)
    k, e, h = config.num_experts_per_tok, config.num_local_experts, config.hidden_size
    shapes = {"attention": h, "router_logits": e, "expert_indices": k, "expert_weights": k, "moe": h, "layer_output": h}
    assert {name: tuple(t.shape) for name, t in out.items()} == {n: (2, 20, s) for n, s in shapes.items()}
    torch.testing.assert_close(out["expert_weights"].sum(-1), torch.ones(2, 20))
    # the MoE output is the block's own residual taken back out: the layer output is attention + MoE on the input
    torch.testing.assert_close(out["layer_output"], hidden + out["attention"] + out["moe"], atol=1e-5, rtol=0)


def test_layer_output_is_openais_own_block_forward(tiny, monkeypatch):
    """The adapter calls attn then mlp itself, the MLP a chunk of tokens at a time (to bound OpenAI's per-token
    gather of expert weights): in one chunk the layer output is TransformerBlock.forward's bit for bit; one token
    per chunk changes only einsum's summation order (a few float32 ulps)."""
    import gptoss_convert.candidates.openai_torch as adapter

    _, layer, _, _ = built(tiny)
    hidden = torch.randn(1, 20, TINY_CONFIG.hidden_size)
    with torch.no_grad():
        block_forward = layer.block(hidden[0])
        assert torch.equal(layer.run(hidden, torch.arange(20)[None])["layer_output"][0], block_forward)
        monkeypatch.setattr(adapter, "MLP_GATHER_BYTES", 1)  # one token per MLPBlock call
        one_by_one = layer.run(hidden, torch.arange(20)[None])["layer_output"][0]
    torch.testing.assert_close(one_by_one, block_forward, atol=2e-5, rtol=0)


def test_float32_weights_are_not_rounded_through_bf16(tiny):
    """OpenAI declares its parameters bf16; in float32 mode each must hold the checkpoint's float32 tensor as is."""
    _, layer, tensors, _ = built(tiny)
    block, prefix = layer.block, "model.layers.0."
    assert {p.dtype for p in block.parameters()} == {torch.float32}
    q, k, v = (tensors[f"{prefix}self_attn.{n}_proj.weight"] for n in "qkv")
    assert torch.equal(block.attn.qkv.weight, torch.cat([q, k, v]))
    assert torch.equal(block.attn.sinks, tensors[f"{prefix}self_attn.sinks"])
    assert torch.equal(block.mlp.mlp2_weight, tensors[f"{prefix}mlp.experts.down_proj"])


def test_bfloat16_keeps_openais_declared_dtypes(tiny):
    _, layer, _, _ = built(tiny, dtype=torch.bfloat16)
    assert layer.block.attn.qkv.weight.dtype == torch.bfloat16
    assert layer.block.attn.norm.scale.dtype == torch.float32  # OpenAI's RMSNorm keeps its scale in float32


def test_positions_other_than_0_to_t_are_refused(tiny):
    _, layer, _, _ = built(tiny)
    with pytest.raises(ValueError, match="positions 0..T-1"):
        layer.run(torch.randn(1, 4, TINY_CONFIG.hidden_size), torch.arange(4)[None] + 3)


@pytest.mark.parametrize(
    "change, fragment",
    [
        (dict(rope_truncate=True), "truncate"),
        (dict(layer_types=(FULL, SLIDING, FULL, SLIDING)), "layer_types"),
        (dict(swiglu_alpha=1.5), "swiglu_alpha"),
        (dict(rms_norm_eps=1e-6), "rms_norm_eps"),
        (dict(attention_bias=False), "biases"),
    ],
)
def test_what_openai_hard_codes_is_refused(change, fragment):
    with pytest.raises(ValueError, match="gpt_oss.torch cannot express this checkpoint: .*" + fragment):
        model_config(TINY_CONFIG.replace(**change))


def test_a_checkpoint_openai_cannot_express_exits_2_in_one_line(tmp_path):
    checkpoint = tmp_path / "tiny-truncated"
    shutil.copytree(tiny_checkpoint_dir(), checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["rope_scaling"]["truncate"] = True
    (checkpoint / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(cli, ["verify", "--model", str(checkpoint), "--candidate", "openai", "--token-ids",
                                      str(write_ids(tmp_path)), "--quiet", "--report", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "candidate openai" in line and "cannot express this checkpoint: YaRN with truncate: true" in line


def write_ids(tmp_path):
    path = tmp_path / "ids.json"
    path.write_text(json.dumps([list(range(1, 21))]))
    return path


@pytest.mark.parametrize("config", [TINY_CONFIG, GPTOss_20B()], ids=["tiny", "20b"])
def test_yarn_tables_agree_with_openais_directly(config):
    """docs/mutants.md's checklist, item 5: inverse frequencies and the attention factor compared as numbers,
    and the rotation itself at positions well past the original context (4096), against OpenAI's RotaryEmbedding."""
    modeling = openai_model_module()
    openai_config = model_config(config)
    rope = modeling.RotaryEmbedding(config.head_dim, openai_config.rope_theta, torch.float32,
                                    initial_context_length=openai_config.initial_context_length,
                                    scaling_factor=openai_config.rope_scaling_factor,
                                    ntk_alpha=openai_config.rope_ntk_alpha, ntk_beta=openai_config.rope_ntk_beta,
                                    device=torch.device("cpu"))
    concentration, inv_freq = rope._compute_concentration_and_inv_freq()
    assert not config.rope_truncate and config.rope_original_max_position_embeddings == 4096
    assert math.isclose(concentration, config.rope_attention_factor, rel_tol=1e-12)
    torch.testing.assert_close(yarn_inv_freq(config), inv_freq, rtol=1e-6, atol=0)
    cos, sin = rope._compute_cos_sin(6000)
    angles = torch.arange(6000, dtype=torch.float32)[:, None] * yarn_inv_freq(config)
    torch.testing.assert_close(angles.cos() * config.rope_attention_factor, cos, atol=1e-4, rtol=0)
    torch.testing.assert_close(angles.sin() * config.rope_attention_factor, sin, atol=1e-4, rtol=0)


def test_reference_openai_provides_everything():
    reference, described = load_reference("openai")
    assert described.name == "openai"
    assert all(callable(getattr(reference, m)) for m in ("build_layer", "embed", "final_norm", "head"))


def test_missing_package_exits_2_with_the_install_command(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "gpt_oss.torch.model", None)  # as if gpt-oss were not installed
    result = CliRunner().invoke(cli, ["verify", "--candidate", "openai", "--quiet", "--report", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "candidate openai" in line and "pip install --no-deps --ignore-requires-python gpt-oss==0.0.9" in line


# ---- through the CLI, at the default float32 gate ------------------------------------------------------------------
# Prompts of 8 and 48 tokens (the window is 16). The default prompts add one of 4,128 tokens, which costs ~20 s a run
# on two cores; the rotation that far out is compared with OpenAI's directly above (test_yarn_tables_...).


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "ids.json"
    path.write_text(json.dumps([list(range(3, 11)), [(7 * i) % 500 for i in range(48)]]))
    return path


@pytest.mark.parametrize("candidate, reference", [("openai", "transformers"), ("gptoss_model", "openai")])
def test_verify_passes_at_the_default_gate(candidate, reference, prompts, tmp_path):
    report_dir = tmp_path / "r"
    result = CliRunner().invoke(cli, ["verify", "--candidate", candidate, "--reference", reference, "--token-ids",
                                      str(prompts), "--quiet", "--report", str(report_dir)])
    assert result.exit_code == 0, result.output
    report = json.loads((report_dir / "report.json").read_text())
    assert report["passed"] and report["atol"] == 1e-3 and report["dtype"] == "float32"
    assert (report["candidate"]["name"], report["reference"]["name"]) == (candidate, reference)
    openai = report["candidate"] if candidate == "openai" else report["reference"]
    assert openai["version"] == "gpt-oss 0.0.9" and openai["source"].endswith("gpt_oss/torch/model.py")
    for layer in report["layers"]:
        assert set(LAYER_COMPONENTS) - {"expert_indices"} <= set(layer["isolated"])  # every component compared
        assert all(m["max_abs"] < 1e-4 for m in layer["isolated"].values())
    for fmt in ("report.md", "report.html"):
        assert "gpt-oss 0.0.9" in (report_dir / fmt).read_text()
