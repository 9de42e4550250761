"""`goldens`: record the reference's outputs once, so a candidate can be checked later without the reference.

Streams like `verify`: one layer's weights at a time. The reference adapter (Transformers by default, through
candidates/, or OpenAI's) builds each layer around the checkpoint's tensors and runs it on its own previous
output; the layer's input and output are kept at every row, its components at the checked rows (the format:
goldens_files.py, docs/goldens.md). Only recording imports the reference; reading goldens back never imports
Transformers.
"""

import math
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from gptoss_convert import __version__
from gptoss_convert.errors import CandidateError
from gptoss_convert.goldens_files import (CHECKED, FORMAT, FORMAT_VERSION, aliases, layer_name, meaning, output_names,
                                          write_goldens)
from gptoss_convert.goldens_run import Session, run_adapter
from gptoss_convert.options import DTYPES

LOGIT_BUDGET = 2**21  # logit elements kept (rows × vocabulary): all rows for small vocabularies, a sample for 20b
# Component elements kept (checked rows × layers × (2H + E + 2K)): all rows for small checkpoints; 45 of 176 rows for
# 20b with the default prompts, so that its float32 goldens stay under 100 MB (docs/goldens.md, "Checked rows")
COMPONENT_BUDGET = 6 * 2**20
FIRST_POSITIONS = 4  # positions 0..3 of every prompt are always checked (a position-dependent bug shows from 1)


