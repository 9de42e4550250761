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


def test_the_skeleton_takes_any_iterable_of_layers_as_its_per_layer_hook():
    from gptoss_model.model import decoder_forward

    model = GPTOssModelFull(GPTOss_Small(num_hidden_layers=3, sliding_window=4)).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    visited = []

    def streamed():  # what offload.OffloadedModel does, minus the copies: hand over one layer at a time
        for index, layer in enumerate(model.model.layers):
            visited.append(index)
            yield layer

    with torch.no_grad():
        hooked = decoder_forward(model.model, ids, layers=streamed())
        plain = model.model(ids)
        reversed_stack = decoder_forward(model.model, ids, layers=list(model.model.layers)[::-1])
    assert visited == [0, 1, 2]
    assert torch.equal(hooked, plain)
    assert not torch.allclose(reversed_stack, plain), "the hook's layers are the ones that run"


def test_fast_attaches_from_outside_and_detaches_cleanly():
    from gptoss_model.model import GptOssAttention, GptOssDecoderLayer, GptOssExperts

    model = GPTOssModelFull(GPTOss_Small(num_hidden_layers=2))
    keys = list(model.state_dict())
    model.set_implementation("fast")
    layer = model.model.layers[0]
    assert type(layer).__name__ == "FastDecoderLayer" and isinstance(layer, GptOssDecoderLayer)
    assert type(layer.self_attn).__name__ == "FastAttention" and type(layer.mlp.experts).__name__ == "FastExperts"
    assert list(model.state_dict()) == keys and model.config.implementation == "fast"
    model.set_implementation("eager")
    assert {type(m) for m in model.modules()} >= {GptOssDecoderLayer, GptOssAttention, GptOssExperts}
    assert not any(type(m).__name__.startswith("Fast") for m in model.modules())
