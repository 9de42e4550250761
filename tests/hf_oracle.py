"""Test-owned bridge to Transformers' GptOssForCausalLM: build it from our config, give it random weights with
non-zero sinks and biases, and copy those weights into our model with a mapping these tests own."""

import torch

EXPERT_MATRICES = ("gate_up_proj", "down_proj")  # Transformers stores these [E, in, out]; we keep [E, out, in]


def hf_model(config, seed=0, scale=0.2, experts_implementation="eager"):
    from transformers import GptOssConfig, GptOssForCausalLM

    hf_config = GptOssConfig(**config.to_hf_config())
    hf_config._attn_implementation = "eager"
    hf_config._experts_implementation = experts_implementation
    model = GptOssForCausalLM(hf_config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=generator))
            else:  # every matrix, bias and sink non-zero
                fan_in = p.shape[-1] if p.dim() > 1 else 1
                std = scale if p.dim() == 1 else 1 / fan_in**0.5
                p.copy_(torch.randn(p.shape, generator=generator) * std)
            if name.endswith("gate_up_proj") or name.endswith("down_proj"):
                p.copy_(torch.randn(p.shape, generator=generator) / p.shape[1] ** 0.5)
    return model


def hf_to_ours(hf_state: dict) -> dict:
    ours = {}
    for name, tensor in hf_state.items():
        if name.split(".")[-1] in EXPERT_MATRICES:
            tensor = tensor.transpose(1, 2)
        ours[name] = tensor.detach().clone().contiguous()
    return ours


def our_model_like(hf, config, dtype=torch.float32):
    from gptoss_model import GPTOssModelFull

    model = GPTOssModelFull(config)
    missing, unexpected = model.load_state_dict(hf_to_ours(hf.state_dict()), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model.to(dtype).eval()


def our_name_for(hf_name: str) -> str:
    return hf_name
