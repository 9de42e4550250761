"""Resume, across processes, a file that a killed download left half-fetched.

huggingface_hub 2.4 (`file_download._download_to_tmp_and_move`) fetches each file into a process-unique
`<local_dir>/.cache/huggingface/download/<dir>/<hash>.<etag>.<8 hex>.incomplete` and removes it when the transfer
fails; within a run it resumes a cut transfer with an HTTP Range request. A process that is killed (SIGKILL, OOM,
a CI timeout) cannot remove its temporary file, and the next run, with a new name, starts from byte 0. Here the
largest such leftover of a file still to fetch is continued with `Range: bytes=<its size>-` (through
huggingface_hub's own `http_get`, which also handles a server that ignores the Range), checked against the hub's
listing (sha256 for LFS files, the git blob id otherwise) and moved into place. A leftover that does not check out
(for instance the sparse file of an interrupted Xet transfer) is deleted and the file fetched whole as before.
"""

import glob
import hashlib
import os
from pathlib import Path

INCOMPLETE = ".incomplete"


def leftovers(directory: Path, path: str, etag: str) -> list[Path]:
    """The `.incomplete` files huggingface_hub left for repo file `path` (of this etag), largest first."""
    from huggingface_hub._local_folder import get_local_download_paths

    expected = get_local_download_paths(Path(directory), path).incomplete_path(etag)
    stem = expected.name[: -len(INCOMPLETE)]
    found = [expected] + sorted(expected.parent.glob(glob.escape(stem) + ".*" + INCOMPLETE))
    return sorted((p for p in found if p.is_file()), key=lambda p: p.stat().st_size, reverse=True)


def resume_leftovers(plan, files, progress=None) -> list[str]:
    """Continue every file of `files` (RemoteFile) that has a partial leftover; returns the paths completed.

    `plan` is hub.Plan (repo_id, commit, endpoint, directory). Leftovers of these files are removed either way."""
    done = []
    for remote in files:
        etag = remote.sha256 or remote.git_oid
        partials = leftovers(plan.directory, remote.path, etag)
        if partials and 0 < partials[0].stat().st_size < remote.size and _continue(plan, remote, partials[0]):
            done.append(remote.path)
        for partial in partials:
            partial.unlink(missing_ok=True)
    return done


def _continue(plan, remote, partial: Path) -> bool:
    """Fetch the rest of `partial`, check it against the listing, move it into place. False if it does not check."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(plan.repo_id, remote.path, revision=plan.commit, endpoint=plan.endpoint)
    size = partial.stat().st_size
    with open(partial, "r+b") as f:
        f.seek(size)
        http_get(url, f, resume_size=size, headers=build_hf_headers(), expected_size=remote.size,
                 displayed_filename=remote.path)
        f.truncate()
    if not _matches(partial, remote):
        return False
    target = Path(plan.directory) / remote.path
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial, target)
    return True


def _matches(path: Path, remote) -> bool:
    sha256, git = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            sha256.update(chunk)
            git.update(chunk)
    return path.stat().st_size == remote.size and (
        sha256.hexdigest() == remote.sha256 if remote.sha256 else git.hexdigest() == remote.git_oid)
