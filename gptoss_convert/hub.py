"""Download gpt-oss checkpoints through huggingface_hub and record where they came from (sources.py finds them).

`download()` in order: resolve the revision once to a commit (`repo_info`), list the files at that commit
(`list_repo_tree`: sizes, LFS sha256, git blob ids), pick the layout's files, plan (what is already here, what the
disk must hold), fetch the rest with `snapshot_download(local_dir=...)`, hash every file against the hub's listing,
and only then write `gptoss-manifest.json` (temporary file + rename). Later commands find the download through
`sources.resolve_model_dir` and `sources.read_manifest`, which never touch the network.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once, at import. We read them again at call time and pass
`endpoint=` explicitly, so the environment of the call wins.

Resume: huggingface_hub (2.x) resumes a cut transfer inside one run with HTTP `Range` requests; across runs it keeps
every file that completed (its local_dir metadata makes them no-ops). A file half-fetched by a killed process is
continued from its leftover temporary file by resume.py. Official revisions are also checked against pins.py.
"""

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from gptoss_model.io import format_bytes
from gptoss_convert import pins, resume
from gptoss_convert import progress as progress_lines
from gptoss_convert.errors import InputError, IntegrityError
from gptoss_convert.hub_errors import hub_errors
from gptoss_convert.manifest import (
    MANIFEST_NAME,
    merged_manifest,
    read_manifest,
    read_manifest_quietly,
    without_time,
    write_manifest,
)
from gptoss_convert.sources import default_model_dir, parse_model

LAYOUTS = ("hf", "original", "all")
DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"

# Root files of the Transformers layout. Matched against root-level paths only: the hub's own allow/ignore patterns
# use fnmatch, where `*` also crosses `/`, so "*.json" would take original/config.json too.
_HF_ROOT_PATTERNS = ("*.json", "*.jinja", "tokenizer*", "model*.safetensors")
_HASH_CHUNK = 16 << 20


def select_files(paths, layout: str) -> list[str]:
    """The repo paths that make up `layout`.

    hf: root *.json, *.jinja, tokenizer*, model*.safetensors (never original/ or metal/).
    original: everything under original/.
    all: everything except metal/ (the Apple Metal inference binary: as large as the weights, of no use to
    convert or verify)."""
    if layout == "hf":
        return [p for p in paths if "/" not in p and any(fnmatchcase(p, pat) for pat in _HF_ROOT_PATTERNS)]
    if layout == "original":
        return [p for p in paths if p.startswith("original/")]
    if layout == "all":
        return [p for p in paths if not p.startswith("metal/")]
    raise InputError(f"--layout {layout!r}: expected one of {', '.join(LAYOUTS)}")


# ---------------------------------------------------------------------------------------------------------------
# What a download would do


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files: the hub's sha256 of the content; None for plain git files
    git_oid: str  # git blob sha1 (of the content for plain files, of the pointer for LFS files)


@dataclass(frozen=True)
class PlannedFile:
    remote: RemoteFile
    # "verified": on disk, unchanged since a manifest of this commit recorded it verified
    # "here": on disk with the right size, to be checked; "cached": in the huggingface_hub cache, will be copied
    # "fetch": will be downloaded
    state: str


@dataclass(frozen=True)
class DownloadPlan:
    repo_id: str
    revision: str
    commit: str
    layout: str
    endpoint: str
    directory: Path
    files: tuple[PlannedFile, ...]
    free_bytes: int | None

    @property
    def total_bytes(self) -> int:
        return sum(f.remote.size for f in self.files)

    @property
    def incoming_bytes(self) -> int:
        """Bytes that will be written: fetched or copied from the hub cache."""
        return sum(f.remote.size for f in self.files if f.state in ("fetch", "cached"))


@dataclass(frozen=True)
class DownloadResult:
    repo_id: str
    revision: str
    commit: str
    layout: str
    directory: Path
    manifest_path: Path
    files: tuple[dict, ...]  # manifest entries {path, size, sha256}
    incoming_files: int  # fetched (or copied from the huggingface_hub cache) by this run
    incoming_bytes: int
    verified: bool
    offline: bool = False
    replaced: tuple[str, ...] = ()  # files found damaged on disk and fetched again
    pinned: int = 0  # files also checked against the pinned official sha256 (pins.py)
    resumed: tuple[str, ...] = ()  # files a killed earlier run left half-fetched, continued (resume.py)

    @property
    def total_bytes(self) -> int:
        return sum(f["size"] for f in self.files)


