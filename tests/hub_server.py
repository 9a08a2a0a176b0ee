"""A loopback Hugging Face Hub for tests: standard library only, in-memory, on 127.0.0.1 with an ephemeral port.

It implements the part of the Hub HTTP surface that ``huggingface_hub`` (``create_repo``, ``create_commit`` /
``upload_folder`` through preupload → LFS batch/PUT/verify → ndjson commit, ``create_branch``, ``model_info``,
``list_repo_tree``, ``hf_hub_download``, ``snapshot_download``, ``ModelCard.push_to_hub``), ``transformers``
(``from_pretrained``) and ``datasets`` (``load_dataset(repo, streaming=True)``) use; see ../shared/HUB_API.md.

Every commit gets a real SHA-1 (of its parent, message and file oids); branches and pull-request refs
(``refs/pr/N``) point at commits. Writes need ``Authorization: Bearer <token>``; reads can be made to need it
too. Tests can inject failures (``fail``), inspect every request (``requests``), seed a repo straight from a
local folder (``seed_repo``) and read back what a repo holds (``repo_files``).

Example:
    ```py
    server = HubServer(token="hf_dummy").start()
    server.seed_repo("org/model", some_folder)
    server.fail(r"/commit/", status=500, times=2)
    ...
    server.stop()
    ```
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

#: Files at least this large always go through LFS (the Hub's threshold).
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
#: Extensions the Hub's default ``.gitattributes`` routes through LFS whatever their size.
LFS_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".parquet", ".arrow",
                  ".npy", ".npz", ".onnx", ".pkl", ".zip", ".tar", ".gz", ".png", ".jpg", ".jpeg")
DEFAULT_GITATTRIBUTES = b"".join(
    f"*{ext} filter=lfs diff=lfs merge=lfs -text\n".encode() for ext in LFS_EXTENSIONS
)
_REPO_ACTIONS = {"revision", "tree", "preupload", "commit", "branch", "refs", "commits", "paths-info", "discussions",
                 "settings", "tag", "parquet", "resolve"}
_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}


def git_blob_oid(data: bytes) -> str:
    """The git blob SHA-1 of ``data`` (what the Hub reports as a regular file's ``oid``/``ETag``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


@dataclass
class Blob:
    """A file's content; LFS files keep their sha256 and the git oid of their pointer file."""

    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
                f"size {len(self.data)}\n").encode()

    @property
    def git_oid(self) -> str:
        return git_blob_oid(self.pointer if self.lfs else self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class Commit:
    sha: str
    parent: str | None
    title: str
    description: str
    files: dict[str, Blob]
    date: str = field(default_factory=_now)


def _is_private(payload: dict, default: bool) -> bool:
    """A repo's privacy from a create/settings payload: huggingface_hub 1.x+ sends ``visibility`` ("public",
    "private", "protected"), older clients ``private``; the real Hub accepts both."""
    if "visibility" in payload:
        return payload["visibility"] != "public"
    return bool(payload.get("private", default))


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # "main", "dev", "refs/pr/1" -> commit sha
    n_prs: int = 0
    created: str = field(default_factory=_now)

    def resolve(self, revision: str | None) -> str | None:
        """Commit SHA for a branch, PR ref or (full or abbreviated) commit SHA; ``None`` when unknown."""
        revision = revision or "main"
        if revision in self.refs:
            return self.refs[revision]
        if revision.startswith("refs/heads/") and revision[11:] in self.refs:
            return self.refs[revision[11:]]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            hits = [sha for sha in self.commits if sha.startswith(revision)]
            if len(hits) == 1:
                return hits[0]
        return None


@dataclass
class Injection:
    pattern: re.Pattern
    status: int
    times: int
    method: str | None
    reset: bool
    headers: dict[str, str]
    body: bytes
    after: bool = False


@dataclass
class RecordedRequest:
    """One request as the server saw it (header names lower-cased: ``headers["authorization"]``)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body_size: int
    status: int = 0


class HubServer:
    """An in-memory Hub on loopback.

    Args:
        token: The token that authorises writes (``Authorization: Bearer <token>``).
        require_auth_for_reads: If ``True``, reads need the token too (like a private Hub).
        host: Interface to bind; keep the default.
    """

    def __init__(self, token: str = "hf_dummyTOKENabc123", *, require_auth_for_reads: bool = False,
                 host: str = "127.0.0.1"):
        self.token = token
        self.require_auth_for_reads = require_auth_for_reads
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.requests: list[RecordedRequest] = []
        self.unhandled: list[str] = []
        self._injections: list[Injection] = []
        self.tampered: dict[tuple[str, str, str], bytes] = {}
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._host = host
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = _Server((self._host, 0), handler, self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every open connection and wait for their threads.

        Clients keep connections alive between requests; without this their handler threads would outlive the
        server and print a traceback whenever the client later hangs up.
        """
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.close_connections()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The endpoint to give ``HF_ENDPOINT`` (``http://127.0.0.1:<port>``)."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return f"http://{self._host}:{self._httpd.server_address[1]}"

    # ---------------------------------------------------------------- test controls
    def fail(self, path_pattern: str, status: int = 500, times: int = 1, *, method: str | None = None,
             reset: bool = False, headers: dict[str, str] | None = None, body: str | bytes | None = None,
             after: bool = False) -> None:
        """Make the next ``times`` requests whose path matches ``path_pattern`` (``re.search``) fail.

        Args:
            path_pattern: Regular expression searched in the request path (without the query string).
            status: HTTP status to answer (500, 401, ...). A 401 carries
                ``X-Error-Message: Invalid credentials in Authorization header`` unless ``headers`` says otherwise.
            times: How many matching requests fail before the server behaves normally again.
            method: Only requests with this method (``"POST"``) match; any method when ``None``.
            reset: Close the connection without answering (a "connection reset") instead of sending ``status``.
            headers: Extra response headers.
            body: Response body (a JSON error by default).
            after: Carry the request out, then close the connection without answering: the change is made
                but the client never hears of it (a response lost on the way back).
        """
        hdrs = dict(headers or {})
        if status == 401 and not hdrs:
            hdrs["X-Error-Message"] = "Invalid credentials in Authorization header"
        if body is None:
            body = json.dumps({"error": hdrs.get("X-Error-Message", f"injected failure {status}")})
        with self._lock:
            self._injections.append(Injection(re.compile(path_pattern), status, times, method and method.upper(),
                                              reset, hdrs, body.encode() if isinstance(body, str) else body, after))

    def tamper(self, repo_id: str, path: str, data: bytes, *, repo_type: str = "model") -> None:
        """Serve ``data`` as the content of ``path`` (every revision) while its headers keep announcing the real
        file's hashes: a download corrupted on the way, or a tampered mirror."""
        with self._lock:
            self.tampered[(repo_type, repo_id, path)] = data

    def clear(self) -> None:
        """Forget recorded requests and pending failure injections, and stop requiring auth for reads.

        Repos are kept: tests sharing the server use distinct repo names.
        """
        with self._lock:
            self.require_auth_for_reads = False
            self.requests.clear()
            self.unhandled.clear()
            self._injections.clear()
            self.tampered.clear()

    def requests_to(self, pattern: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose path matches ``pattern`` (and ``method`` when given)."""
        rx = re.compile(pattern)
        return [r for r in list(self.requests) if rx.search(r.path) and (method is None or r.method == method)]

    def seed_repo(self, repo_id: str, folder: str | Path, *, repo_type: str = "model", branch: str = "main",
                  message: str = "seed", private: bool = False) -> str:
        """Create ``repo_id`` (if needed) and commit every file of ``folder`` to ``branch`` without HTTP.

        Returns:
            The new commit SHA.
        """
        folder = Path(folder)
        files = {p.relative_to(folder).as_posix(): p.read_bytes()
                 for p in sorted(folder.rglob("*")) if p.is_file() and ".git" not in p.relative_to(folder).parts}
        with self._lock:
            repo = self._create_repo(repo_type, repo_id, private)
            if branch not in repo.refs:
                repo.refs[branch] = repo.refs["main"]
            adds = {path: Blob(data, _is_lfs(path, len(data))) for path, data in files.items()}
            for blob in adds.values():
                if blob.lfs:
                    self.lfs_store[blob.sha256] = blob.data
            return self._commit(repo, branch, message, "", adds, set()).sha

    def repo_files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, bytes]:
        """The files (path → bytes) of ``repo_id`` at ``revision``."""
        repo = self.repos[(repo_type, repo_id)]
        sha = repo.resolve(revision)
        if sha is None:
            raise KeyError(revision)
        return {p: b.data for p, b in repo.commits[sha].files.items()}

    def repo(self, repo_id: str, *, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    # ---------------------------------------------------------------- state changes
    def _create_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        key = (repo_type, repo_id)
        if key not in self.repos:
            repo = Repo(repo_type, repo_id, private)
            self.repos[key] = repo
            self._commit(repo, "main", "initial commit", "",
                         {".gitattributes": Blob(DEFAULT_GITATTRIBUTES, False)}, set(), new_branch=True)
        return self.repos[key]

    def _commit(self, repo: Repo, ref: str, title: str, description: str, adds: dict[str, Blob],
                deletes: set[str], *, new_branch: bool = False) -> Commit:
        parent = None if new_branch else repo.refs[ref]
        files = dict(repo.commits[parent].files) if parent else {}
        for path in deletes:
            files.pop(path, None)
            for other in [p for p in files if p.startswith(path.rstrip("/") + "/")]:
                files.pop(other)
        files.update(adds)
        digest = hashlib.sha1()
        digest.update(json.dumps({"parent": parent, "title": title, "description": description, "n": next(self._counter),
                                  "files": {p: b.git_oid for p, b in sorted(files.items())}}).encode())
        commit = Commit(digest.hexdigest(), parent, title, description, files)
        repo.commits[commit.sha] = commit
        repo.refs[ref] = commit.sha
        return commit


def _is_lfs(path: str, size: int) -> bool:
    return size >= LFS_SIZE_THRESHOLD or path.lower().endswith(LFS_EXTENSIONS)


class _Reset(Exception):
    """Raised inside the handler to drop the connection without an answer."""


class _Server(ThreadingHTTPServer):
    """The HTTP server: one daemon thread per connection, tracked so that ``stop`` can end them.

    A client hanging up (reset, broken pipe: any ``OSError``) is normal and stays silent. Any other error escaping a handler is
    recorded in ``hub.unhandled`` as one line. Nothing is printed from a handler thread: formatting a traceback
    calls ``ast.parse`` on Python 3.11, and that races with the main thread's own ``ast.parse`` (pytest's
    assertion rewriting): "SystemError: AST constructor recursion depth mismatch", cpython gh-106905.
    """

    def __init__(self, address, handler, hub: HubServer):
        super().__init__(address, handler)
        self.hub = hub
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()

    def process_request(self, request, client_address):
        thread = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                                  name="hub-server-connection", daemon=True)
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def shutdown_request(self, request):
        with self._connections_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # the client hung up, or stop() shut the connection
            return
        self.hub.unhandled.append(f"connection {client_address}: {type(error).__name__}: {error}")

    def close_connections(self, timeout: float = 5.0) -> None:
        """Shut every open connection down and wait up to ``timeout`` seconds for its thread to end."""
        with self._connections_lock:
            open_now = list(self._connections.items())
        for request, _ in open_now:
            try:
                request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _, thread in open_now:
            thread.join(timeout)


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep pytest output quiet
        pass

    # ---------------------------------------------------------------- plumbing
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    _drop_response = False

    def _send(self, status: int, body: bytes | dict | list | str = b"", headers: dict[str, str] | None = None,
              content_type: str | None = None) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            content_type = content_type or "application/json"
        elif isinstance(body, str):
            body = body.encode()
            content_type = content_type or "text/plain; charset=utf-8"
        self._record.status = status
        if self._drop_response:  # the work is done; the answer never leaves
            raise _Reset()
        self.send_response(status)
        self.send_header("Content-Type", content_type or "application/octet-stream")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        hdrs = {"X-Error-Message": message, **(headers or {})}
        if code:
            hdrs["X-Error-Code"] = code
        self._send(status, {"error": message}, hdrs)

    def do_GET(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def _handle(self) -> None:
        hub = self.hub
        split = urlsplit(self.path)
        self.body = self._read_body() if self.command in ("POST", "PUT", "DELETE") else b""
        self.query = parse_qs(split.query)
        self.segments = [unquote(s) for s in split.path.split("/")[1:]]
        self._record = RecordedRequest(self.command, unquote(split.path), self.query,
                                       {k.lower(): v for k, v in self.headers.items()}, len(self.body))
        with hub._lock:
            hub.requests.append(self._record)
            injection = next((i for i in hub._injections if i.times > 0 and i.pattern.search(split.path)
                              and (i.method is None or i.method == self.command)), None)
            if injection is not None:
                injection.times -= 1
        try:
            if injection is not None and injection.after:
                self._drop_response = True
                self._route()
                raise _Reset()
            if injection is not None:
                if injection.reset:
                    raise _Reset()
                self._send(injection.status, injection.body, injection.headers, "application/json")
                return
            self._route()
        except _Reset:
            self._record.status = -1
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
        except Exception as err:  # a server bug: answer 500 so the test sees it
            hub.unhandled.append(f"{self.command} {self.path}: {type(err).__name__}: {err}")
            self._error(500, f"test server error: {type(err).__name__}: {err}")

    # ---------------------------------------------------------------- auth
    def _authorized(self, *, write: bool, repo: Repo | None = None) -> bool:
        """Check the bearer token; sends the 401 itself and returns ``False`` when refused."""
        header = self.headers.get("Authorization")
        if header is not None and header != f"Bearer {self.hub.token}":
            self._error(401, "Invalid credentials in Authorization header")
            return False
        if header is None and (write or self.hub.require_auth_for_reads or (repo is not None and repo.private)):
            if repo is not None and not write:
                self._error(401, "Repository not found", "RepoNotFound")
            else:
                self._error(401, "Invalid username or password.")
            return False
        return True

    # ---------------------------------------------------------------- routing
    def _split_repo(self, parts: list[str], repo_type: str) -> tuple[str, list[str]]:
        """Split ``parts`` into a repo id (1 or 2 segments) and the rest."""
        if len(parts) >= 2 and (repo_type, "/".join(parts[:2])) in self.hub.repos:
            return "/".join(parts[:2]), parts[2:]
        if parts and (repo_type, parts[0]) in self.hub.repos:
            return parts[0], parts[1:]
        if len(parts) >= 2 and parts[1] not in _REPO_ACTIONS:
            return "/".join(parts[:2]), parts[2:]
        return parts[0] if parts else "", parts[1:]

    def _route(self) -> None:
        s = self.segments
        m = self.command
        if s[:1] == ["api"]:
            if s[1:3] == ["repos", "create"] and m == "POST":
                return self._create_repo()
            if s[1:3] == ["repos", "delete"] and m == "DELETE":
                return self._delete_repo()
            if s[1:2] == ["agent-harnesses"] and m == "GET":  # huggingface_hub's user-agent registry
                return self._send(200, {"harnesses": {}, "standardEnvVars": []})
            if s[1:2] == ["validate-yaml"] and m == "POST":
                return self._send(200, {"errors": [], "warnings": []})
            if s[1:2] == ["whoami-v2"]:
                if not self._authorized(write=True):
                    return None
                return self._send(200, {"type": "user", "name": "tester", "fullname": "Tester", "orgs": [],
                                        "auth": {"type": "access_token",
                                                 "accessToken": {"displayName": "test", "role": "write"}}})
            if len(s) >= 3 and s[1] in _PLURAL:
                repo_type = _PLURAL[s[1]]
                repo_id, rest = self._split_repo(s[2:], repo_type)
                return self._api_repo(repo_type, repo_id, rest)
        if s[:1] == ["lfs-upload"] and m == "PUT":
            return self._lfs_upload(s[1])
        if s[:1] == ["lfs-verify"] and m == "POST":
            return self._lfs_verify(s[1])
        repo_type = "model"
        parts = s
        if s[:1] in (["datasets"], ["spaces"]):
            repo_type, parts = _PLURAL[s[0]], s[1:]
        git = next((i for i, p in enumerate(parts) if p.endswith(".git")), None)
        if git is not None and parts[git + 1:] == ["info", "lfs", "objects", "batch"] and m == "POST":
            parts = parts[:git] + [parts[git][:-4]]
            return self._lfs_batch(repo_type, "/".join(parts))
        if "resolve" in parts and m in ("GET", "HEAD"):
            i = parts.index("resolve")
            if len(parts) > i + 2:
                return self._resolve(repo_type, "/".join(parts[:i]), parts[i + 1], "/".join(parts[i + 2:]))
        self.hub.unhandled.append(f"{m} {self.path}")
        return self._error(404, f"not implemented by the test server: {m} {self.path}")

    def _get_repo(self, repo_type: str, repo_id: str, *, write: bool) -> Repo | None:
        repo = self.hub.repos.get((repo_type, repo_id))
        if not self._authorized(write=write, repo=repo):
            return None
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound")
        return repo

    def _get_sha(self, repo: Repo, revision: str) -> str | None:
        sha = repo.resolve(revision)
        if sha is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def _api_repo(self, repo_type: str, repo_id: str, rest: list[str]) -> None:
        m = self.command
        action = rest[0] if rest else None
        write = m in ("POST", "PUT", "DELETE") and action != "paths-info"
        with self.hub._lock:
            repo = self._get_repo(repo_type, repo_id, write=write)
            if repo is None:
                return None
            if action is None and m == "GET":
                return self._repo_info(repo, "main")
            if action == "revision" and m == "GET":
                return self._repo_info(repo, "/".join(rest[1:]))
            if action == "tree" and m == "GET":
                return self._tree(repo, rest[1] if len(rest) > 1 else "main", "/".join(rest[2:]))
            if action == "paths-info" and m == "POST":
                return self._paths_info(repo, "/".join(rest[1:]) or "main")
            if action == "refs" and m == "GET":
                return self._refs(repo)
            if action == "commits" and m == "GET":
                return self._commits(repo, "/".join(rest[1:]) or "main")
            if action == "branch" and len(rest) > 1:
                return self._branch(repo, "/".join(rest[1:]))
            if action == "preupload" and m == "POST":
                return self._preupload(repo, "/".join(rest[1:]))
            if action == "commit" and m == "POST":
                return self._commit(repo, "/".join(rest[1:]))
            if action == "settings" and m == "PUT":
                repo.private = _is_private(json.loads(self.body or b"{}"), repo.private)
                return self._send(200, {})
        self.hub.unhandled.append(f"{m} {self.path}")
        return self._error(404, f"not implemented by the test server: {m} {self.path}")

    # ---------------------------------------------------------------- repo API
    def _create_repo(self) -> None:
        if not self._authorized(write=True):
            return
        payload = json.loads(self.body or b"{}")
        repo_type = payload.get("type") or "model"
        name = payload["name"]
        org = payload.get("organization")
        repo_id = f"{org}/{name}" if org else f"tester/{name}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.url}/{prefix}{repo_id}"
        with self.hub._lock:
            if (repo_type, repo_id) in self.hub.repos:
                return self._send(409, {"error": "You already created this model repo", "url": url})
            self.hub._create_repo(repo_type, repo_id, _is_private(payload, False))
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        if not self._authorized(write=True):
            return
        payload = json.loads(self.body or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        with self.hub._lock:
            if self.hub.repos.pop((repo_type, repo_id), None) is None:
                return self._error(404, "Repository not found", "RepoNotFound")
        self._send(200, {})

    def _repo_info(self, repo: Repo, revision: str) -> None:
        sha = self._get_sha(repo, revision)
        if sha is None:
            return
        commit = repo.commits[sha]
        author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        info = {"_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id, "author": author,
                "sha": sha, "lastModified": commit.date, "createdAt": repo.created, "private": repo.private,
                "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [], "cardData": {},
                "siblings": [{"rfilename": p, "size": len(b.data), "blobId": b.git_oid,
                              **({"lfs": {"sha256": b.sha256, "size": len(b.data), "pointerSize": len(b.pointer)}}
                                 if b.lfs else {})}
                             for p, b in sorted(commit.files.items())]}
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        self._send(200, info)

    @staticmethod
    def _file_entry(path: str, blob: Blob) -> dict:
        entry = {"type": "file", "oid": blob.git_oid, "size": len(blob.data), "path": path}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": len(blob.pointer)}
        return entry

    @staticmethod
    def _dir_entry(path: str) -> dict:
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}

    @staticmethod
    def _dirs(files: dict[str, Blob]) -> set[str]:
        return {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}

    def _tree(self, repo: Repo, revision: str, path: str) -> None:
        sha = self._get_sha(repo, revision)
        if sha is None:
            return
        files = repo.commits[sha].files
        dirs = self._dirs(files)
        path = path.strip("/")
        if path and path not in dirs:
            if path in files:  # the Hub answers a file path with that file alone
                return self._send(200, [self._file_entry(path, files[path])])
            return self._error(404, f"Entry not found: {path}", "EntryNotFound")
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = path + "/" if path else ""

        def wanted(p: str) -> bool:
            return p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])

        entries = [self._dir_entry(d) for d in sorted(dirs) if wanted(d)]
        entries += [self._file_entry(p, b) for p, b in sorted(files.items()) if wanted(p)]
        self._send(200, entries)

    def _paths_info(self, repo: Repo, revision: str) -> None:
        sha = self._get_sha(repo, revision)
        if sha is None:
            return
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = json.loads(self.body or b"{}").get("paths", [])
        else:
            paths = parse_qs(self.body.decode()).get("paths", [])
        files = repo.commits[sha].files
        dirs = self._dirs(files)
        out = []
        for p in paths:
            p = p.strip("/")
            if p in files:
                out.append(self._file_entry(p, files[p]))
            elif p in dirs or p == "":
                out.append(self._dir_entry(p))
        self._send(200, out)

    def _refs(self, repo: Repo) -> None:
        def ref(name: str, sha: str) -> dict:
            full = name if name.startswith("refs/") else f"refs/heads/{name}"
            return {"name": name, "ref": full, "targetCommit": sha}

        self._send(200, {"branches": [ref(n, s) for n, s in repo.refs.items() if not n.startswith("refs/")],
                         "converts": [], "tags": [],
                         "pullRequests": [ref(n, s) for n, s in repo.refs.items() if n.startswith("refs/pr/")]})

    def _commits(self, repo: Repo, revision: str) -> None:
        sha = self._get_sha(repo, revision)
        if sha is None:
            return
        out = []
        while sha is not None:
            c = repo.commits[sha]
            out.append({"id": c.sha, "title": c.title, "message": c.description, "date": c.date,
                        "authors": [{"user": "tester"}]})
            sha = c.parent
        self._send(200, out)

    def _branch(self, repo: Repo, branch: str) -> None:
        if self.command == "DELETE":
            if repo.refs.pop(branch, None) is None:
                return self._error(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            return self._send(200, {})
        if self.command != "POST":
            return self._error(405, "method not allowed")
        if branch.startswith("refs/"):
            return self._error(400, f"Invalid reference for a branch: {branch}")
        if branch in repo.refs:
            return self._error(409, f"Reference already exists: refs/heads/{branch}")
        start = json.loads(self.body or b"{}").get("startingPoint") or "main"
        sha = self._get_sha(repo, start)
        if sha is None:
            return
        repo.refs[branch] = sha
        self._send(200, {})

    def _preupload(self, repo: Repo, revision: str) -> None:
        if self._get_sha(repo, revision) is None and not self.query.get("create_pr"):
            return
        files = json.loads(self.body)["files"]
        self._send(200, {"files": [{"path": f["path"], "uploadMode": "lfs" if _is_lfs(f["path"], f["size"])
                                    else "regular", "shouldIgnore": False} for f in files],
                         "commitOid": repo.resolve(revision)})

    def _commit(self, repo: Repo, revision: str) -> None:
        base = self._get_sha(repo, revision)
        if base is None:
            return
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        parent_commit = header.get("parentCommit")
        if parent_commit and parent_commit != base:
            return self._error(412, f"A commit has happened since. Please refresh and try again. ({base})")
        adds: dict[str, Blob] = {}
        deletes: set[str] = set()
        for item in lines:
            key, value = item["key"], item.get("value", {})
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    return self._error(400, f"unsupported encoding {value.get('encoding')}")
                data = base64.b64decode(value["content"])
                adds[value["path"]] = Blob(data, False)
            elif key == "lfsFile":
                data = self.hub.lfs_store.get(value["oid"])
                if data is None or len(data) != value["size"]:
                    return self._error(400, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                adds[value["path"]] = Blob(data, True)
            elif key in ("deletedFile", "deletedFolder"):
                deletes.add(value["path"])
            elif key != "header":
                return self._error(400, f"unsupported commit operation {key!r}")
        create_pr = self.query.get("create_pr", ["0"])[0] in ("1", "true")
        pr_url = None
        ref = revision if revision in repo.refs else None
        if create_pr:
            repo.n_prs += 1
            ref = f"refs/pr/{repo.n_prs}"
            repo.refs[ref] = base
            pr_url = f"{self._repo_url(repo)}/discussions/{repo.n_prs}"
        elif ref is None:  # a commit SHA is not a branch: the Hub refuses to commit on it
            return self._error(400, f"Invalid rev id: {revision} is not a branch")
        commit = self.hub._commit(repo, ref, header.get("summary") or "", header.get("description") or "",
                                  adds, deletes)
        self._send(200, {"success": True, "commitOid": commit.sha,
                         "commitUrl": f"{self._repo_url(repo)}/commit/{commit.sha}", "pullRequestUrl": pr_url})

    def _repo_url(self, repo: Repo) -> str:
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.hub.url}/{prefix}{repo.repo_id}"

    # ---------------------------------------------------------------- LFS
    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        with self.hub._lock:
            repo = self._get_repo(repo_type, repo_id, write=True)
        if repo is None:
            return
        payload = json.loads(self.body)
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], obj["size"]
            entry = {"oid": oid, "size": size}
            if oid not in self.hub.lfs_store:
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-upload/{oid}"},
                                    "verify": {"href": f"{self.hub.url}/lfs-verify/{oid}"}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _lfs_upload(self, oid: str) -> None:
        if hashlib.sha256(self.body).hexdigest() != oid:
            return self._error(400, f"content does not match oid {oid}")
        with self.hub._lock:
            self.hub.lfs_store[oid] = self.body
        self._send(200, b"")

    def _lfs_verify(self, oid: str) -> None:
        payload = json.loads(self.body or b"{}")
        data = self.hub.lfs_store.get(oid)
        if data is None or len(data) != payload.get("size"):
            return self._error(404, f"object {oid} not found")
        self._send(200, {})

    # ---------------------------------------------------------------- downloads
    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        with self.hub._lock:
            repo = self._get_repo(repo_type, repo_id, write=False)
            if repo is None:
                return
            sha = self._get_sha(repo, revision)
            if sha is None:
                return
            blob = repo.commits[sha].files.get(path)
        if blob is None:
            return self._error(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        data = self.hub.tampered.get((repo_type, repo_id, path), blob.data)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{blob.etag}"', "Accept-Ranges": "bytes"}
        if blob.lfs:
            headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(data))})
        rng = self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip()) if rng else None
        if match and data:
            first, last = match.groups()
            if first == "":  # suffix range: the last N bytes
                start, end = max(0, len(data) - int(last)), len(data) - 1
            else:
                start, end = int(first), min(int(last), len(data) - 1) if last else len(data) - 1
            if start >= len(data):
                return self._send(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start:end + 1], headers)
        self._send(200, data, headers)


__all__ = ["HubServer", "RecordedRequest", "git_blob_oid", "LFS_SIZE_THRESHOLD"]
