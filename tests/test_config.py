"""GPTOssConfig: presets, and the round trip with Transformers' config.json in both rotary spellings."""

import json

import pytest
import torch

from gptoss_model import GPTOss_20B, GPTOss_120B, GPTOss_Small, GPTOssConfig
from gptoss_model.model import yarn_inv_freq

HUB_20B = {  # the hub's config.json for openai/gpt-oss-20b (docs/checkpoints.md)
    "architectures": ["GptOssForCausalLM"], "attention_bias": True, "attention_dropout": 0.0, "eos_token_id": 200002,
    "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880, "initial_context_length": 4096,
    "initializer_range": 0.02, "intermediate_size": 2880,
    "layer_types": ["sliding_attention", "full_attention"] * 12, "max_position_embeddings": 131072,
    "model_type": "gpt_oss", "num_attention_heads": 64, "num_experts_per_tok": 4, "num_hidden_layers": 24,
    "num_key_value_heads": 8, "num_local_experts": 32, "output_router_logits": False, "pad_token_id": 199999,
    "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                       "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"},
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                     "rope_type": "yarn", "truncate": False},
    "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
    "tie_word_embeddings": False, "transformers_version": "4.55.0.dev0", "use_cache": True, "vocab_size": 201088,
}


def test_hub_config_reads_as_the_20b_preset():
    config = GPTOssConfig.from_hf_config(HUB_20B)
    assert config == GPTOss_20B()
    assert config.extra["quantization_config"]["quant_method"] == "mxfp4"


def test_presets():
    assert GPTOss_120B().num_hidden_layers == 36 and GPTOss_120B().num_local_experts == 128
    small = GPTOss_Small()
    assert small.layer_types[:2] == ("sliding_attention", "full_attention") and small.kv_group_size == 4
    assert GPTOss_Small(num_hidden_layers=2).num_hidden_layers == 2


def test_round_trip_through_to_hf_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(GPTOss_Small().to_hf_config()))
    assert GPTOssConfig.from_hf_config(path) == GPTOss_Small()
    assert GPTOssConfig.from_hf_config(tmp_path) == GPTOss_Small()  # a directory works too


def test_transformers_5_rope_parameters_spelling():
    v5 = {k: v for k, v in HUB_20B.items() if k not in ("rope_scaling", "rope_theta")}
    v5["rope_parameters"] = {**HUB_20B["rope_scaling"], "rope_theta": 150000.0}
    assert GPTOssConfig.from_hf_config(v5) == GPTOss_20B()


def test_missing_rope_keys_follow_transformers_defaults():
    rope = {k: v for k, v in HUB_20B["rope_scaling"].items() if k not in ("truncate", "original_max_position_embeddings")}
    config = GPTOssConfig.from_hf_config({**HUB_20B, "rope_scaling": rope})
    assert config.rope_truncate is True  # Transformers treats a missing truncate as True
    assert config.rope_original_max_position_embeddings == 131072  # and falls back to max_position_embeddings


def test_yarn_frequencies_match_the_spec_values():
    inv_freq = yarn_inv_freq(GPTOss_20B())
    assert inv_freq.shape == (32,) and inv_freq[0] == 1.0
    assert torch.allclose(inv_freq[[8, 17, 31]], torch.tensor([0.050813, 1.2932e-4, 3.0235e-7]), rtol=1e-4)
    assert abs(GPTOss_20B().rope_attention_factor - 1.3465736) < 1e-6


def test_transformers_reads_our_config():
    from transformers import GptOssConfig

    hf = GptOssConfig(**GPTOss_20B().to_hf_config())
    assert hf.rope_parameters["factor"] == 32.0 and hf.rope_parameters["truncate"] is False
    assert hf.layer_types == list(GPTOss_20B().layer_types) and hf.num_local_experts == 32


@pytest.mark.parametrize("change", [
    {"num_attention_heads": 6, "num_key_value_heads": 4},
    {"layer_types": ("sliding_attention",)},
    {"num_experts_per_tok": 9},
    {"implementation": "turbo"},
])
def test_invalid_configs_are_rejected(change):
    with pytest.raises(ValueError, match="invalid GPTOssConfig"):
        GPTOss_Small(**change)


def test_non_yarn_rope_is_rejected():
    with pytest.raises(ValueError, match="yarn"):
        GPTOssConfig.from_hf_config({**HUB_20B, "rope_scaling": {"rope_type": "linear", "factor": 2.0}})