def endpoint_from_env() -> str:
    return (os.environ.get("HF_ENDPOINT") or "").strip().rstrip("/") or DEFAULT_ENDPOINT


def is_offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE") or constants.is_offline_mode()


def plan_download(model, *, revision=None, layout="hf", local_dir=None, cache_dir=None) -> DownloadPlan:
    """Resolve the revision to a commit, list its files, and say for each what a download would do. Writes nothing."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    repo_id = parse_model(model)
    revision = revision or DEFAULT_REVISION
    directory = Path(local_dir).expanduser() if local_dir else default_model_dir(repo_id)
    endpoint = endpoint_from_env()
    if is_offline():
        raise InputError("HF_HUB_OFFLINE=1 is set: a download plan needs the hub (unset it, or drop --dry-run)")
    api = HfApi(endpoint=endpoint)
    with hub_errors(repo_id, revision, endpoint):
        commit = api.repo_info(repo_id, revision=revision).sha  # the one resolution of the revision
        entries = [e for e in api.list_repo_tree(repo_id, revision=commit, recursive=True) if isinstance(e, RepoFile)]
    if not commit:
        raise InputError(f"{endpoint} gave no commit for {repo_id}@{revision}: is HF_ENDPOINT a Hub-compatible server?")
    by_path = {
        e.path: RemoteFile(e.path, e.lfs.size if e.lfs else e.size, e.lfs.sha256 if e.lfs else None, e.blob_id)
        for e in entries
    }
    chosen = select_files(sorted(by_path), layout)
    if layout != "all" and not any(p.endswith(".safetensors") for p in chosen):
        raise InputError(
            f"{repo_id}@{commit[:12]} has no safetensors weights in layout {layout!r} "
            f"(the repo has {len(by_path)} files): try --layout original or --layout all"
        )

    state = _local_state(repo_id, commit, directory, cache_dir)
    files = tuple(PlannedFile(by_path[p], state(by_path[p])) for p in chosen)
    return DownloadPlan(repo_id, revision, commit, layout, endpoint, directory, files, _free_bytes(directory))


def _local_state(repo_id: str, commit: str, directory: Path, cache_dir):
    """A function RemoteFile -> "verified" / "here" / "cached" / "fetch" (see PlannedFile) for this directory."""
    from huggingface_hub import try_to_load_from_cache

    previous = read_manifest_quietly(directory)
    known, manifest_mtime = {}, 0.0
    if previous and previous["repo_id"] == repo_id and previous["commit"] == commit and previous.get("verified"):
        manifest_mtime = (directory / MANIFEST_NAME).stat().st_mtime
        known = {e["path"]: e for e in previous["files"]}

    def state(remote: RemoteFile) -> str:
        local = directory / remote.path
        if local.is_file() and local.stat().st_size == remote.size:
            entry = known.get(remote.path)
            if (
                entry
                and entry["size"] == remote.size
                and remote.sha256 in (None, entry["sha256"])
                and local.stat().st_mtime <= manifest_mtime
            ):
                return "verified"
            return "here"
        cached = try_to_load_from_cache(repo_id, remote.path, cache_dir=cache_dir, revision=commit)
        return "cached" if isinstance(cached, str) else "fetch"

    return state


def check_disk_space(plan: DownloadPlan) -> None:
    """InputError when the download directory's disk cannot hold what the plan would write."""
    if plan.free_bytes is not None and plan.free_bytes < plan.incoming_bytes:
        raise InputError(
            f"not enough disk space in {plan.directory}: the download needs {format_bytes(plan.incoming_bytes)}, "
            f"{format_bytes(plan.free_bytes)} is free (free some space or pass --local-dir on a larger disk)"
        )


def _free_bytes(directory: Path) -> int | None:
    for path in (directory, *directory.absolute().parents):  # the directory may not exist yet
        if path.exists():
            try:
                return shutil.disk_usage(path).free
            except OSError:
                return None
    return None


# ---------------------------------------------------------------------------------------------------------------
# Download, verify, record


