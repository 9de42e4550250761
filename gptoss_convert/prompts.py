"""The prompts `verify` (and `goldens`) run: text (tokenized with the checkpoint's tokenizer.json), token ids,
conversations rendered through the checkpoint's harmony chat template (our own, data/chat_template.jinja, shipped as
`chat_template.jinja` in every checkpoint scripts/make_checkpoint.py writes), or the defaults, chosen so that the bugs
of docs/candidates.md ("Default prompts") can show: one prompt shorter than the sliding window, one crossing it
twice, for small checkpoints one past the original context, and a harmony conversation longer than the window.
"""

import json
from importlib import resources
from pathlib import Path

import torch

from gptoss_convert.errors import InputError

LONG_PROMPT_MAX_HIDDEN = 1024  # checkpoints this narrow also get a prompt past the original context (YaRN shows)
CHAT_TEMPLATE_FILE = "chat_template.jinja"

# Used when --prompt/--token-ids are not given. Tokenized with the checkpoint's tokenizer.json when there is one.
DEFAULT_TEXT = (
    "The quick brown fox jumps over the lazy dog. A verification tool compares two implementations of one model, "
    "layer by layer, and says exactly where they part ways. Attention sinks, sliding windows, rotary embeddings "
    "and routed experts all have to agree before the logits can. "
)


def load_tokenizer(root: Path, side_files):
    candidates = [p for p in side_files if Path(p).name == "tokenizer.json"] + [root / "tokenizer.json"]
    for path in candidates:
        if Path(path).is_file():
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(path))
    return None


def default_prompt_lengths(config) -> list:
    """One prompt shorter than the sliding window, one crossing it twice (window bugs only show there), and, for
    small checkpoints, one past the original context (original_max_position_embeddings), where YaRN's
    extrapolation and a wrong `truncate` show plainly (docs/candidates.md, "Default prompts")."""
    lengths = [max(4, config.sliding_window // 2), 2 * config.sliding_window + 16]
    if config.hidden_size <= LONG_PROMPT_MAX_HIDDEN:
        lengths.append(config.rope_original_max_position_embeddings + 2 * config.sliding_window)
    return lengths


def default_prompts(config, tokenizer) -> list:
    return prompts_of_lengths(default_prompt_lengths(config), config, tokenizer)


def prompts_of_lengths(lengths, config, tokenizer) -> list:
    """One prompt per length: the default text repeated (through the tokenizer), else seeded random plain-text ids."""
    if tokenizer is not None:
        ids = [i for i in tokenizer.encode(DEFAULT_TEXT).ids if i < config.vocab_size] or [0]
        ids = ids * (max(lengths) // len(ids) + 1)
        return [{"text": None, "token_ids": ids[:n]} for n in lengths]
    generator = torch.Generator().manual_seed(0)
    top = min(config.vocab_size, 199998)  # plain text ids, below the special tokens
    return [{"text": None, "token_ids": torch.randint(0, top, (n,), generator=generator).tolist()} for n in lengths]


def all_prompts(ckpt, config, tokenizer, texts=(), token_ids_file=None, chats=(), messages_file=None) -> list:
    """--prompt/--token-ids, then --chat/--messages rendered through the chat template; with none of them, the
    default prompts plus the default harmony conversation."""
    rendered = chat_prompts(ckpt.root, ckpt.side_files, chats, messages_file)
    if rendered and not (texts or token_ids_file):
        return parse_prompts((), None, config, tokenizer, given=rendered)
    plain = parse_prompts(texts, token_ids_file, config, tokenizer, given=rendered)
    if not (texts or token_ids_file or rendered):
        plain += parse_prompts((), None, config, tokenizer, given=default_chat_prompt(ckpt.root, ckpt.side_files))
    return plain


def parse_prompts(texts, token_ids_file, config, tokenizer, given=()) -> list:
    prompts = []
    for text in texts or ():
        if tokenizer is not None:
            prompts.append({"text": text, "token_ids": tokenizer.encode(text).ids})
        else:
            try:
                prompts.append({"text": None, "token_ids": [int(t) for t in text.replace(",", " ").split()]})
            except ValueError:
                raise InputError(
                    f"--prompt {text!r}: this checkpoint has no tokenizer.json, so prompts must be token ids "
                    "(e.g. --prompt '1 2 3')"
                ) from None
    if token_ids_file:
        prompts += _read_token_ids(Path(token_ids_file))
    if not prompts and not given:
        return default_prompts(config, tokenizer)
    prompts += list(given)
    for i, prompt in enumerate(prompts):
        ids = prompt["token_ids"]
        if not ids:
            raise InputError(f"prompt {i} is empty")
        bad = [t for t in ids if not 0 <= t < config.vocab_size]
        if bad:
            raise InputError(f"prompt {i}: token id {bad[0]} is outside the vocabulary 0..{config.vocab_size - 1}")
    return prompts


def _read_token_ids(path: Path) -> list:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"--token-ids {path}: cannot read a JSON list of token ids ({error})") from None
    rows = data if isinstance(data, list) and data and isinstance(data[0], list) else [data]
    if not all(isinstance(r, list) and r and all(isinstance(t, int) for t in r) for r in rows):
        raise InputError(f"--token-ids {path}: expected a JSON list of ints, or a list of such lists")
    return [{"text": None, "token_ids": r} for r in rows]


# ---- conversations through the chat template ------------------------------------------------------------------


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
