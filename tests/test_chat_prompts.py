"""verify --chat / --messages: conversations rendered through the checkpoint's chat_template.jinja by Transformers'
apply_chat_template (the text written out by hand here, its ids by the `tokenizers` library directly), the default
harmony conversation, and one-line exit-2 errors naming the --messages file."""

import json

import pytest
from click.testing import CliRunner
from tokenizers import Tokenizer

from gptoss_convert.cli import cli
from gptoss_convert.prompts import DEFAULT_CONVERSATION, read_messages
from gptoss_convert.tiny import TINY_CONFIG, tiny_checkpoint_dir
from tests.test_bad_inputs import case  # noqa: F401

HEADER = ("<|start|>system<|message|>You are a helpful assistant.\n\nReasoning: medium\n\n# Valid channels: analysis, "
          "commentary, final. Channel must be included for every message.<|end|>")


def _verify(tmp_path, *args):
    result = CliRunner().invoke(cli, ["verify", "--report", str(tmp_path / "report"), "--quiet", *args])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / "report" / "report.json").read_text())["prompts"]


def _ids(text: str) -> list[int]:
    return Tokenizer.from_file(str(tiny_checkpoint_dir() / "tokenizer.json")).encode(text).ids


def test_chat_renders_each_text_as_a_harmony_conversation(tmp_path):
    prompts = _verify(tmp_path, "--chat", "Hello there", "--chat", "What is a sliding window?")
    expected = [HEADER + f"<|start|>user<|message|>{t}<|end|><|start|>assistant"
                for t in ("Hello there", "What is a sliding window?")]
    assert [p["text"] for p in prompts] == expected
    assert [p["token_ids"] for p in prompts] == [_ids(t) for t in expected]
    assert prompts[0]["token_ids"][0] == 179 and prompts[0]["token_ids"].count(181) == 2  # <|start|>, <|message|>


def test_messages_file_with_a_conversation_and_a_list_of_them(tmp_path):
    one = [{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "Hi"},
           {"role": "assistant", "content": "Hello"}]
    (tmp_path / "one.json").write_text(json.dumps(one))
    (tmp_path / "two.json").write_text(json.dumps([one, one[1:2]]))
    prompts = _verify(tmp_path, "--messages", str(tmp_path / "one.json"), "--prompt", "plain text")
    expected = (HEADER + "<|start|>developer<|message|># Instructions\n\nBe terse.<|end|>"
                "<|start|>user<|message|>Hi<|end|><|start|>assistant<|channel|>final<|message|>Hello<|return|>")
    assert prompts[0] == {"text": "plain text", "token_ids": _ids("plain text")}
    assert prompts[1] == {"text": expected, "token_ids": _ids(expected)}
    assert len(_verify(tmp_path, "--messages", str(tmp_path / "two.json"))) == 2


def test_default_prompts_include_a_harmony_conversation_longer_than_the_window():
    """The prompts verify picks without --prompt/--token-ids/--chat/--messages (the full default run is
    tests/test_verify.py::test_tiny_passes_with_table_and_reports)."""
    from gptoss_convert.checkpoint import open_checkpoint
    from gptoss_convert.prompts import all_prompts, load_tokenizer

    ckpt = open_checkpoint(tiny_checkpoint_dir())
    prompts = all_prompts(ckpt, TINY_CONFIG, load_tokenizer(ckpt.root, ckpt.side_files))
    assert len(prompts) == 4 and all(p["text"] is None for p in prompts[:3])  # short, crossing W, past 4,096
    chat = prompts[3]
    assert chat["text"].startswith(HEADER + "<|start|>developer<|message|># Instructions")
    assert "<|channel|>analysis" not in chat["text"]  # the earlier turn's thinking is dropped
    assert chat["text"].endswith(DEFAULT_CONVERSATION[-1]["content"] + "<|end|><|start|>assistant")
    assert len(chat["token_ids"]) > 2 * TINY_CONFIG.sliding_window and chat["token_ids"] == _ids(chat["text"])
    # o200k averages about 4 characters of English per token; at 8 per token this would still exceed the real
    # models' 128-token window
    assert len(chat["text"]) > 8 * 128


@pytest.mark.parametrize("content, pattern", [
    (None, r"--messages .*missing\.json: cannot read JSON \(.*No such file"),
    ("{not json", r"--messages .*bad\.json: cannot read JSON"),
    ({"role": "user"}, r"--messages .*bad\.json: found dict; expected a list of"),
    ([{"role": "user"}], r"--messages .*bad\.json: message 0 has no 'content'"),
    ([], r"--messages .*bad\.json: found an empty list; expected a list of"),
    ([{"content": "hi"}], r"--messages .*bad\.json: message 0 has no 'role' string"),
    ([{"role": "user", "content": 3}], r"message 0: 'content' must be a string or a list of parts, found int"),
    ([[{"role": "user", "content": "ok"}], ["x"]], r"bad\.json: conversation 1: message 0 is a str, not an object"),
    ([{"role": "narrator", "content": "x"}], r"--messages .*bad\.json: the checkpoint's chat template cannot "
                                             r"render it \(.*unknown role narrator"),
])
def test_bad_messages_files_exit_2_naming_the_file(case, content, pattern):  # noqa: F811
    name = "missing.json" if content is None else "bad.json"
    if content is not None:
        (case.root / name).write_text(content if isinstance(content, str) else json.dumps(content))
    case.fails(2, pattern, "verify", "--model", case.ckpt, "--messages", case.root / name,
               "--report", case.root / "report")


def test_chat_needs_a_chat_template(case):  # noqa: F811
    (case.ckpt / "chat_template.jinja").unlink()
    case.fails(2, r"--chat: the checkpoint .* has no chat_template\.jinja, so conversations cannot be rendered",
               "verify", "--model", case.ckpt, "--chat", "hi", "--report", case.root / "report")


def test_read_messages_accepts_the_messages_key(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}))
    assert read_messages(tmp_path / "m.json") == [[{"role": "user", "content": "hi"}]]
