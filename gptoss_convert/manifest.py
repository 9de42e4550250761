"""`gptoss-manifest.json`: what `download` fetched and checked (repo, commit, layout, every file's size and sha256).
Written by hub.py only after every file checked out, read by sources.py (offline) and verify's report.
"""

import datetime
import json
from pathlib import Path

from gptoss_model.io import atomic_write_text
from gptoss_convert.errors import IntegrityError

MANIFEST_NAME = "gptoss-manifest.json"
MANIFEST_VERSION = 1


def read_manifest(directory) -> dict | None:
    """The download manifest of `directory` (or, for its `original/` subfolder, of the download it belongs to), or
    None if there is none. A malformed manifest is an IntegrityError."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not path.is_file() and directory.name == "original":
        path = directory.parent / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IntegrityError(f"{path}: unreadable download manifest ({error}); re-run `gptoss-convert download`")
    problem = _manifest_problem(manifest)
    if problem:
        raise IntegrityError(f"{path}: download manifest {problem}; re-run `gptoss-convert download`")
    return manifest


def _manifest_problem(manifest) -> str | None:
    """What is wrong with a parsed manifest (types included: its fields reach paths and messages), or None."""
    if not isinstance(manifest, dict):
        return f"must be a JSON object, found {type(manifest).__name__}"
    missing = [k for k in ("repo_id", "revision", "commit", "layout", "files") if k not in manifest]
    if missing:
        return f"lacks {', '.join(missing)}"
    wrong = [k for k in ("repo_id", "revision", "commit", "layout") if not isinstance(manifest[k], str)]
    if wrong:
        return f"has a non-string {', '.join(wrong)}"
    files = manifest["files"]
    if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("size"), int)
            and not isinstance(f.get("size"), bool) and isinstance(f.get("sha256"), (str, type(None))) for f in files):
        return "has a 'files' entry that is not {path: string, size: integer, sha256: string}"
    return None


def read_manifest_quietly(directory: Path) -> dict | None:
    try:
        return read_manifest(directory)
    except IntegrityError:  # a damaged manifest is simply replaced by the next successful download
        return None


def merged_manifest(plan, entries: list[dict], previous: dict | None, verified: bool) -> dict:
    """The manifest of download `plan` (a hub.DownloadPlan): this run's files, plus those of an earlier run of the same commit with another layout still on disk."""
    layouts, files = {plan.layout}, {e["path"]: e for e in entries}
    if previous and previous["repo_id"] == plan.repo_id and previous["commit"] == plan.commit:
        carried = 0
        for entry in previous["files"]:
            local = plan.directory / entry["path"]
            if entry["path"] not in files and local.is_file() and local.stat().st_size == entry["size"]:
                files[entry["path"]] = entry
                carried += 1
        if carried:
            layouts |= set(previous["layout"].split("+"))
            verified = verified and bool(previous.get("verified"))
    layout = "all" if "all" in layouts else "+".join(sorted(layouts))
    return {
        "format_version": MANIFEST_VERSION,
        "repo_id": plan.repo_id,
        "revision": plan.revision,
        "commit": plan.commit,
        "layout": layout,
        "endpoint": plan.endpoint,
        "downloaded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "verified": verified,
        "files": [files[p] for p in sorted(files)],
    }


def without_time(manifest: dict | None) -> dict | None:
    return None if manifest is None else {k: v for k, v in manifest.items() if k != "downloaded_at"}


def write_manifest(directory: Path, manifest: dict) -> Path:
    path = directory / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2) + "\n")
    return path
