"""StaticDecoder (static KV cache; a CUDA graph per step on GPU) emits exactly the tokens of model.generate."""

import pytest
import torch

from gptoss_model import GPTOss_Small, GPTOssModelFull
from gptoss_model.decode import StaticDecoder


def random_model(device="cpu"):
    torch.manual_seed(0)
    model = GPTOssModelFull(GPTOss_Small(sliding_window=8, implementation="fast"), device=device)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3 if p.dim() > 1 else 0.5)
    return model


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_static_decoder_matches_generate(device):
    model = random_model(device)
    ids = torch.randint(0, model.config.vocab_size, (2, 11), device=device)
    expected = model.generate(ids, 20)  # crosses the 8-token window several times
    decoder = StaticDecoder(model, batch=2, max_len=64)
    assert decoder.use_graph == (device == "cuda")
    assert torch.equal(decoder.generate(ids, 20), expected)
    assert torch.equal(decoder.generate(ids, 20), expected), "a second run (graph replayed) must match too"


def test_static_decoder_refuses_what_it_cannot_do():
    model = random_model()
    with pytest.raises(ValueError, match="max_len"):
        StaticDecoder(model, batch=1, max_len=16).generate(torch.zeros(1, 10, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="fast"):
        StaticDecoder(model.set_implementation("eager"), batch=1, max_len=16)
