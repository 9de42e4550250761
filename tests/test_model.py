"""gptoss_model/model.py on its own: initialisation (the oracle tests live in test_model_parity.py)."""

import torch

from gptoss_model import GPTOss_Small, GPTOssModelFull


def test_seeded_reset_parameters_gives_every_layer_its_own_weights():
    model = GPTOssModelFull(GPTOss_Small(num_hidden_layers=2))
    model.reset_parameters(seed=3)
    first, second = model.model.layers
    assert not torch.equal(first.self_attn.q_proj.weight, second.self_attn.q_proj.weight)
    assert not torch.equal(first.mlp.experts.down_proj, second.mlp.experts.down_proj)
    assert not torch.equal(first.self_attn.q_proj.weight[:, :64], first.self_attn.k_proj.weight[:, :64])
    again = GPTOssModelFull(GPTOss_Small(num_hidden_layers=2))
    again.reset_parameters(seed=3)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), f"{name}: the same seed must give the same model"
    assert torch.equal(first.input_layernorm.weight, torch.ones(256))
    assert torch.equal(first.self_attn.q_proj.bias, torch.zeros(first.self_attn.q_proj.bias.shape))
    std = first.self_attn.q_proj.weight.std().item()
    assert abs(std - model.config.initializer_range) < 0.002
