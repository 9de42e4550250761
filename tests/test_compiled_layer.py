"""The compiled decoder layer (fast.layer_forward, used on CUDA) traced on the CPU: no graph breaks, graphs shared by
every layer and every length, the same numbers as the uncompiled fast path. CI has no GPU, so the graphs are traced with the "aot_eager" backend (dynamo and
AOTAutograd as on CUDA, the ops run by eager PyTorch); tests/test_gpu.py runs the inductor-compiled kernels."""

import functools

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

import gptoss_model.fast as fast
from gptoss_model import GPTOss_Small, GPTOssModelFull


@pytest.fixture
def compiled_everywhere(monkeypatch):
    """A fresh compile cache, graphs traced with aot_eager."""
    torch._dynamo.reset()
    counters.clear()
    backend = CompileCounterWithBackend("aot_eager")  # counts the graphs layer_forward makes
    monkeypatch.setattr(fast, "COMPILE_BACKEND", backend)
    monkeypatch.setattr(fast, "_compiled_functions", {})
    yield backend
    torch._dynamo.reset()


def models(config):
    """Two equal bf16 fast-path models; the first runs every decoder layer through fast.layer_forward (as on CUDA)."""
    torch.manual_seed(0)
    compiled = GPTOssModelFull(config.replace(implementation="fast"), dtype=torch.bfloat16).eval()
    compiled.model.layers[0].mlp.experts.gate_up_proj_bias.data.normal_(0, 2)  # exercise the SwiGLU clamps
    uncompiled = GPTOssModelFull(config.replace(implementation="fast"), dtype=torch.bfloat16).eval()
    uncompiled.load_state_dict(compiled.state_dict())
    for layer in compiled.model.layers:
        layer.forward = functools.partial(fast.layer_forward, layer)
    return compiled, uncompiled


def test_one_graph_serves_every_layer_and_length_without_breaks(compiled_everywhere):
    config = GPTOss_Small(sliding_window=8)  # 4 layers, sliding and full
    compiled, uncompiled = models(config)
    reference_outputs = []
    with torch.no_grad():
        for length in (20, 33, 47):
            ids = torch.randint(0, config.vocab_size, (2, length), generator=torch.Generator().manual_seed(length))
            mask = torch.ones_like(ids)
            mask[1, :3] = 0
            got = compiled(input_ids=ids, attention_mask=mask)
            reference_outputs.append((got, uncompiled(input_ids=ids, attention_mask=mask)))
    assert dict(counters["graph_break"]) == {}
    # two pieces (before and after the attention kernel), each shared by every layer, sliding and full (the
    # weights are graph inputs); the first length compiles with static sizes, the second recompiles with a symbolic
    # length, and no further length compiles again: 2 pieces x 2
    assert compiled_everywhere.frame_count == 4
    for got, want in reference_outputs:
        assert got.shape == want.shape
        scale = want.float().abs().max().item()
        assert (got.float() - want.float()).abs().max().item() <= 0.02 * scale  # bf16 rounding, not a bug


@pytest.mark.parametrize("batch", [1, 2])  # batch 1 decodes through fast._one_token_experts
def test_greedy_decoding_through_the_cache_is_unchanged(compiled_everywhere, batch):
    config = GPTOss_Small(sliding_window=8)
    compiled, uncompiled = models(config)
    ids = torch.randint(0, config.vocab_size, (batch, 12), generator=torch.Generator().manual_seed(1))
    want = uncompiled.generate(ids, max_new_tokens=10)
    got = compiled.generate(ids, max_new_tokens=10)
    assert dict(counters["graph_break"]) == {}
    assert torch.equal(got, want)
    with torch.no_grad():  # and the logits of a decoding step, within bf16 rounding
        steps = []
        for model in (compiled, uncompiled):
            cache = model.new_cache()
            model(input_ids=ids, cache=cache)
            steps.append(model(input_ids=want[:, 12:13], cache=cache).float())
    assert (steps[0] - steps[1]).abs().max().item() <= 0.01 * steps[1].abs().max().item()


