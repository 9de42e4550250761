"""The goldens format: three files in one directory, readable from any language (docs/goldens.md).

  inputs.safetensors    what an implementation is fed: token ids, positions, prompt index per row, every layer's
                        recorded input hidden states, the final norm's input, which rows the logits are kept for and
                        which rows the per-layer components are kept for (the checked rows)
  expected.safetensors  the reference's outputs of every component of every layer (at the checked rows), the final
                        norm and the logits
  manifest.json         prompts, checkpoint file sha256s, config, reference name and versions, dtype, device, the
                        sha256 of both safetensors files and what every tensor name means

Rows: all prompts' tokens are stacked, T rows in all; `prompt` says which prompt a row belongs to and `positions`
restarts at 0 for each prompt. Nothing is stored twice: a layer's output *is* the next layer's recorded input, so
`layers.{i}.layer_output`, `embedding` are aliases (manifest "aliases") of tensors in inputs.safetensors.
Layer inputs and outputs are kept at every row (an implementation's attention needs every earlier position); the
components inside a layer only at the checked rows `components.rows` (all rows unless the goldens would be large).
This module only reads and writes files (safetensors' torch API: goldens may hold bfloat16); no Transformers.
"""

import hashlib
import json
from pathlib import Path

from gptoss_convert.errors import InputError, IntegrityError

FORMAT, FORMAT_VERSION = "gptoss-goldens", 2  # 2: components at checked rows
INPUTS, EXPECTED, MANIFEST = "inputs.safetensors", "expected.safetensors", "manifest.json"

# Per-layer outputs, in forward order (the report's component names, plus the routing weights).
LAYER_OUTPUTS = ("attention", "router_logits", "expert_indices", "expert_weights", "moe", "layer_output")
CHECKED = ("attention", "router_logits", "expert_indices", "expert_weights", "moe")  # stored at components.rows

MEANINGS = {
    "token_ids": "[T] int64: token id of each row (all prompts stacked)",
    "positions": "[T] int64: position of each row inside its prompt (restarts at 0 for each prompt)",
    "prompt": "[T] int64: index of the prompt each row belongs to; rows of one prompt are contiguous",
    "logits.rows": "[R] int64: the rows (into T) whose logits are kept; all rows unless the vocabulary is large",
    "components.rows": "[C] int64: the checked rows (into T) at which each layer's attention, router_logits, "
                       "expert_indices, expert_weights and moe are kept; all rows unless the goldens would be large",
    "final_norm.input": "[T, H]: the input of the final RMSNorm (the reference's last layer output)",
    "embedding": "[T, H]: token embeddings (= layers.0.input)",
    "final_norm": "[T, H]: output of the final RMSNorm, fed final_norm.input",
    "logits": "[R, V]: lm_head(final_norm) at the rows listed in logits.rows",
}
LAYER_MEANINGS = {
    "input": "[T, H]: the layer's recorded input hidden states (the reference's previous layer output)",
    "attention": "[C, H] at components.rows: self-attention output after o_proj, before the residual add",
    "router_logits": "[C, E] at components.rows: router logits, before top-k",
    "expert_indices": "[C, K] int64 at components.rows: the K selected experts (compared as a set; the reference "
                      "lists them by descending logit)",
    "expert_weights": "[C, K] at components.rows: softmax over the top-k router logits, in the order of "
                      "expert_indices",
    "moe": "[C, H] at components.rows: mixture-of-experts output, before the residual add",
    "layer_output": "[T, H]: the decoder layer's output (= the next layer's input)",
}


def layer_name(index: int, component: str) -> str:
    return f"layers.{index}.{component}"


def is_checked(name: str) -> bool:
    """Whether an output name is stored at the checked rows only (a per-layer component but the layer output)."""
    return name.startswith("layers.") and name.rsplit(".", 1)[1] in CHECKED


def meaning(name: str) -> str:
    if name.startswith("layers."):
        _, index, component = name.split(".", 2)
        return f"layer {index}: {LAYER_MEANINGS[component]}"
    return MEANINGS[name]


def output_names(num_layers: int) -> list[str]:
    """Every name an implementation may write to outputs.safetensors, in forward order."""
    names = ["embedding"]
    for i in range(num_layers):
        names += [layer_name(i, c) for c in LAYER_OUTPUTS]
    return names + ["final_norm", "logits"]


