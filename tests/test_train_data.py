"""Chat data: rendering through the checkpoint's chat template, the assistant-only mask, and bad datasets."""

import pytest
from transformers import PreTrainedTokenizerFast

from gptoss_convert.tiny import tiny_checkpoint_dir
from gptoss_model.train import TrainingInputError, collate, tokenize_conversations
from gptoss_model.train.data import assistant_spans

@pytest.fixture(scope="module")
def chat():
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tiny_checkpoint_dir()))  # with its harmony template
    assert tokenizer.chat_template and "<|start|>" in tokenizer.get_vocab()

    def render(messages):
        return tokenizer.apply_chat_template(messages, tokenize=False)

    def encode(text):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return encoded["input_ids"], encoded["offset_mapping"]

    return tokenizer, render, encode


TWO_TURNS = [
    {"role": "user", "content": "Name a prime."},
    {"role": "assistant", "content": "Seven."},
    {"role": "user", "content": "Another?"},
    {"role": "assistant", "content": "Eleven."},
]


def test_only_assistant_turns_are_targets(chat):
    tokenizer, render, encode = chat
    (example,) = tokenize_conversations([TWO_TURNS], render, encode)
    text = render(TWO_TURNS)
    assert len(example.input_ids) == len(example.assistant_mask) == len(encode(text)[0])
    targets, runs, previous = [], [], False
    for token, masked in zip(example.input_ids, example.assistant_mask):
        if masked and not previous:
            runs.append([])
        if masked:
            runs[-1].append(token)
        previous = masked
    decoded = [tokenizer.decode(run) for run in runs]
    # exactly what the model must generate after `<|start|>assistant`, end marker included, once per turn
    assert len(decoded) == 2
    assert decoded[0].endswith("Seven.<|end|>") and decoded[1].endswith("Eleven.<|return|>"), decoded
    assert all(d.startswith("<|channel|>") for d in decoded), decoded
    unmasked = tokenizer.decode([t for t, m in zip(example.input_ids, example.assistant_mask) if not m])
    assert "Name a prime." in unmasked and "Seven" not in unmasked and unmasked.rstrip().endswith("<|start|>assistant")


def test_spans_cover_every_end_marker():
    text = "<|start|>user<|message|>hi<|end|><|start|>assistant<|channel|>analysis<|message|>hm<|end|>" \
           "<|start|>assistant to=functions.f<|channel|>commentary<|message|>{}<|call|>"
    spans = [text[a:b] for a, b in assistant_spans(text)]
    assert spans == ["<|channel|>analysis<|message|>hm<|end|>",
                     " to=functions.f<|channel|>commentary<|message|>{}<|call|>"]


def test_collate_right_pads(chat):
    _, render, encode = chat
    short = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    examples = tokenize_conversations([TWO_TURNS, short], render, encode)
    batch = collate(examples, pad_id=510)
    n = len(examples[1].input_ids)
    assert batch.input_ids.shape == (2, len(examples[0].input_ids))
    assert batch.attention_mask[1, :n].all() and not batch.attention_mask[1, n:].any()
    assert (batch.input_ids[1, n:] == 510).all() and not batch.loss_mask[1, n:].any()


@pytest.mark.parametrize("conversations, message", [
    ([], "the dataset is empty"),
    ([TWO_TURNS, [{"role": "user", "content": "hello"}, {"role": "user", "content": "?"}]],
     r"conversation 1 has no assistant turn \(roles: user, user\)"),
    ([[]], r"conversation 0 has no assistant turn \(roles: no messages\)"),
    (["just text"], "conversation 0: expected a list of"),
])
def test_bad_datasets_stop_with_one_line(chat, conversations, message):
    _, render, encode = chat
    with pytest.raises(TrainingInputError, match=message) as error:
        tokenize_conversations(conversations, render, encode)
    assert "\n" not in str(error.value) and isinstance(error.value, ValueError)


def test_a_template_without_harmony_turns_is_refused(chat):
    _, _, encode = chat
    with pytest.raises(TrainingInputError, match="expected a harmony chat template"):
        tokenize_conversations([TWO_TURNS], lambda messages: " ".join(m["content"] for m in messages), encode)


def test_the_training_package_imports_neither_transformers_nor_gptoss_convert():
    from tests.test_import_rules import modules_after

    loaded = modules_after("import gptoss_model.train")
    assert "gptoss_model.train.grpo" in loaded
    for module in ("transformers", "gptoss_convert", "tokenizers", "jinja2", "matplotlib"):
        assert not any(name == module or name.startswith(module + ".") for name in loaded), module
