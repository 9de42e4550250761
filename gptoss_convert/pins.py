"""Pinned official checksums: the sha256 of the files of known official hub revisions, shipped with the package.

A server (the hub, or a mirror in HF_ENDPOINT) vouches only for itself: its listing gives the sha256 of what it
serves. For a pinned revision every file is also checked against this table, so a mirror that serves another file
under an official repo name and commit fails (IntegrityError, exit 3) even when its listing agrees with its file.
`download` checks the listing before fetching and every fetched file after; `verify` and `convert` of a download
whose manifest names a pinned revision hash the pinned files they read (docs/download.md, "Pinned checksums").
"""

import hashlib
from pathlib import Path

from gptoss_convert.errors import IntegrityError

GPT_OSS_20B_COMMIT = "6cee5e81ee83917806bbde320786a8fb61efebee"
GPT_OSS_120B_COMMIT = "b5c939de8f754692c1647ca79fbf85e8c1e70f8a"

# repo id -> commit -> {path: sha256}. special_tokens_map.json is left out: no published hash for it was found.
PINS = {
    "openai/gpt-oss-20b": {
        GPT_OSS_20B_COMMIT: {
            "config.json": "3a2a26ded679375b7928ddeca59764df7cea83220c1961035f6d6e232659e9ce",
            "generation_config.json": "f9970ada892d2d1f72e3ed0a6535ccebadd11897318794ca671d8c7014c957da",
            "tokenizer_config.json": "9279e942392b742d633c7adbb89ebe002c98399db8926a7af5125c726f404070",
            "chat_template.jinja": "a4c9919cbbd4acdd51ccffe22da049264b1b73e59055fa58811a99efbd7c8146",
            "model.safetensors.index.json": "0e085b977c4c9942f85938828e8c989ed7d5cdabf852e4da6a67c116cd502cd1",
            "tokenizer.json": "0614fe83cadab421296e664e1f48f4261fa8fef6e03e63bb75c20f38e37d07d3",
            "model-00000-of-00002.safetensors": "16d0f997dcfc4462089d536bffe51b4bcea2f872f5c430be09ef8ed392312427",
            "model-00001-of-00002.safetensors": "4fbe328ab445455d6f58dc73852b85873bd626986310abd91cd4d2ce3245eaea",
            "model-00002-of-00002.safetensors": "a18106b209e9ab35c3406db4f6f12a927364a058b21e9d1373d682e20674b303",
        },
    },
    "openai/gpt-oss-120b": {
        GPT_OSS_120B_COMMIT: {
            "config.json": "933aeb666a3fd851133ddd7686414f369bc564c4185fb5704416550879f10566",
        },
    },
}
_HASH_CHUNK = 16 << 20


def pinned_files(repo_id: str, commit: str) -> dict[str, str]:
    """{path: sha256} pinned for this repo at this commit; empty when the revision is not pinned."""
    return dict(PINS.get(repo_id, {}).get(commit, {}))


def mismatches(repo_id: str, commit: str, sha256s: dict[str, str | None]) -> list[tuple[str, str]]:
    """[(path, problem)] for the files of `sha256s` ({path: sha256}) that differ from their pin."""
    pins = pinned_files(repo_id, commit)
    return [(path, f"sha256 {digest} differs from the pinned official sha256 {pins[path]}")
            for path, digest in sha256s.items() if path in pins and digest is not None and digest != pins[path]]


def check_listing(repo_id: str, commit: str, listed: dict[str, str | None], endpoint: str) -> None:
    """Before any byte moves: the server's listed sha256 (LFS files) of pinned files must equal the pins."""
    bad = mismatches(repo_id, commit, listed)
    if bad:
        path, problem = bad[0]
        raise IntegrityError(
            f"{endpoint} lists {path} of {repo_id}@{commit} with {problem}: "
            "it does not serve the official file (check HF_ENDPOINT); nothing was fetched"
        )


def check_download(repo_id: str, commit: str, entries: dict[str, dict], directory: Path, endpoint: str) -> int:
    """After a download's own checks: each file's sha256 ({path: manifest entry}) against its pin. Files that
    differ are removed (nothing that looks official stays behind). Returns how many files matched a pin."""
    bad = mismatches(repo_id, commit, {path: entry["sha256"] for path, entry in entries.items()})
    if bad:
        for path, _ in bad:
            (Path(directory) / path).unlink(missing_ok=True)
        path, problem = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise IntegrityError(
            f"{Path(directory) / path}: {problem} of {repo_id}@{commit}{more}, although it matches what {endpoint} "
            "lists: the server does not serve the official file (check HF_ENDPOINT); the file was removed"
        )
    return len(set(entries) & set(pinned_files(repo_id, commit)))


def check_checkpoint(directory: Path, manifest: dict | None, known: dict[str, str] | None = None,
                     progress: bool | None = None) -> int:
    """verify/convert: if `manifest` names a pinned revision, hash the pinned files under `directory` (the
    checkpoint being read, the download root or its original/) and compare. `known` ({path relative to
    `directory`: sha256}) skips hashing files already hashed. Returns how many files were checked."""
    if not manifest:
        return 0
    pins = pinned_files(manifest.get("repo_id", ""), manifest.get("commit", ""))
    directory = Path(directory)
    root = directory.parent if directory.name == "original" and not (directory / "gptoss-manifest.json").is_file() \
        else directory
    present = {path: root / path for path in pins if (root / path).is_file() and _inside(root / path, directory)}
    known = known or {}
    checked = 0
    for path, local in present.items():
        relative = local.relative_to(directory).as_posix()
        digest = known.get(relative) or file_sha256(local, progress)
        if digest != pins[path]:
            raise IntegrityError(
                f"{local}: sha256 {digest} differs from the pinned official sha256 {pins[path]} of "
                f"{manifest['repo_id']}@{manifest['commit']}: the file is not the official one (re-run "
                "`gptoss-convert download`, or pass --no-verify to skip this check)"
            )
        checked += 1
    return checked


def _inside(path: Path, directory: Path) -> bool:
    return path.parent == directory or directory in path.parents


def file_sha256(path: Path, progress: bool | None = None) -> str:
    from gptoss_convert.progress import progress_bar

    digest = hashlib.sha256()
    with open(path, "rb") as f, progress_bar(total=path.stat().st_size, desc=f"sha256 {path.name}",
                                             enabled=progress, leave=False) as bar:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()
