"""A tiny Hugging Face Hub on 127.0.0.1 for tests: the real `huggingface_hub` client talks to it over HTTP.

It implements the endpoints `huggingface_hub` calls (checked against 2.4; older clients list files
from `siblings` instead of the tree, which is served too) for

- download: `snapshot_download` / `hf_hub_download`
    GET  /api/models/{repo}[/revision/{rev}]      repo info: `sha`, `siblings`
    GET  /api/models/{repo}/tree/{rev}[/{path}]   file listing (one page)
    HEAD /{repo}/resolve/{rev}/{file}             `X-Repo-Commit`, `ETag` (git blob sha1),
                                                  `X-Linked-Etag`/`X-Linked-Size` for LFS-like files
    GET  /{repo}/resolve/{rev}/{file}             the bytes
- upload: `HfApi.create_repo`, `create_branch`, `upload_folder` / `create_commit`
    POST /api/repos/create, POST /api/models/{repo}/branch/{branch}, POST /api/validate-yaml,
    POST /api/models/{repo}/preupload/{rev}  (answers "regular" for every file, so no LFS/Xet upload),
    POST /api/models/{repo}/commit/{rev}     (NDJSON; base64 "file" additions, "deletedFile")

Errors carry the Hub's `X-Error-Code` header (RepoNotFound, RevisionNotFound, EntryNotFound), which is
how the client maps them to its exception types. Each response closes its connection (HTTP/1.0), so a
stopped server is really unreachable. Every request is logged in `hub.requests` as (method, path).

    with FakeHub() as hub:
        sha = hub.commit("owner/name", {"config.json": b"{}"})
        snapshot_download("owner/name", endpoint=hub.url, cache_dir=tmp)
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
"""Files served like LFS objects (`X-Linked-Etag` = sha256), as the Hub does for weights."""


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FakeRepo:
    branches: dict[str, str] = field(default_factory=dict)       # branch -> commit sha
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: bytes}
    private: bool = False

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ------------------------------------------------------------ content (also used by the handlers)

    def create_repo(self, repo_id: str, private: bool = False) -> FakeRepo:
        with self._lock:
            return self.repos.setdefault(repo_id, FakeRepo(private=private))

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main",
               deleted: tuple[str, ...] = (), message: str = "") -> str:
        """Commit `files` on top of `branch` (created if new, from main when main exists); returns the sha."""
        repo = self.create_repo(repo_id)
        with self._lock:
            parent = repo.branches.get(branch) or repo.branches.get("main")
            tree = dict(repo.commits[parent]) if parent else {}
            tree.update(files)
            for path in deleted:
                tree.pop(path, None)
            h = hashlib.sha1(f"{repo_id}\0{branch}\0{parent}\0{message}\0{len(repo.commits)}".encode())
            for path in sorted(tree):
                h.update(path.encode() + b"\0" + hashlib.sha256(tree[path]).digest())
            sha = h.hexdigest()
            repo.commits[sha] = tree
            repo.branches[branch] = sha
            return sha

    def commit_dir(self, repo_id: str, directory: str | Path, branch: str = "main") -> str:
        """Commit every file directly inside `directory`."""
        files = {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir()) if p.is_file()}
        return self.commit(repo_id, files, branch=branch)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.resolve(revision)]

    def count(self, method: str | None = None, contains: str = "") -> int:
        """How many requests matched `method` (any if None) with `contains` in the path."""
        with self._lock:
            return sum(1 for m, p in self.requests if (method is None or m == method) and contains in p)

    # ------------------------------------------------------------ server

    def start(self) -> str:
        hub = self

        class Handler(_Handler):
            pass
        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fakehub", daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> "FakeHub":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    # ------------------------------------------------------------ plumbing

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        h = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **(headers or {})}
        self._json({"error": message}, status, h)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _segments(self) -> list[str]:
        path = urlsplit(self.path).path
        with self.hub._lock:
            self.hub.requests.append((self.command, path))
        return [unquote(s) for s in path.strip("/").split("/")]

    def _repo(self, repo_id: str) -> FakeRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found")
        return repo

    def _revision(self, repo: FakeRepo, revision: str) -> str | None:
        sha = repo.resolve(revision)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return sha

    # ------------------------------------------------------------ routes

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        s = self._segments()
        if len(s) >= 4 and s[0] == "api" and s[1] == "models":
            repo_id = f"{s[2]}/{s[3]}"
            rest = s[4:]
            if not rest or rest[0] == "revision":
                return self._info(repo_id, rest[1] if len(rest) > 1 else "main")
            if rest[0] == "tree" and len(rest) >= 2:
                return self._tree(repo_id, rest[1], "/".join(rest[2:]))
        if len(s) >= 5 and s[2] == "resolve":
            return self._resolve(f"{s[0]}/{s[1]}", s[3], "/".join(s[4:]))
        self._error(404, None, f"no route for GET {self.path}")

    def do_POST(self) -> None:
        s = self._segments()
        body = self._body()
        if s == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body or b"{}"))
        if s == ["api", "validate-yaml"]:
            return self._json({"errors": [], "warnings": []})
        if len(s) >= 6 and s[:2] == ["api", "models"]:
            repo_id, action, rev = f"{s[2]}/{s[3]}", s[4], "/".join(s[5:])
            if action == "preupload":
                return self._preupload(repo_id, json.loads(body))
            if action == "commit":
                return self._commit(repo_id, rev, body)
            if action == "branch":
                return self._branch(repo_id, rev, json.loads(body or b"{}"))
        self._error(404, None, f"no route for POST {self.path}")

    # ------------------------------------------------------------ download

    def _info(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id)
        sha = repo and self._revision(repo, revision)
        if sha:
            files = repo.commits[sha]
            self._json({"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                        "siblings": [{"rfilename": p} for p in sorted(files)]})

    def _tree(self, repo_id: str, revision: str, prefix: str) -> None:
        repo = self._repo(repo_id)
        sha = repo and self._revision(repo, revision)
        if sha:
            entries = []
            for path, data in sorted(repo.commits[sha].items()):
                if prefix and not path.startswith(prefix.rstrip("/") + "/"):
                    continue
                entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
                if path.endswith(LFS_SUFFIXES):
                    entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                entries.append(entry)
            self._json(entries)

    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        repo = self._repo(repo_id)
        sha = repo and self._revision(repo, revision)
        if not sha:
            return
        data = repo.commits[sha].get(filename)
        if data is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist on {revision}",
                               {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha1(data)}"', "Accept-Ranges": "bytes"}
        if filename.endswith(LFS_SUFFIXES):
            headers.update({"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
                            "X-Linked-Size": str(len(data))})
        self._send(200, data, headers, content_type="application/octet-stream")

    # ------------------------------------------------------------ upload

    def _create_repo(self, payload: dict) -> None:
        name, org = payload.get("name"), payload.get("organization")
        repo_id = f"{org}/{name}" if org else f"user/{name}"
        if repo_id in self.hub.repos:  # the client reads "url" from this 409 body when exist_ok=True
            msg = "You already created this model repo"
            return self._json({"error": msg, "url": f"{self.hub.url}/{repo_id}"}, 409, {"X-Error-Message": msg})
        self.hub.create_repo(repo_id, private=bool(payload.get("private")) or payload.get("visibility") == "private")
        self._json({"url": f"{self.hub.url}/{repo_id}", "name": repo_id})

    def _preupload(self, repo_id: str, payload: dict) -> None:
        if self._repo(repo_id):
            self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                  for f in payload["files"]]})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        if not self._repo(repo_id):
            return
        files, deleted, message = {}, [], ""
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                message = value.get("summary", "")
            elif item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                deleted.append(value["path"])
            else:  # lfsFile etc.: the preupload answer never asks for them
                return self._error(400, None, f"unsupported commit operation {item['key']!r}")
        sha = self.hub.commit(repo_id, files, branch=revision, deleted=tuple(deleted), message=message)
        self._json({"commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                    "commitMessage": message, "pullRequestUrl": None, "success": True})

    def _branch(self, repo_id: str, branch: str, payload: dict) -> None:
        repo = self._repo(repo_id)
        if not repo:
            return
        if branch in repo.branches:
            return self._error(409, None, f"Branch {branch} already exists")
        start = payload.get("startingPoint") or "main"
        sha = repo.resolve(start)
        if sha is None and repo.commits:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {start}")
        if sha is None:  # empty repo: the branch appears with its first commit
            sha = self.hub.commit(repo_id, {}, branch=branch, message="initial")
        with self.hub._lock:
            repo.branches[branch] = sha
        self._json({"name": branch})
