"""A CUDA decoding step of one layer, compiled (fast._one_token_layer: the attention kernel inside the graph) against
the uncompiled layer, piece by piece: the attention output and the cache write, the router's choices, then the
layer's update to the residual stream. How the fifth session told a rounding difference from a wrong kernel when
tests/test_gpu.py's comparison of the two failed (docs/benchmarks.md). Small random model, bf16; needs CUDA.

    PYTHONPATH=. python3 scripts/compare_compiled_layer.py
"""

import sys

import torch

sys.path.insert(0, ".")
from gptoss_model import GPTOss_Small, GPTOssModelFull, fast  # noqa: E402
from gptoss_model.generate import StaticLayerCache  # noqa: E402
from gptoss_model.model import GptOssDecoderLayer  # noqa: E402

SLOT, SLOTS = 40, 64  # the new token's cache slot among a 64-slot static cache


def attention_step(layer, x, position_embeddings, keep, keys, values, slot):
    q, k, v = fast._attention_inputs(layer, x, position_embeddings)
    keys, values = StaticLayerCache.write(keys, values, slot, k, v)
    return fast._one_token_attention(layer.self_attn, q, keys, values, keep)


def main():
    torch.manual_seed(0)  # the same model and inputs as the test
    model = GPTOssModelFull(GPTOss_Small(implementation="fast"), device="cuda", dtype=torch.bfloat16).eval()
    layer = model.model.layers[0]
    layer.self_attn.sinks.data.normal_(0, 2)
    x = torch.randn(1, 1, model.config.hidden_size, device="cuda").to(torch.bfloat16)
    position_embeddings = model.model.rotary_emb(torch.tensor([[SLOT]], device="cuda"), torch.bfloat16)
    keep = (torch.arange(SLOTS, device="cuda") <= SLOT).view(1, 1, 1, SLOTS)
    buffers = [torch.randn(1, 2, SLOTS, 32, device="cuda").to(torch.bfloat16) for _ in range(2)]
    slot = torch.tensor([SLOT], device="cuda")
    attention = layer.self_attn
    with torch.no_grad():
        compiled_buffers = [b.clone() for b in buffers]
        got = torch.compile(attention_step)(layer, x, position_embeddings, keep, *compiled_buffers, slot)
        q, k, v = attention.project(layer.input_layernorm(x), position_embeddings)
        eager_buffers = [b.clone() for b in buffers]
        eager_buffers[0][:, :, SLOT], eager_buffers[1][:, :, SLOT] = k[:, :, 0], v[:, :, 0]
        want = fast.one_token_attention(q, *eager_buffers, attention.sinks, keep, attention.scaling)
        print("attention: max difference", (got.float() - want.float()).abs().max().item(),
              "of outputs up to", want.abs().max().item())
        print("cache slot written as the eager step writes it:", torch.equal(compiled_buffers[0], eager_buffers[0]))
        normed = layer.post_attention_layernorm(x).view(1, -1)
        print("router's experts, compiled:", torch.compile(lambda h: layer.mlp.router(h))(normed)[2].tolist(),
              "eager:", layer.mlp.router(normed)[2].tolist())
        out = fast._compiled(fast._one_token_layer)(layer, x, position_embeddings, keep,
                                                    *(b.clone() for b in buffers), slot)
        reference = GptOssDecoderLayer.forward(layer, x, position_embeddings, keep,
                                               StaticLayerCache(*(b.clone() for b in buffers), slot))
        print("layer output: max difference", (out.float() - reference.float()).abs().max().item(),
              "; update up to", (reference - x).float().abs().max().item(), "; |x| up to", x.abs().max().item())


if __name__ == "__main__":
    main()
