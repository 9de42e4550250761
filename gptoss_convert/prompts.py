"""Chat prompts: our own harmony chat template (data/chat_template.jinja), shipped as `chat_template.jinja` in every
checkpoint scripts/make_checkpoint.py writes, and the rendering of conversations through a checkpoint's template."""

from importlib import resources
from pathlib import Path

from gptoss_convert.errors import InputError

CHAT_TEMPLATE_FILE = "chat_template.jinja"


def harmony_template_path() -> Path:
    """Our harmony chat template (not OpenAI's text: written from the format's public description)."""
    return Path(str(resources.files("gptoss_convert") / "data" / CHAT_TEMPLATE_FILE))

# The default harmony conversation of `verify`: longer than the real models' 128-token sliding window once
# rendered (and far longer than the tiny one's 16), so the window is crossed inside a chat-formatted prompt.
DEFAULT_CONVERSATION = [
    {"role": "system", "content": "You check numerical code. Answer briefly and say what you measured."},
    {"role": "user", "content": "Two implementations of the same transformer layer give outputs that differ by "
                                "about one part in a thousand. The weights are identical and both run in float32. "
                                "Where would you look first, and why?"},
    {"role": "assistant", "thinking": "A difference of 1e-3 in float32 is too large for reordered sums alone. "
                                      "Common causes: a mask off by one, a different epsilon in a norm, a rotary "
                                      "table computed in lower precision, or a clamp applied in another place.",
     "content": "Compare the layer's parts one at a time: the attention mask at the window edge, the norm epsilon, "
                "the rotary tables, and the activation clamp. The first part that disagrees is the place to look."},
    {"role": "user", "content": "The first difference shows up only for positions beyond the sliding window, and "
                                "only in the layers that use it; the full-attention layers agree to the last bit. "
                                "What does that tell you, and what small test would confirm it before we look at "
                                "the long prompts again?"},
]


def read_messages(path: Path) -> list[list[dict]]:
    """--messages FILE.json: one conversation (a list of {role, content} messages, or {"messages": [...]}) or a
    list of conversations. InputError (exit 2) naming the file for anything else."""
    import json

    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"--messages {path}: cannot read JSON ({error})") from None
    if isinstance(body, dict) and "messages" in body:
        body = body["messages"]
    conversations = body if isinstance(body, list) and body and all(isinstance(c, list) for c in body) else [body]
    for i, conversation in enumerate(conversations):
        problem = _conversation_problem(conversation)
        if problem:
            where = f"conversation {i}: " if len(conversations) > 1 else ""
            raise InputError(f"--messages {path}: {where}{problem}; expected a list of {{\"role\", \"content\"}} "
                             "messages, or a list of such lists")
    return conversations


def _conversation_problem(conversation) -> str | None:
    if not isinstance(conversation, list) or not conversation:
        return f"found {type(conversation).__name__ if conversation != [] else 'an empty list'}"
    for j, message in enumerate(conversation):
        if not isinstance(message, dict):
            return f"message {j} is a {type(message).__name__}, not an object"
        if not isinstance(message.get("role"), str):
            return f"message {j} has no 'role' string"
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            return f"message {j}: 'content' must be a string or a list of parts, found {type(content).__name__}"
        if content is None and not message.get("tool_calls"):
            return f"message {j} has no 'content'"
    return None


def chat_tokenizer(root: Path, side_files=(), what: str = "--chat"):
    """Transformers' fast tokenizer of the checkpoint (tokenizer.json + tokenizer_config.json + chat_template.jinja
    beside the weights, or in the download root for original/). The class is fixed: no auto class, no remote code."""
    directories = [Path(p).parent for p in side_files if Path(p).name == "tokenizer.json"] + [Path(root)]
    directory = next((d for d in directories if (d / "tokenizer.json").is_file()), None)
    if directory is None or not (directory / CHAT_TEMPLATE_FILE).is_file():
        missing = "tokenizer.json" if directory is None else CHAT_TEMPLATE_FILE
        raise InputError(f"{what}: the checkpoint {root} has no {missing}, so conversations cannot be rendered; "
                         "use --prompt or --token-ids")
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def render(tokenizer, conversation: list[dict], where: str) -> dict:
    """One prompt {"text", "token_ids"}: the conversation through the checkpoint's chat template, as
    `tokenizer.apply_chat_template` renders it; a generation prompt follows unless the last turn is the assistant's."""
    from jinja2 import TemplateError

    options = dict(add_generation_prompt=conversation[-1].get("role") != "assistant")
    try:
        text = tokenizer.apply_chat_template(conversation, tokenize=False, **options)
        ids = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True, **options)["input_ids"]
    except (TemplateError, TypeError, ValueError, KeyError) as error:
        raise InputError(f"{where}: the checkpoint's chat template cannot render it ({error})") from None
    return {"text": text, "token_ids": list(ids)}


def chat_prompts(root: Path, side_files, chats=(), messages_file=None) -> list[dict]:
    """verify's --chat TEXT (one user message each) and --messages FILE.json, rendered."""
    conversations = [([{"role": "user", "content": text}], f"--chat {text!r}") for text in chats or ()]
    if messages_file:
        conversations += [(c, f"--messages {messages_file}") for c in read_messages(Path(messages_file))]
    if not conversations:
        return []
    tokenizer = chat_tokenizer(root, side_files, "--messages" if messages_file else "--chat")
    return [render(tokenizer, conversation, where) for conversation, where in conversations]


def default_chat_prompt(root: Path, side_files) -> list[dict]:
    """The default harmony conversation, when the checkpoint can render it (tokenizer.json and a chat template)."""
    try:
        tokenizer = chat_tokenizer(root, side_files)
    except InputError:
        return []
    return [render(tokenizer, DEFAULT_CONVERSATION, "the default conversation")]