def default_lengths(sliding_window: int) -> tuple[int, int]:
    """Token counts of the default prompts: W/8 (at least 4) and W + W/4 (positions W.. see a truncated window)."""
    return max(4, sliding_window // 8), sliding_window + sliding_window // 4


def default_prompts(config, tokenizer) -> list:
    """Two prompts, small enough that 20b goldens stay under 100 MB (docs/goldens.md, "Size"): a short one and one
    crossing the sliding window by a quarter window (a window bug starts at position W, so it shows)."""
    from gptoss_convert.prompts import prompts_of_lengths

    return prompts_of_lengths(default_lengths(config.sliding_window), config, tokenizer)


def logit_rows(lengths: list[int], vocab_size: int) -> list[int]:
    """Rows whose logits are kept: all of them when rows × vocabulary fits LOGIT_BUDGET, else evenly spaced rows of
    each prompt (prompt lengths `lengths`), its last row always included."""
    total = sum(lengths)
    if total * vocab_size <= LOGIT_BUDGET:
        return list(range(total))
    per_prompt = max(1, LOGIT_BUDGET // vocab_size // len(lengths))
    rows, start = [], 0
    for n in lengths:
        rows += sorted({start + n - 1 - math.floor(k * n / per_prompt) for k in range(min(per_prompt, n))})
        start += n
    return rows


def checked_count(config: dict) -> int:
    """How many checked rows COMPONENT_BUDGET allows: budget // (layers × (2H + E + 2K)) (45 for 20b, 29 for 120b)."""
    per_row = 2 * config["hidden_size"] + config["num_local_experts"] + 2 * config["num_experts_per_tok"]
    return COMPONENT_BUDGET // (config["num_hidden_layers"] * per_row)


def checked_rows(config: dict, lengths: list[int], count: int | None = None) -> list[int]:
    """Rows (into the T stacked rows) at which every layer's components are kept: all of them when T <= count
    (default checked_count(config): all rows unless the goldens would be large), else `count` rows, never fewer than
    the required ones: of each prompt its first FIRST_POSITIONS positions, its last, and positions W-2..W+2 when it is
    longer than W (a window bug starts at W, so each component still names it there); the rest spread evenly over
    the remaining rows."""
    count, W = checked_count(config) if count is None else count, config["sliding_window"]
    if sum(lengths) <= count:
        return list(range(sum(lengths)))
    required, start = set(), 0
    for n in lengths:
        near_window = range(max(0, W - 2), min(W + 3, n)) if n > W else ()
        required |= {start + p for p in (*range(min(FIRST_POSITIONS, n)), n - 1, *near_window)}
        start += n
    rest = [r for r in range(sum(lengths)) if r not in required]
    extra = min(len(rest), max(0, count - len(required)))
    spread = {rest[(2 * k + 1) * len(rest) // (2 * extra)] for k in range(extra)}  # the middle of equal shares
    return sorted(required | spread)


def estimate_bytes(config: dict, lengths: list[int], dtype: str, checked: int | None = None) -> dict:
    """The size of goldens, from the config and the prompt lengths, without recording them (safetensors headers
    excluded: a few KB). T rows; per layer the input [T, H] (the layer output is the next input, stored once), and
    at the C checked rows the attention and MoE outputs [C, H], router logits [C, E], top-k indices (int64) and
    weights [C, K]; the final norm's input and output [T, H]; the logits at the kept rows [R, V]. `checked`: as
    checked_rows()'s count."""
    width = 4 if dtype == "float32" else 2
    T, H, L = sum(lengths), config["hidden_size"], config["num_hidden_layers"]
    E, K, V = config["num_local_experts"], config["num_experts_per_tok"], config["vocab_size"]
    R, C = len(logit_rows(lengths, V)), len(checked_rows(config, lengths, checked))
    inputs = 3 * T * 8 + R * 8 + C * 8 + (L + 1) * T * H * width
    per_layer = 2 * C * H * width + C * E * width + C * K * (8 + width)
    expected = L * per_layer + T * H * width + R * V * width
    return {"inputs": inputs, "expected": expected, "total": inputs + expected, "rows": T, "logit_rows": R,
            "checked_rows": C}


def record_goldens(model, out, dtype="float32", device="auto", prompts=None, token_ids_file=None, force=False,
                   reference="transformers", progress=True, checked=None) -> Path:
    """Run the reference over the prompts, layer by layer (each fed its own previous output), and write goldens.
    `checked`: how many checked rows (None: checked_rows()'s rule)."""
    from gptoss_convert.candidates import load_reference
    from gptoss_convert.columns import Implementation

    session, checkpoint, prompt_list = open_session(model, dtype, device, prompts, token_ids_file)
    adapter, described = load_reference(reference)
    implementation = Implementation("reference", adapter, described, session.dtype)
    inputs, outputs = run_adapter(implementation, session, progress=progress)
    missing = [n for n in output_names(session.config.num_hidden_layers) if n not in outputs]
    if missing:
        raise CandidateError(f"reference {reference}: does not provide {missing[0]}; goldens need every component")
    lengths = [len(p["token_ids"]) for p in prompt_list]
    rows = torch.tensor(logit_rows(lengths, session.config.vocab_size), dtype=torch.int64)
    kept = torch.tensor(checked_rows(checkpoint["config"], lengths, checked), dtype=torch.int64)
    inputs = {"token_ids": session.token_ids, "positions": session.positions, "prompt": session.prompt,
              "logits.rows": rows, "components.rows": kept, **inputs}
    expected = {name: t for name, t in outputs.items() if name not in aliases(session.config.num_hidden_layers)}
    expected["logits"] = outputs["logits"][rows].contiguous()
    for name in (layer_name(i, c) for i in range(session.config.num_hidden_layers) for c in CHECKED):
        expected[name] = expected[name][kept].contiguous()
    _check_aliases(inputs, outputs, session.config.num_hidden_layers)
    manifest = _manifest(checkpoint, prompt_list, dtype, session.device, described, inputs, expected,
                         session.config.num_hidden_layers)
    return write_goldens(Path(out), inputs, expected, manifest, force=force)


def open_session(model, dtype, device, prompts=None, token_ids_file=None, prompt_list=None):
    """Open the checkpoint `model` and lay the prompts out as rows -> (Session, checkpoint description, prompts)."""
    from gptoss_convert.checkpoint import open_checkpoint
    from gptoss_convert.options import resolve_device_option as resolve_device
    from gptoss_convert.prompts import load_tokenizer, parse_prompts
    from gptoss_convert.remap import audit
    from gptoss_convert.sources import resolve_source
    from gptoss_convert.verify import describe_checkpoint

    path = resolve_source(model)
    ckpt = open_checkpoint(path)
    source_map = audit(ckpt)
    config = ckpt.config.replace(implementation="eager")
    if prompt_list is None:
        tokenizer = load_tokenizer(path, ckpt.side_files)
        if prompts or token_ids_file:
            prompt_list = parse_prompts(prompts, token_ids_file, config, tokenizer)
        else:
            prompt_list = default_prompts(config, tokenizer)
    lengths = [len(p["token_ids"]) for p in prompt_list]
    session = Session(
        path, ckpt, source_map, config,
        token_ids=torch.tensor([t for p in prompt_list for t in p["token_ids"]], dtype=torch.int64),
        positions=torch.cat([torch.arange(n) for n in lengths]),
        prompt=torch.cat([torch.full((n,), p, dtype=torch.int64) for p, n in enumerate(lengths)]),
        dtype=DTYPES[dtype], device=resolve_device(device),
    )
    checkpoint = describe_checkpoint(path, ckpt)
    checkpoint["model"] = str(model)
    if str(model) == "tiny":  # the embedded checkpoint: no machine-specific path in shipped goldens
        checkpoint["path"] = "tiny"
    return session, checkpoint, prompt_list


def _check_aliases(inputs: dict, outputs: dict, num_layers: int) -> None:
    """What is stored once must be the same bits under both names (it is, by construction: say so if not)."""
    for name, source in aliases(num_layers).items():
        if not torch.equal(outputs[name], inputs[source]):
            raise AssertionError(f"goldens: {name} differs from {source}; cannot store it as an alias")


def _portable(source: str) -> str:
    """A package file's path from its package down (no machine-specific prefix in shared goldens)."""
    marker = "site-packages/"
    return source.split(marker, 1)[1] if marker in source else Path(source).name


def _manifest(checkpoint, prompt_list, dtype, device, described, inputs, expected, num_layers) -> dict:
    tensors = {}
    for file, group in (("inputs.safetensors", inputs), ("expected.safetensors", expected)):
        for name, tensor in group.items():
            dtype = str(tensor.dtype).removeprefix("torch.")
            tensors[name] = {"file": file, "shape": list(tensor.shape), "dtype": dtype, "meaning": meaning(name)}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": checkpoint,
        "reference": dict(described.to_dict(), source=_portable(described.source)),
        "versions": {"gptoss_convert": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "dtype": dtype,
        "device": device,
        "prompts": prompt_list,
        "outputs": output_names(num_layers),
        "aliases": aliases(num_layers),
        "tensors": tensors,
    }
