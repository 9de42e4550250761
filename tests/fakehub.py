"""A Hugging Face Hub stand-in for tests: a stdlib HTTP server on 127.0.0.1, in a thread of the test process.

It serves the endpoints and headers huggingface_hub's download path needs, over plain HTTP (no Xet headers, no
`xetHash` in listings, so huggingface_hub never takes the Xet path):

    GET  /api/models/{owner}/{name}[/revision/{rev}]      -> {"id", "sha", "siblings"}
    GET  /api/models/{owner}/{name}/tree/{rev}[/{path}]    -> [{"type", "path", "size", "oid", "lfs"?}, ...]
    HEAD /{owner}/{name}/resolve/{rev}/{path}             -> X-Repo-Commit, ETag / X-Linked-Etag, sizes
    GET  /{owner}/{name}/resolve/{rev}/{path}             -> the bytes, honouring `Range: bytes=N-`

Repos are directories on disk (`FakeHub({"openai/gpt-oss-20b": some_dir})`); files ending in LFS_SUFFIXES are
listed as LFS files with their sha256. Knobs for the failure cases:

    hub.faults[path] = ["cut:100", "status:500"]  successive GETs of that file: send 100 bytes then drop the
                                                  connection; answer 500; afterwards normal again
    hub.faults[path] = ["stall:100"]              send 100 bytes, then hold the connection until hub.release()
                                                  (or 60 s): a process can be killed mid-file
    FakeHub(repos, commits={repo_id: sha})        serve a repo under a given commit sha (a pinned revision)
    hub.bytes_served(path)                        body bytes sent for that file so far
    hub.corrupt.add(path)                         serve the file with one byte flipped (listing keeps the true sha256)
    hub.auth_token = "hf_x"                       every request without `Authorization: Bearer hf_x` gets 401
    hub.requests                                  log of (method, url path, Range header) for counting

Usage: `with FakeHub(repos) as hub: os.environ["HF_ENDPOINT"] = hub.url`.
"""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
        f"size {len(data)}\n"
    ).encode()


class _Repo:
    def __init__(self, root: Path, commit: str | None = None):
        self.files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        listing = "".join(f"{path}:{git_blob_id(data)}\n" for path, data in self.files.items())
        self.commit = commit or hashlib.sha1(listing.encode()).hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def etag(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if self.is_lfs(path) else git_blob_id(data)

    def tree(self) -> list[dict]:
        entries, folders = [], set()
        for path, data in self.files.items():
            parts = path.split("/")
            folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
            entry = {"type": "file", "path": path, "size": len(data)}
            if self.is_lfs(path):
                pointer = lfs_pointer(data)
                entry["oid"] = git_blob_id(pointer)
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}
            else:
                entry["oid"] = git_blob_id(data)
            entries.append(entry)
        entries += [{"type": "directory", "path": f, "size": 0, "oid": "0" * 40} for f in sorted(folders)]
        return entries


