"""LoRA adapters (attach, merge, save/load, switch off), activation checkpointing, and atomic adapter files."""

import pytest
import torch

from gptoss_model import GPTOss_Small, GPTOssModelFull
from gptoss_model.train import (
    TrainingInputError, adapters_disabled, attach_lora, collate, disable_activation_checkpointing,
    enable_activation_checkpointing, load_adapters, merge_lora, save_adapters, sft_loss,
)
from gptoss_model.io import atomic_write_with
from gptoss_model.train.data import ChatExample
from gptoss_model.train.lora import adapters

CONFIG = GPTOss_Small(vocab_size=128, hidden_size=32, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, num_local_experts=4, num_experts_per_tok=2, sliding_window=4)
ALL = ("attention", "router", "experts")


def model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    m = GPTOssModelFull(CONFIG)
    with torch.no_grad():  # non-zero biases and a sharper router, so routing and adapters both matter
        for name, p in m.named_parameters():
            p.add_(0.05 * torch.randn_like(p)) if name.endswith("bias") or "router" in name else None
    return m.to(dtype).eval()


def randomise(m, seed=1):
    with torch.no_grad():
        for delta in adapters(m).values():
            delta.B.normal_(0, 0.2, generator=torch.Generator().manual_seed(seed))
    return m


IDS = torch.randint(0, 128, (2, 11), generator=torch.Generator().manual_seed(0))


def test_attach_freezes_the_model_and_starts_as_the_identity():
    plain, adapted = model(), model()
    trainable = attach_lora(adapted, rank=4, alpha=8, targets=ALL)
    assert trainable and all(p.requires_grad for p in trainable)
    assert {n for n, p in adapted.named_parameters() if p.requires_grad} == {
        n for n, p in adapted.named_parameters() if n.endswith((".A", ".B"))}
    assert len(adapters(adapted)) == CONFIG.num_hidden_layers * (4 + 1 + 2)
    experts = adapters(adapted)["model.layers.0.mlp.experts.gate_up_proj"]
    assert experts.A.shape == (4, 4, 32) and experts.B.shape == (4, 64, 4)  # one pair per expert
    with torch.no_grad():
        assert torch.equal(adapted(input_ids=IDS), plain(input_ids=IDS))  # B = 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_gives_the_adapted_outputs_exactly(dtype):
    m = randomise(model(dtype))
    attach_lora(m, rank=4, alpha=8, targets=ALL)
    randomise(m)
    with torch.no_grad():
        adapted = m(input_ids=IDS)
        with adapters_disabled(m):
            base = m(input_ids=IDS)
        merged = merge_lora(m)(input_ids=IDS)
    assert not adapters(m) and not any(n.endswith((".A", ".B")) for n, _ in m.named_parameters())
    assert set(m.state_dict()) == set(model().state_dict())  # plain names again: save_pretrained writes our format
    assert (adapted.float() - base.float()).abs().max() > 1e-2
    assert torch.equal(merged, adapted)


def test_save_and_load_round_trip(tmp_path):
    trained = model()
    attach_lora(trained, rank=3, alpha=6, targets=("attention", "router"))
    randomise(trained)
    path = save_adapters(trained, tmp_path / "a.safetensors", ("attention", "router"))
    fresh = load_adapters(model(), path)
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=IDS), trained(input_ids=IDS))
    assert len(adapters(fresh)) == len(adapters(trained)) == CONFIG.num_hidden_layers * 5
    with pytest.raises(TrainingInputError, match="no such adapter file"):
        load_adapters(model(), tmp_path / "missing.safetensors")
    with pytest.raises(TrainingInputError, match="unknown LoRA target"):
        attach_lora(model(), targets=("mlp",))


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    m = model()
    attach_lora(m, rank=2, alpha=4)
    path = save_adapters(m, tmp_path / "a.safetensors", ("attention", "router"))
    before = path.read_bytes()

    def crash(tmp):
        open(tmp, "wb").write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_with(path, crash)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


def test_activation_checkpointing_keeps_loss_and_gradients():
    batch = collate([ChatExample(IDS[0].tolist(), [False] * 4 + [True] * 7),
                     ChatExample(IDS[1, :8].tolist(), [False] * 3 + [True] * 5)], pad_id=0)
    grads = []
    for checkpointed in (False, True):
        m = model()
        attach_lora(m, rank=4, alpha=8, targets=ALL)
        randomise(m)
        if checkpointed:
            enable_activation_checkpointing(m)
        calls = []
        m.model.layers[0].self_attn.register_forward_hook(lambda *_: calls.append(1))
        loss = sft_loss(m, batch)
        loss.backward()
        assert len(calls) == (2 if checkpointed else 1)  # checkpointed: the backward pass ran the layer again
        grads.append((loss.item(), {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}))
        if checkpointed:  # generation through the cache still works, and switching off restores the class forward
            with torch.no_grad():
                m.generate(IDS[:, :3], 2)
            disable_activation_checkpointing(m)
            assert "forward" not in vars(m.model.layers[0])
    (loss0, g0), (loss1, g1) = grads
    assert loss0 == pytest.approx(loss1, abs=1e-6)
    for name in g0:
        assert torch.allclose(g0[name], g1[name], atol=1e-6), name