def download(model, *, revision=None, layout="hf", local_dir=None, cache_dir=None, verify=True, max_workers=8,
             progress=None):
    """Download `layout` of `model` at `revision`, check it, record it. Returns a DownloadResult.

    Raises InputError (hub unreachable, access refused, unknown repo/revision, no disk space) or IntegrityError
    (a fetched file whose sha256 or size differs from the hub's listing; it is removed, no manifest is written)."""
    if is_offline():
        return _offline_result(model, revision, layout, local_dir)
    plan = plan_download(model, revision=revision, layout=layout, local_dir=local_dir, cache_dir=cache_dir)
    blocker = next((p for p in (plan.directory, *plan.directory.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise InputError(f"--local-dir {plan.directory}: {blocker} is a file, not a directory; "
                         "expected a directory to download into")
    check_disk_space(plan)
    pins.check_listing(plan.repo_id, plan.commit, {f.remote.path: f.remote.sha256 for f in plan.files}, plan.endpoint)
    previous = read_manifest_quietly(plan.directory)
    recorded = {e["path"]: e for e in (previous or {}).get("files", [])}
    entries = {f.remote.path: recorded[f.remote.path] for f in plan.files if f.state == "verified"}

    if len(entries) < len(plan.files):
        # The set on disk is about to be checked or changed: no manifest may vouch for it until that succeeded.
        (plan.directory / MANIFEST_NAME).unlink(missing_ok=True)

    # Files already here but never verified (an interrupted run, a manifest-less copy): check them first, so a
    # damaged one is simply fetched again in this run. Files of the wrong size are removed up front.
    here = [f.remote for f in plan.files if f.state == "here"]
    good, damaged = _check_files(plan.directory, here, verify, progress)
    entries.update(good)
    for f in plan.files:
        if f.remote.path not in entries:
            (plan.directory / f.remote.path).unlink(missing_ok=True)

    todo = [f.remote for f in plan.files if f.remote.path not in entries]
    resumed = []
    if todo:
        fetched, resumed = _fetch(plan, todo, cache_dir, verify, max_workers, progress)
        entries.update(fetched)
    pinned = pins.check_download(plan.repo_id, plan.commit, entries, plan.directory, plan.endpoint)

    manifest = merged_manifest(plan, [entries[f.remote.path] for f in plan.files], previous, verify)
    manifest_path = plan.directory / MANIFEST_NAME
    if not manifest_path.is_file() or without_time(manifest) != without_time(previous):  # a re-run: untouched
        write_manifest(plan.directory, manifest)
    files = tuple(entries[f.remote.path] for f in plan.files)
    return DownloadResult(
        plan.repo_id, plan.revision, plan.commit, manifest["layout"], plan.directory, manifest_path, files,
        incoming_files=len(todo), incoming_bytes=sum(f.size for f in todo), verified=verify,
        replaced=tuple(path for path, _ in damaged), pinned=pinned, resumed=tuple(resumed),
    )


def _fetch(plan: DownloadPlan, todo: list, cache_dir, verify: bool, max_workers: int, progress=None):
    """Fetch `todo` at the plan's commit (continuing what a killed run left half-fetched) and check each file;
    ({path: manifest entry}, [paths resumed]), or IntegrityError."""
    from huggingface_hub import snapshot_download

    with hub_errors(plan.repo_id, plan.revision, plan.endpoint):
        resumed = resume.resume_leftovers(plan, todo)
        rest = [f for f in todo if f.path not in resumed]
        with progress_lines.hub_bars(progress), progress_lines.watch(
                total=sum(f.size for f in rest), measure=lambda: _bytes_arrived(plan.directory, rest),
                desc="download", enabled=progress):
            if rest:
                snapshot_download(
                    plan.repo_id,
                    revision=plan.commit,
                    local_dir=plan.directory,
                    cache_dir=cache_dir,
                    allow_patterns=[_fnmatch_escape(f.path) for f in rest],
                    endpoint=plan.endpoint,
                    max_workers=max_workers,
                )
    fetched, bad = _check_files(plan.directory, todo, verify, progress)
    if bad:
        path, problem = bad[0]
        more = f" (and {len(bad) - 1} more: {', '.join(p for p, _ in bad[1:4])})" if len(bad) > 1 else ""
        raise IntegrityError(
            f"{plan.directory / path}: {problem} per {plan.endpoint} at commit {plan.commit}{more}; "
            "the damaged file was removed; re-run the same command to fetch it again"
        )
    return fetched, resumed


def _bytes_arrived(directory: Path, files) -> int:
    """Bytes of `files` on disk so far: finished files plus huggingface_hub's temporary `.incomplete` files."""
    done = sum(f.size for f in files if (directory / f.path).is_file())
    partial = directory / ".cache" / "huggingface" / "download"
    return done + sum(p.stat().st_size for p in partial.rglob("*" + resume.INCOMPLETE) if p.is_file())


def _check_files(directory: Path, files: list[RemoteFile], verify: bool, progress=None):
    """Check local copies against the hub's listing: the size always; with `verify`, the sha256 of LFS files and
    the git blob id of plain files. Returns ({path: manifest entry} of good files, [(path, problem)] of bad ones);
    bad files are deleted so nothing that looks complete stays behind.

    A missing file is an InputError: huggingface_hub gave up on it (most likely the hub became unreachable)."""
    missing = [f.path for f in files if not (directory / f.path).is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} file(s) did not arrive in {directory} ({', '.join(missing[:3])}): "
            "the hub may have become unreachable; re-run the same command"
        )
    good, bad = {}, []
    to_hash = {f.path for f in files if (directory / f.path).stat().st_size == f.size and (verify or f.sha256 is None)}
    total = sum(f.size for f in files if f.path in to_hash)
    with progress_lines.progress_bar(total=total, desc="Checking sha256", enabled=progress if total else False) as bar:
        for remote in files:
            local = directory / remote.path
            size = local.stat().st_size
            if size != remote.size:
                bad.append((remote.path, f"size {remote.size} bytes expected, found {size}"))
                continue
            if remote.path in to_hash:
                sha256, git_oid = _hash_file(local, bar)
            else:  # --no-verify: record the hub's sha256 unchecked
                sha256, git_oid = remote.sha256, remote.git_oid
            if verify and remote.sha256 is not None and sha256 != remote.sha256:
                bad.append((remote.path, f"sha256 {remote.sha256} expected, found {sha256}"))
            elif verify and remote.sha256 is None and git_oid != remote.git_oid:
                bad.append((remote.path, f"git blob id {remote.git_oid} expected, found {git_oid}"))
            else:
                good[remote.path] = {"path": remote.path, "size": size, "sha256": sha256}
    for path, _ in bad:
        (directory / path).unlink(missing_ok=True)
    return good, bad


def _hash_file(path: Path, bar) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, reading it once."""
    sha256, git = hashlib.sha256(), hashlib.sha1()
    git.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            sha256.update(chunk)
            git.update(chunk)
            bar.update(len(chunk))
    return sha256.hexdigest(), git.hexdigest()


def _offline_result(model, revision, layout, local_dir) -> DownloadResult:
    """HF_HUB_OFFLINE=1: succeed only if a manifest already covers the request, after checking file sizes."""
    repo_id = parse_model(model)
    revision = revision or DEFAULT_REVISION
    directory = Path(local_dir).expanduser() if local_dir else default_model_dir(repo_id)
    manifest = read_manifest(directory)
    have = set(manifest["layout"].split("+")) if manifest else set()
    if (
        manifest is None
        or manifest["repo_id"] != repo_id
        or revision not in (manifest["revision"], manifest["commit"])
        or not ("all" in have or layout in have)
    ):
        raise InputError(
            f"HF_HUB_OFFLINE=1 is set and {repo_id} (revision {revision}, layout {layout}) is not downloaded "
            f"in {directory}: unset HF_HUB_OFFLINE to download it"
        )
    for entry in manifest["files"]:
        local = directory / entry["path"]
        if not local.is_file() or local.stat().st_size != entry["size"]:
            raise IntegrityError(
                f"{local}: listed in {MANIFEST_NAME} with {entry['size']} bytes but missing or of another size; "
                "re-run the download without HF_HUB_OFFLINE"
            )
    return DownloadResult(
        repo_id, manifest["revision"], manifest["commit"], manifest["layout"], directory, directory / MANIFEST_NAME,
        tuple(manifest["files"]), incoming_files=0, incoming_bytes=0, verified=bool(manifest.get("verified")),
        offline=True,
    )


def _fnmatch_escape(path: str) -> str:
    """An allow pattern matching exactly `path` (huggingface_hub filters with fnmatch)."""
    return re.sub(r"([*?\[])", r"[\1]", path)