def aliases(num_layers: int) -> dict[str, str]:
    """Expected names whose values are stored in inputs.safetensors under another name (bit for bit the same)."""
    found = {"embedding": layer_name(0, "input")}
    for i in range(num_layers):
        found[layer_name(i, "layer_output")] = layer_name(i + 1, "input") if i + 1 < num_layers else "final_norm.input"
    return found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_goldens(out: Path, inputs: dict, expected: dict, manifest: dict, force: bool = False) -> Path:
    """Write the three files into a temporary directory beside `out`, then rename it into place (atomic: a crash
    leaves no half-written goldens, and a replaced `out` stays whole until the new one is in). `inputs` and
    `expected` map names to CPU tensors."""
    from safetensors.torch import save_file

    from gptoss_model.io import atomic_directory

    out = Path(out)
    if out.exists() and not force:
        raise InputError(f"--out {out}: already exists (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out) as temp:
        save_file(inputs, str(temp / INPUTS))
        save_file(expected, str(temp / EXPECTED))
        for name in (INPUTS, EXPECTED):
            (temp / name).chmod(0o644)  # safetensors creates them private; goldens are meant to be shared
        files = {name: {"sha256": sha256_file(temp / name), "size": (temp / name).stat().st_size}
                 for name in (INPUTS, EXPECTED)}
        manifest = dict(manifest, files=files)
        (temp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return out


class Goldens:
    """Goldens read back and checked against their manifest. `inputs` and `expected` hold CPU tensors; `expected`
    includes the aliased names."""

    def __init__(self, directory: Path, manifest: dict, inputs: dict, expected: dict):
        self.directory, self.manifest, self.inputs, self.expected = directory, manifest, inputs, expected

    @property
    def num_layers(self) -> int:
        return int(self.manifest["checkpoint"]["config"]["num_hidden_layers"])

    @property
    def rows(self) -> list[tuple[int, int]]:
        """(prompt, position) of every row, for locating the worst element."""
        return list(zip(self.inputs["prompt"].tolist(), self.inputs["positions"].tolist()))

    @property
    def checked(self) -> list[int]:
        """The checked rows (indices into the T rows) at which the per-layer components are stored."""
        return self.inputs["components.rows"].tolist()


def resolve_goldens(directory) -> Path:
    """`tiny` -> the goldens shipped for the embedded tiny checkpoint (gptoss_convert/data/goldens-tiny/)."""
    if str(directory) == "tiny":
        from importlib import resources

        return Path(str(resources.files("gptoss_convert") / "data" / "goldens-tiny"))
    return Path(directory)


def read_manifest(directory: Path) -> dict:
    directory = resolve_goldens(directory)
    path = directory / MANIFEST
    if not Path(directory).is_dir():
        raise InputError(f"--goldens {directory}: not a directory; expected one written by `gptoss-convert goldens`")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing; expected goldens written by `gptoss-convert goldens`") from None
    except (OSError, ValueError) as error:
        raise IntegrityError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IntegrityError(f"{path}: not a goldens manifest (expected \"format\": \"{FORMAT}\")")
    if manifest.get("format_version") != FORMAT_VERSION:  # intact files this version cannot read: an input error
        raise InputError(f"{path}: format_version {manifest.get('format_version')!r}, this gptoss-convert reads "
                         f"{FORMAT_VERSION}; record the goldens again with `gptoss-convert goldens`")
    return manifest


def load_goldens(directory) -> Goldens:
    """Read and check goldens: each safetensors file must match the sha256 its manifest records (else exit 3)."""
    from safetensors.torch import load_file

    directory = resolve_goldens(directory)
    manifest = read_manifest(directory)
    for name in (INPUTS, EXPECTED):
        path = directory / name
        recorded = manifest.get("files", {}).get(name, {}).get("sha256")
        if not path.is_file():
            raise IntegrityError(f"{path}: missing (listed in {directory / MANIFEST})")
        actual = sha256_file(path)
        if actual != recorded:
            raise IntegrityError(f"{path}: sha256 {actual[:12]}... does not match manifest.json "
                                 f"({str(recorded)[:12]}...); the goldens were modified or truncated")
    try:
        inputs, expected = load_file(str(directory / INPUTS)), load_file(str(directory / EXPECTED))
    except Exception as error:  # noqa: BLE001 - a file whose sha256 matches but does not parse: corrupt at writing
        raise IntegrityError(f"{directory}: cannot read the goldens' safetensors ({error})") from None
    for name, source in manifest.get("aliases", {}).items():
        expected[name] = inputs[source]
    return Goldens(directory, manifest, inputs, expected)


def check_checkpoint(goldens: Goldens, checkpoint_files: dict, config: dict) -> None:
    """Refuse goldens made from another checkpoint: same weight files (by sha256) and same config (exit 3)."""
    recorded = {f["path"]: f["sha256"] for f in goldens.manifest["checkpoint"]["files"]}
    manifest_path = goldens.directory / MANIFEST
    for path, digest in sorted(checkpoint_files.items()):
        if recorded.get(path) != digest:
            raise IntegrityError(f"{manifest_path}: the goldens do not belong to this checkpoint: its {path} has sha256 "
                                 f"{digest[:12]}..., the goldens were made from "
                                 f"{(recorded.get(path) or 'no such file')[:12]}...")
    missing = sorted(set(recorded) - set(checkpoint_files))
    if missing:
        raise IntegrityError(f"{manifest_path}: the goldens do not belong to this checkpoint: it has no {missing[0]}")
    ours = goldens.manifest["checkpoint"]["config"]
    for key in ("num_hidden_layers", "hidden_size", "vocab_size", "num_local_experts", "sliding_window"):
        if ours.get(key) != config.get(key):
            raise IntegrityError(f"{manifest_path}: the goldens do not belong to this checkpoint: {key} is "
                                 f"{ours.get(key)} in the goldens, {config.get(key)} in the checkpoint")