class FakeHub:
    def __init__(self, repos: dict[str, Path], *, tags: dict[str, str] | None = None,
                 commits: dict[str, str] | None = None):
        self.repos = {repo_id: _Repo(Path(root), (commits or {}).get(repo_id)) for repo_id, root in repos.items()}
        self.served: dict[str, int] = {}
        self._release = threading.Event()
        self.tags = dict(tags or {})  # extra revision names -> "main" (all revisions point at the one commit)
        self.faults: dict[str, list[str]] = {}
        self.corrupt: set[str] = set()
        self.auth_token: str | None = None
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> str:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self.url

    def release(self) -> None:
        """Let stalled transfers finish (their clients may be gone)."""
        self._release.set()

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- inspection ------------------------------------------------------------------------------------------------
    def commit(self, repo_id: str) -> str:
        return self.repos[repo_id].commit

    def file_requests(self, method: str = "GET", path: str | None = None) -> list[tuple[str, str, str | None]]:
        """Requests on /resolve/ URLs (file bodies and their HEADs), optionally for one repo path."""
        with self._lock:
            log = list(self.requests)
        wanted = [r for r in log if r[0] == method and "/resolve/" in r[1]]
        return [r for r in wanted if path is None or r[1].endswith("/" + path)]

    def bytes_served(self, path: str) -> int:
        with self._lock:
            return self.served.get(path, 0)

    def _count(self, path: str, n: int) -> None:
        with self._lock:
            self.served[path] = self.served.get(path, 0) + n

    def _log(self, method, url_path, range_header):
        with self._lock:
            self.requests.append((method, url_path, range_header))

    def _next_fault(self, path: str) -> str | None:
        with self._lock:
            queue = self.faults.get(path)
            return queue.pop(0) if queue else None


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_HEAD(self):
        self._dispatch(head=True)

    def do_GET(self):
        self._dispatch(head=False)

    # -- routing ---------------------------------------------------------------------------------------------------
    def _dispatch(self, head: bool):
        url_path = unquote(urlsplit(self.path).path)
        self.fake._log(self.command, url_path, self.headers.get("Range"))
        if self.fake.auth_token and self.headers.get("Authorization") != f"Bearer {self.fake.auth_token}":
            return self._error(401, "Invalid credentials in Authorization header", None)
        parts = url_path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._api(parts[2] + "/" + parts[3], parts[4:])
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(parts[0] + "/" + parts[1], parts[3], "/".join(parts[4:]), head)
        return self._error(404, "Not found", None)

    def _repo_and_commit(self, repo_id: str, revision: str):
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound")
            return None, None
        if revision not in ("main", repo.commit, *self.fake.tags):
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return None, None
        return repo, repo.commit

    def _api(self, repo_id: str, rest: list[str]):
        revision = rest[1] if len(rest) >= 2 and rest[0] in ("revision", "tree") else "main"
        repo, commit = self._repo_and_commit(repo_id, revision)
        if repo is None:
            return
        if not rest or rest[0] == "revision":
            siblings = [{"rfilename": p} for p in repo.files]
            info = {"id": repo_id, "modelId": repo_id, "sha": commit, "private": False, "siblings": siblings}
            return self._json(info)
        if rest[0] == "tree":
            prefix = "/".join(rest[2:])
            entries = [e for e in repo.tree() if not prefix or e["path"].startswith(prefix + "/")]
            return self._json(entries)
        return self._error(404, "Not found", None)

    def _resolve(self, repo_id: str, revision: str, path: str, head: bool):
        repo, commit = self._repo_and_commit(repo_id, revision)
        if repo is None:
            return
        if path not in repo.files:
            return self._error(404, f"Entry not found: {path}", "EntryNotFound", commit=commit)
        data = repo.files[path]
        if path in self.fake.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{repo.etag(path)}"', "Accept-Ranges": "bytes"}
        if repo.is_lfs(path):
            headers["X-Linked-Etag"] = f'"{repo.etag(path)}"'
            headers["X-Linked-Size"] = str(len(data))
        if head:
            return self._send(200, headers, len(data), b"")

        fault = self.fake._next_fault(path)
        if fault and fault.startswith("status:"):
            return self._error(int(fault.split(":")[1]), "Injected failure", None)
        start = 0
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes="):
            start = int(range_header[6:].split("-")[0])
        body = data[start:]
        status = 206 if start else 200
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if fault and fault.startswith(("cut:", "stall:")):  # promise the whole body, send part of it
            part = body[: int(fault.split(":")[1])]
            self._send(status, headers, len(body), part)
            self.fake._count(path, len(part))
            if fault.startswith("stall:"):  # hold the connection open, as a slow server would
                self.fake._release.wait(60)
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        self._send(status, headers, len(body), body)
        self.fake._count(path, len(body))

    # -- responses -------------------------------------------------------------------------------------------------
    def _send(self, status: int, headers: dict, length: int, body: bytes):
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if body:
            self.wfile.write(body)
            self.wfile.flush()

    def _json(self, payload):
        body = json.dumps(payload).encode()
        self._send(200, {"Content-Type": "application/json"}, len(body), body if self.command != "HEAD" else b"")

    def _error(self, status: int, message: str, code: str | None, commit: str | None = None):
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        body = json.dumps({"error": message}).encode()
        self._send(status, headers, len(body), body if self.command != "HEAD" else b"")
