"""gptoss_model.train against Transformers' GptOssForCausalLM with the same weights (float32): per-token
log-probabilities, the masked SFT loss and every gradient, LoRA gradients, and the rollout sampler's log-probabilities
against the trainer's recomputation (the trainer/rollout mismatch of docs/training.md)."""

import pytest
import torch

from gptoss_model import GPTOss_Small
from gptoss_model.train import attach_lora, collate, left_pad, logprobs_from_logits, sample, sft_loss, token_logprobs
from gptoss_model.train.data import ChatExample
from gptoss_model.train.lora import adapters
from gptoss_model.train.rl import completion_logprobs
from tests.hf_oracle import EXPERT_MATRICES, hf_model, our_model_like

CONFIG = GPTOss_Small(
    vocab_size=256, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2, sliding_window=6,
)


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    hf = hf_model(CONFIG, seed=3)
    return hf, our_model_like(hf, CONFIG)


def ids(batch, length, seed):
    return torch.randint(0, CONFIG.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def hf_token_logprobs(hf, input_ids, temperature=1.0):
    """The independent computation: Transformers' logits, log-softmax, pick the next token."""
    logits = hf(input_ids=input_ids).logits.float() / temperature
    return torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def test_token_logprobs_equal_transformers(pair):
    hf, ours = pair
    x = ids(3, 2 * CONFIG.sliding_window + 5, seed=1)  # longer than the window
    with torch.no_grad():
        expected, got = hf_token_logprobs(hf, x), token_logprobs(ours, x)
    assert got.shape == (3, x.shape[1] - 1) and got.dtype == torch.float32
    assert (got - expected).abs().max().item() <= 1e-5
    assert (got <= 0).all()


def test_temperature_divides_the_logits():
    logits = torch.randn(2, 3, 7)
    targets = torch.randint(0, 7, (2, 3))
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, targets[..., None]).squeeze(-1)
    assert torch.allclose(logprobs_from_logits(logits, targets, 0.7), expected, atol=1e-6)


def masked_batch(seed=2):
    """Two right-padded chat-like rows; targets only on the 'assistant' stretch of each."""
    a, b = ids(1, 20, seed)[0].tolist(), ids(1, 14, seed + 1)[0].tolist()
    examples = [ChatExample(a, [False] * 8 + [True] * 7 + [False] * 2 + [True] * 3),
                ChatExample(b, [False] * 5 + [True] * 9)]
    return collate(examples, pad_id=0)


def test_sft_loss_and_every_gradient_equal_transformers(pair):
    hf, ours = pair
    batch = masked_batch()
    labels = batch.input_ids.masked_fill(~batch.loss_mask, -100)  # Transformers ignores label -100
    hf.zero_grad()
    ours.zero_grad()
    hf_loss = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss
    our_loss = sft_loss(ours, batch)
    hf_loss.backward()
    our_loss.backward()
    assert abs(hf_loss.item() - our_loss.item()) <= 1e-5
    ours_params = dict(ours.named_parameters())
    for name, p in hf.named_parameters():
        hf_grad = p.grad if p.grad is not None else torch.zeros_like(p)
        if name.split(".")[-1] in EXPERT_MATRICES:
            hf_grad = hf_grad.transpose(1, 2)
        our_grad = ours_params[name].grad
        our_grad = our_grad if our_grad is not None else torch.zeros_like(hf_grad)
        assert (our_grad - hf_grad).abs().max().item() <= 1e-4 * max(hf_grad.abs().max().item(), 1e-6), name
    ours.zero_grad()


def test_lora_gradients_follow_from_transformers_weight_gradients(pair):
    """With W' = W + s·B·A, dL/dB = s·G·Aᵀ and dL/dA = s·Bᵀ·G, where G = dL/dW' is Transformers' gradient of a
    model holding W'. Checked on every adapted weight (attention, router and experts)."""
    hf, ours = pair
    model = our_model_like(hf, CONFIG)
    attach_lora(model, rank=4, alpha=8.0, targets=("attention", "router", "experts"))
    with torch.no_grad():
        for delta in adapters(model).values():
            delta.B.normal_(0, 0.05, generator=torch.Generator().manual_seed(4))
    batch = masked_batch(seed=5)
    sft_loss(model, batch).backward()
    hf_adapted = hf_model(CONFIG, seed=3)
    merged = {}  # name -> W + s·B·A, as the adapted model computes with it
    for name in adapters(model):
        path, _, param = name.rpartition(".")
        merged[name] = getattr(model.get_submodule(path), param)
    with torch.no_grad():
        for name, weight in merged.items():
            p = hf_adapted.get_parameter(name)
            p.copy_(weight.transpose(1, 2) if name.split(".")[-1] in EXPERT_MATRICES else weight)
    labels = batch.input_ids.masked_fill(~batch.loss_mask, -100)
    hf_adapted(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss.backward()
    assert len(merged) == 2 * (4 + 1 + 2)
    for name, delta in adapters(model).items():
        G = hf_adapted.get_parameter(name).grad
        G = G.transpose(1, 2) if name.split(".")[-1] in EXPERT_MATRICES else G
        expected_B = delta.scale * G @ delta.A.detach().transpose(-1, -2)
        expected_A = delta.scale * delta.B.detach().transpose(-1, -2) @ G
        for got, expected in ((delta.B.grad, expected_B), (delta.A.grad, expected_A)):
            assert (got - expected).abs().max().item() <= 1e-4 * max(expected.abs().max().item(), 1e-7), name


def test_sampler_logprobs_equal_the_trainers_recomputation(pair):
    """The rollout draws token by token through the KV cache from left-padded prompts and stops rows at eos; the
    trainer recomputes with one full forward pass. The two must agree (real-bugs.md B9: 0.08-0.14 apart in the
    wild)."""
    _, ours = pair
    prompts = [ids(1, n, seed=10 + n)[0].tolist() for n in (3, 9, 5, 2 * CONFIG.sliding_window)]
    prompt_ids, prompt_mask = left_pad(prompts, pad_id=0)
    rollout = sample(ours, prompt_ids, prompt_mask, max_new_tokens=2 * CONFIG.sliding_window, temperature=0.9,
                     eos_token_id=list(range(20)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        recomputed = completion_logprobs(ours, rollout, temperature=0.9)
    mask = rollout.completion_mask
    lengths = mask.sum(1)
    assert 0 < lengths.min() < mask.shape[1], "some row must stop at an eos token (ids 0..19 here)"
    assert recomputed.shape == rollout.logprobs.shape == mask.shape
    assert (recomputed - rollout.logprobs)[mask].abs().max().item() <= 1e-5
    # and the trainer's numbers are Transformers' numbers, row by row without padding
    for row, prompt in enumerate(prompts):
        n = int(mask[row].sum())
        sequence = torch.tensor([prompt + rollout.completions[row, :n].tolist()])
        with torch.no_grad():
            expected = hf_token_logprobs(pair[0], sequence, temperature=0.9)[0, len(prompt) - 1 :]
        assert (recomputed[row, :n] - expected).abs().max().item() <= 1e-5, row