def test_static_decoder_steps_compile_to_one_piece_with_the_cache_writes_inside(compiled_everywhere):
    """StaticDecoder's steps (one token over static buffers) take fast._one_token_layer: the whole layer, cache write
    included, as one graph shared by every layer and step; same greedy tokens as the uncompiled model, and the
    buffers hold the keys the uncompiled path writes."""
    from gptoss_model.generate import StaticDecoder

    config = GPTOss_Small(sliding_window=8)
    compiled, uncompiled = models(config)
    ids = torch.randint(0, config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(2))
    decoders = [StaticDecoder(model, batch=1, max_len=24) for model in (compiled, uncompiled)]
    want = decoders[1].generate(ids, max_new_tokens=9)
    frames_after_prefill = compiled_everywhere.frame_count
    got = decoders[0].generate(ids, max_new_tokens=9)
    assert dict(counters["graph_break"]) == {}
    assert torch.equal(got, want)
    # prefill: the two pieces; the steps: one more graph (static sizes), shared by the 4 layers and 8 steps
    assert compiled_everywhere.frame_count - frames_after_prefill == 3
    for written, reference in zip(decoders[0].keys + decoders[0].values, decoders[1].keys + decoders[1].values):
        assert torch.allclose(written[:, :, 12:20].float(), reference[:, :, 12:20].float(), atol=0.02, rtol=0.02)
        assert written[:, :, 12:20].abs().sum() > 0 and not written[:, :, 20:].any()


def test_top_k_by_rank_keeps_the_largest_and_the_lower_index_of_ties():
    """fast._top_k_by_rank (the router's top k inside a compiled piece on CUDA), eager and traced, against a stable
    sort: on bf16 logits full of ties, the same values and experts, a tie at the k-th place going to the lower index
    as CUDA's top-k does (tests/test_gpu_mxfp4.py compares it with torch.topk there)."""
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randint(-6, 7, (64, 32), generator=generator) / 4).to(torch.bfloat16)  # 13 values over 32
    order = torch.sort(-logits.float(), dim=-1, stable=True).indices[:, :4]  # ties in index order
    for top_k in (fast._top_k_by_rank, torch.compile(fast._top_k_by_rank, backend="aot_eager")):
        values, indices = top_k(logits, 4)
        assert torch.equal(indices, order) and torch.equal(values, logits.gather(1, order))
        assert values.dtype == torch.bfloat16 and indices.dtype == torch.int64


class Activations:
    """What fast._takes_norm_linear reads of x, for a CUDA tensor's decision on the CPU."""

    def __init__(self, rows, dtype=torch.bfloat16, width=64, cuda=True):
        self.shape, self.dtype, self.is_cuda, self._rows = (rows, 1, width), dtype, cuda, rows

    def numel(self):
        return self._rows * self.shape[-1]


@pytest.mark.parametrize("fragments", [False, True])
def test_which_projections_take_the_norm_linear_launches(fragments, monkeypatch):
    """The tree: one row's q/k/v only (o_proj stays Inductor's, several rows cuBLAS's); with FRAGMENT_PROJECTIONS
    (and norm_linear.FRAGMENTS), bf16 up to 8 rows, o_proj too; never on the CPU, without a bias or with gradients on (kernels have no backward)."""
    from torch import nn

    from gptoss_model.kernels import norm_linear

    monkeypatch.setattr(fast, "FRAGMENT_PROJECTIONS", fragments)  # both switches, as the variant sets them
    monkeypatch.setattr(norm_linear, "FRAGMENTS", fragments)
    monkeypatch.setattr(norm_linear, "INTERPRETED", False)
    projection, no_bias = nn.Linear(64, 8), nn.Linear(64, 8, bias=False)
    with torch.no_grad():
        assert fast._takes_norm_linear(Activations(1), projection)
        assert not fast._takes_norm_linear(Activations(1, cuda=False), projection)
        assert not fast._takes_norm_linear(Activations(1), no_bias)
        assert fast._takes_norm_linear(Activations(8), projection) == fragments
        assert fast._takes_norm_linear(Activations(1), projection, o_proj=True) == fragments
        assert fast._takes_norm_linear(Activations(8), projection, o_proj=True) == fragments
        assert not fast._takes_norm_linear(Activations(9), projection, o_proj=True)
        assert not fast._takes_norm_linear(Activations(2, torch.float32), projection)
        assert fast._takes_norm_linear(Activations(1, torch.float32), projection)  # the float32 one-row kernel
    with torch.enable_grad():
        assert not fast._takes_norm_linear(Activations(1), projection)
