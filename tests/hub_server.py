"""An in-memory Hugging Face Hub on 127.0.0.1, for end-to-end tests of pushing and loading models.

Why a server rather than mocks: `st-bge push` and `SentenceTransformer("user/repo")` talk to the Hub through
the real `huggingface_hub` client. Mocking the client's functions would test our guesses about the client; this
server instead answers the HTTP requests that huggingface_hub 2.4 really sends (URLs, payloads and headers read
from its source: `hf_api.py`, `_commit_api.py`, `_upload_pipeline.py`, `file_download.py`,
`_snapshot_download.py`, `utils/_http.py`), with the status codes, JSON and headers of the real Hub, so that the
client raises its real exceptions (`X-Error-Code: RepoNotFound` -> `RepositoryNotFoundError`, and so on).

Model repos only, one page per listing (no `Link` header), no LFS/Xet: the preupload answer makes every file a
"regular" one, so the client sends all contents base64-encoded in the NDJSON commit, which lets the server keep
(and a test inspect) every uploaded byte. As on the Hub, `create_repo` makes an "initial commit" holding
`.gitattributes`, and re-uploading an unchanged file is skipped by the client because preupload reports the
oid of the file already in the repo.

State is plain dicts, guarded by one lock:
    repos[repo_id] = {
        "private": bool,
        "branches": {name: commit_sha},
        "pull_requests": {number: {"title", "status", "base", "head"}},   # head: sha of `refs/pr/<number>`
        "commits": {sha: {"parent", "title", "description", "date", "files": {path: bytes}}},
    }
Old commits are never removed, so every earlier state stays addressable by its sha.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

# The `.gitattributes` the Hub puts in the initial commit of a new repo (abridged: the real one lists more types).
INITIAL_GITATTRIBUTES = (
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
)
# A repo id is `name` or `namespace/name`; the client never URL-encodes it. Revisions come URL-encoded.
_REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"
_REV = r"(?P<rev>[^/]+)"


def git_blob_oid(content: bytes) -> str:
    """The git object id of a file: what the Hub reports as `oid` (and ETag) of a regular, non-LFS file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now() -> str:
    """A timestamp in the Hub's format, which `huggingface_hub.utils.parse_datetime` expects."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class RecordedRequest:
    """One request as the server received it. `decoded` holds what the body carries in decoded form: every
    string of its JSON/NDJSON, and the base64 file contents and samples as raw bytes."""

    method: str
    path: str
    authorization: str | None
    body: bytes
    decoded: list[bytes]


class HubError(Exception):
    """An error answer as the Hub sends it: JSON `{"error": ...}`, `X-Error-Message`, and where the client maps
    it to an exception class, `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound)."""

    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.headers = headers or {}


def _strings_and_blobs(value, key: str = "") -> list[bytes]:
    """All strings in a decoded JSON value, plus the bytes of base64 `content`/`sample` fields (file contents)."""
    if isinstance(value, dict):
        return [blob for k, v in value.items() for blob in _strings_and_blobs(v, k)]
    if isinstance(value, list):
        return [blob for v in value for blob in _strings_and_blobs(v, key)]
    if isinstance(value, str):
        blobs = [value.encode()]
        if key in ("content", "sample"):  # base64 in commits and preuploads (but plain text in validate-yaml)
            with contextlib.suppress(ValueError):
                blobs.append(base64.b64decode(value, validate=True))
        return blobs
    return []


def _decode_body(body: bytes) -> list[bytes]:
    """The decoded content of a JSON or NDJSON body (commits are NDJSON); nothing for other bodies."""
    try:
        values = [json.loads(line) for line in body.splitlines() if line.strip()]
    except ValueError:
        return []
    return [blob for value in values for blob in _strings_and_blobs(value)]


class HubServer:
    """The server, running in a background thread on a free port of 127.0.0.1.

    Attributes for tests:
        url: the endpoint (`HF_ENDPOINT`); token: the one token the server accepts, as `Authorization: Bearer`;
            username: what `whoami` answers and the namespace of repos created without one.
        repos: the state (see the module docstring).
        requests: every request received, in order (`RecordedRequest`); `authorizations` lists their
            `Authorization` headers (None when absent).
        uploaded_blobs: the decoded content of every file sent in a commit request, including refused ones.
        unhandled: "METHOD /path" of requests no route matched (answered 404): an endpoint the client needs and
            this server lacks shows up here.
        fail_next_commit: set True to make the next commit request fail with `commit_failure_status` (default 500)
            without changing anything; it resets itself after that one request. Note that `upload_folder` (with
            hf_xet installed, as here) retries a 500 on commit and would then succeed: to make it fail, use a
            status it does not retry (e.g. 422), or `create_commit`, which does not retry.
    """

    def __init__(self, token: str, username: str = "user"):
        self.token = token
        self.username = username
        self.repos: dict[str, dict] = {}
        self.requests: list[RecordedRequest] = []
        self.uploaded_blobs: list[bytes] = []
        self.unhandled: list[str] = []
        self.fail_next_commit = False
        self.commit_failure_status = 500
        self._lock = threading.Lock()
        self._commit_counter = itertools.count()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True
        )
        self._routes = [
            ("POST", r"/api/repos/create", self._create_repo),
            ("GET", r"/api/whoami-v2", self._whoami),
            ("GET", r"/api/agent-harnesses", self._agent_harnesses),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("GET", rf"/api/models/{_REPO}/revision/{_REV}", self._repo_info),
            ("GET", rf"/api/models/{_REPO}/refs", self._list_refs),
            ("GET", rf"/api/models/{_REPO}/tree/{_REV}(?:/(?P<path>.+))?", self._tree),
            ("GET", rf"/api/models/{_REPO}/commits/{_REV}", self._list_commits),
            ("POST", rf"/api/models/{_REPO}/preupload/{_REV}", self._preupload),
            ("POST", rf"/api/models/{_REPO}/commit/{_REV}", self._commit),
            ("POST", rf"/api/models/{_REPO}/branch/(?P<branch>[^/]+)", self._create_branch),
            ("DELETE", rf"/api/models/{_REPO}/branch/(?P<branch>[^/]+)", self._delete_branch),
            ("DELETE", r"/api/repos/delete", self._delete_repo),
            ("POST", rf"/api/models/{_REPO}/discussions", self._open_pull_request),
            ("GET", rf"/api/models/{_REPO}/discussions/(?P<num>\d+)", self._pull_request_details),
            # Last, as `/api/models/gpt2/refs` would also match it (with a repo id "gpt2/refs").
            ("GET", rf"/api/models/{_REPO}", self._repo_info),
            ("GET", rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)", self._resolve),
            ("HEAD", rf"/{_REPO}/resolve/{_REV}/(?P<path>.+)", self._resolve),
        ]

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    @property
    def authorizations(self) -> list[str | None]:
        return [request.authorization for request in self.requests]

    def received_bytes(self) -> bytes:
        """Everything clients sent except headers (where the token belongs): paths, raw bodies and their decoded
        content, so `secret not in server.received_bytes()` covers file contents and commit messages alike."""
        parts = [
            part
            for request in self.requests
            for part in (request.path.encode(), unquote(request.path).encode(), request.body, *request.decoded)
        ]
        return b"\n".join(parts)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision (branch, `refs/pr/N` or sha), for assertions."""
        with self._lock:
            repo = self.repos[repo_id]
            return dict(repo["commits"][self._resolve_revision(repo, revision)]["files"])

    # ------------------------------------------------------------------------------------------ HTTP plumbing

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        request = RecordedRequest(
            handler.command, handler.path, handler.headers.get("Authorization"), body, _decode_body(body)
        )
        url = urlsplit(handler.path)
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        with self._lock:
            self.requests.append(request)
            try:
                status, payload, headers = self._dispatch(request, url.path, query)
            except HubError as error:
                status, payload = error.status, {"error": str(error)}
                headers = {"X-Error-Message": str(error), **error.headers}
                if error.error_code:
                    headers["X-Error-Code"] = error.error_code
        content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        handler.send_response(status)
        headers.setdefault("Content-Type", "application/json")
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(content)

    def _dispatch(self, request: RecordedRequest, path: str, query: dict[str, str]):
        for method, pattern, route in self._routes:
            match = re.fullmatch(pattern, path)
            if method == request.method and match:
                params = {name: unquote(value) for name, value in match.groupdict().items() if value is not None}
                return route(request, query, **params)
        self.unhandled.append(f"{request.method} {path}")
        raise HubError(404, f"Not found: {request.method} {path}")

    # ---------------------------------------------------------------------------------------- auth and lookups

    def _authorized(self, request: RecordedRequest) -> bool:
        return request.authorization == f"Bearer {self.token}"

    def _require_token(self, request: RecordedRequest) -> None:
        if request.authorization is None:
            raise HubError(401, "Invalid username or password.")
        if not self._authorized(request):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _repo(self, request: RecordedRequest, repo_id: str, write: bool = False) -> dict:
        """The repo, or the Hub's answer for a missing one: 401 unauthenticated (the Hub does not tell a private
        repo from a missing one), 404 otherwise, both with `RepoNotFound`. Writing needs the token."""
        if write:
            self._require_token(request)
        repo = self.repos.get(repo_id)
        if repo is None or (repo["private"] and not self._authorized(request)):
            status = 404 if self._authorized(request) else 401
            raise HubError(status, "Repository not found", "RepoNotFound")
        return repo

    @staticmethod
    def _pr_number(revision: str) -> int | None:
        match = re.fullmatch(r"refs/pr/(\d+)", revision)
        return int(match.group(1)) if match else None

    def _ref_head(self, repo: dict, ref: str) -> str | None:
        """The commit a branch or `refs/pr/N` points to (None if no such ref)."""
        branch = ref.removeprefix("refs/heads/")
        if branch in repo["branches"]:
            return repo["branches"][branch]
        pull_request = repo["pull_requests"].get(self._pr_number(ref))
        return pull_request["head"] if pull_request else None

    def _move_ref(self, repo: dict, ref: str, sha: str) -> None:
        branch = ref.removeprefix("refs/heads/")
        if branch in repo["branches"]:
            repo["branches"][branch] = sha
        else:
            repo["pull_requests"][self._pr_number(ref)]["head"] = sha

    def _resolve_revision(self, repo: dict, revision: str) -> str:
        sha = self._ref_head(repo, revision) or (revision if revision in repo["commits"] else None)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def _new_commit(self, repo: dict, parent: str | None, files: dict, title: str, description: str = "") -> str:
        """Store a commit; its sha is unique even for identical content (as git's would be, through the date)."""
        sha = hashlib.sha1(f"{next(self._commit_counter)} {parent} {title}".encode()).hexdigest()
        repo["commits"][sha] = {
            "parent": parent,
            "title": title,
            "description": description,
            "date": _now(),
            "files": files,
        }
        return sha

    def _new_pull_request(self, repo: dict, title: str, status: str, base: str, head: str) -> int:
        number = len(repo["pull_requests"]) + 1
        repo["pull_requests"][number] = {"title": title, "status": status, "base": base, "head": head}
        return number

    # ------------------------------------------------------------------------------------------------ routes

    def _create_repo(self, request, query):
        """`HfApi.create_repo`: JSON name, organization, visibility, type. 409 (with the repo url, which the client
        reads even then) if it exists; `exist_ok=True` is handled by the client."""
        self._require_token(request)
        payload = json.loads(request.body)
        if payload.get("type", "model") != "model":
            raise HubError(400, "This test server only hosts model repos")
        repo_id = f"{payload.get('organization') or self.username}/{payload['name']}"
        url = f"{self.url}/{repo_id}"
        if repo_id in self.repos:
            conflict = {"error": "You already created this model repo", "url": url}
            return 409, conflict, {"X-Error-Message": conflict["error"]}
        repo = {"private": payload.get("visibility") == "private", "branches": {}, "pull_requests": {}, "commits": {}}
        repo["branches"]["main"] = self._new_commit(
            repo, None, {".gitattributes": INITIAL_GITATTRIBUTES}, "initial commit"
        )
        self.repos[repo_id] = repo
        return 200, {"url": url, "name": repo_id, "id": repo_id}, {}

    def _delete_repo(self, request, query):
        """`HfApi.delete_repo`: JSON name, organization, type."""
        self._require_token(request)
        payload = json.loads(request.body)
        repo_id = f"{payload.get('organization') or self.username}/{payload['name']}"
        if repo_id not in self.repos:
            raise HubError(404, "Repository not found", "RepoNotFound")
        del self.repos[repo_id]
        return 200, {}, {}

    def _whoami(self, request, query):
        self._require_token(request)
        access_token = {"displayName": "test", "role": "write"}
        return 200, {"type": "user", "name": self.username, "orgs": [], "auth": {"accessToken": access_token}}, {}

    def _agent_harnesses(self, request, query):
        """Fetched once per process by huggingface_hub to name a coding agent in its user-agent: none listed."""
        return 200, {"standardEnvVars": [], "harnesses": {}}, {}

    def _validate_yaml(self, request, query):
        """Called by `create_commit` before committing a README.md; every card's metadata is accepted here."""
        return 200, {"errors": [], "warnings": []}, {}

    def _repo_info(self, request, query, repo, rev="main"):
        """`model_info`/`repo_info`, also how `snapshot_download` resolves a branch to a commit sha."""
        repo_state = self._repo(request, repo)
        sha = self._resolve_revision(repo_state, rev)
        commit = repo_state["commits"][sha]
        info = {
            "id": repo,
            "modelId": repo,
            "author": repo.split("/")[0],
            "sha": sha,
            "private": repo_state["private"],
            "gated": False,
            "disabled": False,
            "lastModified": commit["date"],
            "tags": [],
            "siblings": [{"rfilename": path} for path in sorted(commit["files"])],
        }
        return 200, info, {}

    def _list_refs(self, request, query, repo):
        repo_state = self._repo(request, repo)

        def ref(name: str, full: str, sha: str) -> dict:
            return {"name": name, "ref": full, "targetCommit": sha}

        refs = {
            "branches": [ref(name, f"refs/heads/{name}", sha) for name, sha in repo_state["branches"].items()],
            "converts": [],
            "tags": [],
        }
        if query.get("include_prs") == "1":
            refs["pullRequests"] = [
                ref(f"refs/pr/{num}", f"refs/pr/{num}", pr["head"]) for num, pr in repo_state["pull_requests"].items()
            ]
        return 200, refs, {}

    def _tree(self, request, query, repo, rev, path=""):
        """`list_repo_tree` / `list_repo_files` (`recursive=True`), and `snapshot_download`'s file listing."""
        repo_state = self._repo(request, repo)
        sha = self._resolve_revision(repo_state, rev)
        files = repo_state["commits"][sha]["files"]
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        below = {name: content for name, content in files.items() if name.startswith(prefix)}
        if prefix and not below:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        recursive = query.get("recursive", "false").lower() in ("1", "true")
        entries: dict[str, dict] = {}
        for name, content in below.items():
            parts = name[len(prefix) :].split("/")
            folders = [prefix + "/".join(parts[: depth + 1]) for depth in range(len(parts) - 1)]
            for folder in folders if recursive else folders[:1]:
                folder_oid = hashlib.sha1(f"{sha} {folder}".encode()).hexdigest()
                entries[folder] = {"type": "directory", "oid": folder_oid, "size": 0, "path": folder}
            if recursive or len(parts) == 1:
                entries[name] = {"type": "file", "oid": git_blob_oid(content), "size": len(content), "path": name}
        return 200, [entries[name] for name in sorted(entries)], {}

    def _list_commits(self, request, query, repo, rev):
        """`list_repo_commits`: newest first, following parents from the revision."""
        repo_state = self._repo(request, repo)
        sha: str | None = self._resolve_revision(repo_state, rev)
        history = []
        while sha is not None:
            commit = repo_state["commits"][sha]
            message = commit["title"] + (f"\n\n{commit['description']}" if commit["description"] else "")
            authors = [{"user": self.username}]
            history.append(
                {"id": sha, "title": commit["title"], "message": message, "authors": authors, "date": commit["date"]}
            )
            sha = commit["parent"]
        return 200, history, {}

    def _preupload(self, request, query, repo, rev):
        """Upload mode of each file of a coming commit: always "regular" (contents then travel in the commit),
        with the oid of the file already at that path so the client can skip unchanged files."""
        repo_state = self._repo(request, repo, write=True)
        sha = self._resolve_revision(repo_state, rev)
        current = repo_state["commits"][sha]["files"]
        answers = []
        for file in json.loads(request.body)["files"]:
            answer = {"path": file["path"], "uploadMode": "regular", "shouldIgnore": False}
            if file["path"] in current:
                answer["oid"] = git_blob_oid(current[file["path"]])
            answers.append(answer)
        return 200, {"files": answers, "commitOid": sha}, {}

    def _commit(self, request, query, repo, rev):
        """`create_commit` / `upload_folder`: an NDJSON body of a `header` line (summary, description, optional
        parentCommit) then one line per operation. Applied all at once or not at all. `?create_pr=1` puts the
        commit on a new `refs/pr/N` opened against `rev`, leaving `rev` as it was."""
        repo_state = self._repo(request, repo, write=True)
        lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        self.uploaded_blobs += [base64.b64decode(line["value"]["content"]) for line in lines if line["key"] == "file"]
        if self.fail_next_commit:
            self.fail_next_commit = False
            raise HubError(self.commit_failure_status, "Internal Error - We're working hard to fix this!")
        header, operations = lines[0], lines[1:]
        if header["key"] != "header":
            raise HubError(400, "The first line of a commit must be its header")
        base = self._ref_head(repo_state, rev)
        if base is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        parent_commit = header["value"].get("parentCommit")
        if parent_commit and not base.startswith(parent_commit):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")

        files = dict(repo_state["commits"][base]["files"])
        for operation in operations:
            key, path = operation["key"], operation["value"]["path"]
            if key == "file":
                files[path] = base64.b64decode(operation["value"]["content"])
            elif key == "deletedFile":
                if path not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                folder = path.rstrip("/") + "/"
                files = {name: content for name, content in files.items() if not name.startswith(folder)}
            else:
                raise HubError(400, f"Unsupported commit operation {key!r} (this server does no LFS)")

        title, description = header["value"]["summary"], header["value"].get("description", "")
        sha = self._new_commit(repo_state, base, files, title, description)
        answer = {"success": True, "commitOid": sha, "commitUrl": f"{self.url}/{repo}/commit/{sha}", "hookOutput": ""}
        if query.get("create_pr") == "1":
            number = self._new_pull_request(repo_state, title, "open", base=rev, head=sha)
            answer["pullRequestUrl"] = f"{self.url}/{repo}/discussions/{number}"
        else:
            self._move_ref(repo_state, rev, sha)
        return 200, answer, {}

    def _create_branch(self, request, query, repo, branch):
        """`create_branch`: from `startingPoint` (any revision) if given, else from main; 409 if it exists."""
        repo_state = self._repo(request, repo, write=True)
        if branch in repo_state["branches"]:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        starting_point = json.loads(request.body or b"{}").get("startingPoint", "main")
        repo_state["branches"][branch] = self._resolve_revision(repo_state, starting_point)
        return 200, {}, {}

    def _delete_branch(self, request, query, repo, branch):
        """`delete_branch`: the ref goes, its commits stay addressable by sha (as in git)."""
        repo_state = self._repo(request, repo, write=True)
        if branch == "main" or branch not in repo_state["branches"]:
            raise HubError(400 if branch == "main" else 404, f"Cannot delete branch {branch}")
        del repo_state["branches"][branch]
        return 200, {}, {}

    def _open_pull_request(self, request, query, repo):
        """`create_pull_request`, which `upload_folder(create_pr=True)` calls before committing to the PR's ref:
        a draft PR whose `refs/pr/N` starts at main."""
        repo_state = self._repo(request, repo, write=True)
        payload = json.loads(request.body)
        if not payload.get("pullRequest"):
            raise HubError(400, "This test server only opens pull requests, not discussions")
        number = self._new_pull_request(
            repo_state, payload["title"], "draft", base="main", head=repo_state["branches"]["main"]
        )
        return 200, {"num": number, "url": f"{self.url}/{repo}/discussions/{number}"}, {}

    def _pull_request_details(self, request, query, repo, num):
        """`get_discussion_details`, which `create_pull_request` calls to build its result."""
        repo_state = self._repo(request, repo)
        pull_request = repo_state["pull_requests"].get(int(num))
        if pull_request is None:
            raise HubError(404, f"Discussion {num} not found")
        details = {
            "num": int(num),
            "title": pull_request["title"],
            "status": pull_request["status"],
            "isPullRequest": True,
            "createdAt": repo_state["commits"][pull_request["head"]]["date"],
            "author": {"name": self.username},
            "repo": {"name": repo, "type": "model"},
            "events": [],
            "changes": {"base": f"refs/heads/{pull_request['base']}"},
            "filesWithConflicts": [],
        }
        return 200, details, {}

    def _resolve(self, request, query, repo, rev, path):
        """HEAD (`get_hf_file_metadata`) and GET (the download) of `/{repo}/resolve/{rev}/{path}`. The client needs
        `X-Repo-Commit` and a quoted `ETag` (the blob oid for regular files). A missing file is a 404
        `EntryNotFound` that still carries `X-Repo-Commit`: the client caches the absence under that commit, and
        sentence-transformers and transformers treat it as "this optional file is not there"."""
        repo_state = self._repo(request, repo)
        sha = self._resolve_revision(repo_state, rev)
        files = repo_state["commits"][sha]["files"]
        if path not in files:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
        content = files[path]
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{git_blob_oid(content)}"',
            "Content-Type": "application/octet-stream",
        }
        return 200, content, headers


class _Handler(BaseHTTPRequestHandler):
    """Hands every request to the `HubServer` (set as `server.hub`); HTTP/1.0: one request per connection."""

    def do_GET(self) -> None:
        self.server.hub._serve(self)

    do_HEAD = do_POST = do_DELETE = do_GET

    def log_message(self, format, *args) -> None:
        """Silenced: tests inspect `HubServer.requests` instead of stderr."""
