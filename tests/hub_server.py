"""A stand-in for the Hugging Face Hub on 127.0.0.1, enough of it for huggingface_hub's downloads.

Two HTTP servers in threads: the "hub" answers ``GET /api/models/{repo}[/revision/{rev}]`` (the
file list and commit) and ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``; large files (the
weights) are answered there with a 302 to the "cdn", another origin as on the real Hub, which
serves the bytes. The headers are the ones huggingface_hub's ``file_download.py`` reads:
``X-Repo-Commit``, ``ETag`` / ``X-Linked-Etag``, ``X-Linked-Size``, ``Location``,
``Content-Length``, and ``X-Error-Code`` on errors (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``, ``GatedRepo``).

Faults, per file: ``"truncate"`` (the cdn sends half of the bytes and closes the connection),
``"wrong_length"`` (the hub announces more bytes than the file has), ``"missing"`` (listed, but
404 when fetched).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LARGE = (".safetensors", ".bin", ".msgpack", ".h5")


class FakeHub:
    """The fake Hub: ``add_repo`` to serve files, ``url`` for ``HF_ENDPOINT``, ``gets`` to see downloads."""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.blobs: dict[str, bytes] = {}
        self.commit_repo: dict[str, str] = {}
        self.log: list[tuple[str, str, str]] = []  # (server, method, path)
        self._lock = threading.Lock()
        self.hub = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "hub"))
        self.cdn = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, "cdn"))
        self.hub.daemon_threads = self.cdn.daemon_threads = True
        # a short poll so close() (shutdown) returns at once
        self._threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
                         for s in (self.hub, self.cdn)]
        for t in self._threads:
            t.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self.cdn.server_address[1]}"

    def close(self) -> None:
        for server in (self.hub, self.cdn):
            server.shutdown()
            server.server_close()

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, revision: str = "main",
                 gated_token: str | None = None, faults: dict[str, str] | None = None) -> str:
        """Serve ``files`` as ``revision`` of ``repo_id`` (a repo may get several); returns the commit sha."""
        digest = hashlib.sha1(repo_id.encode() + b"\0" + revision.encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
        commit = digest.hexdigest()
        with self._lock:
            repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}, "gated_token": None, "faults": {}})
            repo["refs"][revision] = commit
            repo["commits"][commit] = dict(files)
            repo["gated_token"] = gated_token
            repo["faults"][commit] = dict(faults or {})
            self.commit_repo[commit] = repo_id
            for data in files.values():
                self.blobs[hashlib.sha256(data).hexdigest()] = data
        return commit

    def gets(self, repo_id: str | None = None) -> list[str]:
        """File names whose bytes were sent (GET on resolve or cdn), in order, for one repo or all."""
        out = []
        for server, method, path in list(self.log):
            if method != "GET":
                continue
            if server == "hub" and "/resolve/" in path:
                repo, rest = path[1:].split("/resolve/", 1)
                if repo_id is None or unquote(repo) == repo_id:
                    out.append(unquote(rest.split("/", 1)[1]))
            elif server == "cdn":  # /blobs/{sha256}/{commit}/{filename}
                _, _, _, commit, name = path.split("/", 4)
                if repo_id is None or self.commit_repo.get(commit) == repo_id:
                    out.append(unquote(name))
        return out


def _handler(hub: FakeHub, role: str):
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so a cut-short body is seen as a closed connection.
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):  # quiet: pytest shows what matters
            pass

        def do_HEAD(self):
            self._serve(body=False)

        def do_GET(self):
            self._serve(body=True)

        # -- answers ---------------------------------------------------------------------
        def _send(self, status: int, headers: dict[str, str], data: bytes = b"", body: bool = True,
                  length: int | None = None):
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data) if length is None else length))
            self.end_headers()
            if body and data:
                self.wfile.write(data)

        def _error(self, status: int, code: str | None, body: bool, commit: str | None = None, message=""):
            headers = {"Content-Type": "application/json"}
            if code:
                headers["X-Error-Code"] = code
            if message:
                headers["X-Error-Message"] = message
            if commit:
                headers["X-Repo-Commit"] = commit
            self._send(status, headers, json.dumps({"error": message or code or "error"}).encode(), body)

        def _serve(self, body: bool):
            path = urlsplit(self.path).path
            with hub._lock:
                hub.log.append((role, self.command, path))
            if role == "cdn":
                return self._cdn(path, body)
            if path.startswith("/api/models/"):
                return self._info(path[len("/api/models/"):], body)
            if "/resolve/" in path:
                return self._resolve(path, body)
            self._error(404, None, body, message="no such route")

        def _repo(self, repo_id: str, body: bool):
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", body, message="Repository not found")
            return repo

        def _commit(self, repo: dict, revision: str, body: bool):
            commit = repo["refs"].get(revision, revision if revision in repo["commits"] else None)
            if commit is None:
                self._error(404, "RevisionNotFound", body, message=f"Invalid rev id: {revision}")
            return commit

        def _info(self, rest: str, body: bool):
            repo_id, _, revision = rest.partition("/revision/")
            repo_id, revision = unquote(repo_id), unquote(revision) or "main"
            repo = self._repo(repo_id, body)
            if repo is None:
                return
            commit = self._commit(repo, revision, body)
            if commit is None:
                return
            info = {"id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                    "gated": "manual" if repo["gated_token"] else False, "tags": [],
                    "siblings": [{"rfilename": n} for n in sorted(repo["commits"][commit])]}
            self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode(), body)

        def _resolve(self, path: str, body: bool):
            repo_part, rest = path[1:].split("/resolve/", 1)
            revision, _, filename = rest.partition("/")
            repo_id, revision, filename = unquote(repo_part), unquote(revision), unquote(filename)
            repo = self._repo(repo_id, body)
            if repo is None:
                return
            if repo["gated_token"] and self.headers.get("Authorization") != f"Bearer {repo['gated_token']}":
                status = 403 if self.headers.get("Authorization") else 401
                return self._error(status, "GatedRepo", body,
                                   message=f"Access to model {repo_id} is restricted. You must have access to it.")
            commit = self._commit(repo, revision, body)
            if commit is None:
                return
            files = repo["commits"][commit]
            fault = repo["faults"][commit].get(filename)
            if filename not in files or fault == "missing":
                return self._error(404, "EntryNotFound", body, commit=commit, message="Entry not found")
            data = files[filename]
            if filename.endswith(LARGE):
                sha = hashlib.sha256(data).hexdigest()
                size = len(data) + (7 if fault == "wrong_length" else 0)
                location = f"{hub.cdn_url}/blobs/{sha}/{commit}/{rest.partition('/')[2]}"
                return self._send(302, {"Location": location, "X-Repo-Commit": commit, "ETag": f'"{sha}"',
                                        "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(size)}, b"", body)
            etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            length = len(data) + (7 if fault == "wrong_length" else 0)
            if body:
                length = len(data)  # the HEAD announced a wrong size; the GET itself is consistent
            self._send(200, {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"},
                       data, body, length=length)

        def _cdn(self, path: str, body: bool):
            parts = path.split("/", 4)
            if len(parts) < 5 or parts[1] != "blobs" or parts[2] not in hub.blobs:
                return self._error(404, None, body, message="no such blob")
            data = hub.blobs[parts[2]]
            repo = hub.repos.get(hub.commit_repo.get(parts[3], ""), {"faults": {}})
            fault = repo["faults"].get(parts[3], {}).get(unquote(parts[4]))
            if fault == "truncate" and body:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(200, {"Content-Type": "application/octet-stream", "ETag": f'"{parts[2]}"'}, data, body)

    return Handler
