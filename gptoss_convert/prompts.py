"""The prompts `verify` (and `goldens`) run: given as text (tokenized with the checkpoint's tokenizer.json), as
token ids, or the defaults, chosen so that the bugs of docs/candidates.md ("Default prompts") can show: one prompt
shorter than the sliding window, one crossing it twice, and, for small checkpoints, one past the original context.
"""

import json
from pathlib import Path

import torch

from gptoss_convert.errors import InputError

LONG_PROMPT_MAX_HIDDEN = 1024  # checkpoints this narrow also get a prompt past the original context (YaRN shows)

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
    lengths = default_prompt_lengths(config)
    if tokenizer is not None:
        ids = [i for i in tokenizer.encode(DEFAULT_TEXT).ids if i < config.vocab_size] or [0]
        ids = ids * (max(lengths) // len(ids) + 1)
        return [{"text": None, "token_ids": ids[:n]} for n in lengths]
    generator = torch.Generator().manual_seed(0)
    top = min(config.vocab_size, 199998)  # plain text ids, below the special tokens
    return [{"text": None, "token_ids": torch.randint(0, top, (n,), generator=generator).tolist()} for n in lengths]


def parse_prompts(texts, token_ids_file, config, tokenizer) -> list:
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
    if not prompts:
        return default_prompts(config, tokenizer)
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
