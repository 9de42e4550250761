"""Where a checkpoint is: a name (`tiny`, `20b`, `120b`, OWNER/NAME) or a path -> a checkpoint directory. Offline.

`download` (hub.py) writes a model into `default_model_dir(repo_id)` and records it in `gptoss-manifest.json`; every
other command finds it again here, from that manifest, without touching the network.
"""

import os
import re
from pathlib import Path

from gptoss_convert.errors import InputError
from gptoss_convert.manifest import MANIFEST_NAME, read_manifest

KNOWN_MODELS = {"20b": "openai/gpt-oss-20b", "120b": "openai/gpt-oss-120b"}

_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


def parse_model(model: str) -> str:
    """`20b` / `120b` / `owner/name` -> the hub repo id; anything else is an InputError."""
    if model in KNOWN_MODELS:
        return KNOWN_MODELS[model]
    if _REPO_ID.fullmatch(model) and "--" not in model and ".." not in model:
        return model
    raise InputError(
        f"--model {model!r}: expected 20b, 120b or a hub repo id OWNER/NAME (for example openai/gpt-oss-20b)"
    )


def home_dir() -> Path:
    """$GPTOSS_CONVERT_HOME, default ~/.cache/gptoss-convert."""
    return Path(os.environ.get("GPTOSS_CONVERT_HOME") or "~/.cache/gptoss-convert").expanduser()


def default_model_dir(repo_id: str) -> Path:
    """Where `download` puts a repo when no --local-dir is given: <home>/models/<owner>--<name>."""
    return home_dir() / "models" / repo_id.replace("/", "--")


def resolve_model_dir(model: str) -> Path:
    """A known name or owner/name -> its download directory (offline). An existing directory path is returned as is.

    Raises InputError naming the download command when the model has not been downloaded (no manifest)."""
    if model not in KNOWN_MODELS and Path(model).expanduser().is_dir():
        return Path(model).expanduser()
    repo_id = parse_model(model)
    directory = default_model_dir(repo_id)
    if read_manifest(directory) is None:
        raise InputError(
            f"{repo_id} is not downloaded (no {MANIFEST_NAME} in {directory}): "
            f"run `gptoss-convert download --model {model}` first, or pass a checkpoint directory"
        )
    return directory


def resolve_source(model: str | Path) -> Path:
    """`tiny` -> the embedded checkpoint; `20b` / `120b` (or owner/name) -> its download directory; else a path."""
    if str(model) == "tiny":
        from gptoss_convert.tiny import tiny_checkpoint_dir

        return tiny_checkpoint_dir()
    path = Path(model).expanduser()
    if str(model) not in KNOWN_MODELS and path.exists():
        if not path.is_dir():
            raise InputError(f"--model {model}: not a directory; expected tiny, 20b, 120b or a checkpoint directory")
        return path
    try:
        parse_model(str(model))
    except InputError:  # neither a directory nor a model name: say so, rather than talk about hub repo ids
        raise InputError(f"--model {model}: no such directory; expected tiny, 20b, 120b, a downloaded OWNER/NAME "
                         "or a checkpoint directory") from None
    return resolve_model_dir(str(model))


def provenance(manifest: dict) -> str:
    """One line for reports: 'openai/gpt-oss-20b@<commit> (revision main, layout hf, downloaded ...)'."""
    return (
        f"{manifest['repo_id']}@{manifest['commit']} (revision {manifest['revision']}, layout {manifest['layout']}, "
        f"downloaded {manifest.get('downloaded_at', '?')})"
    )
