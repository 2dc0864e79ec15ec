"""Repository hosts: the port the fix workflow uses, and its GitHub, GitLab and local adapters.

The port (`RepoHost`) has three operations: the head commit of a branch, a file's text at a
commit, and `open_change` (a branch from the base commit, one commit with the new file
contents, a pull/merge request). Each adapter makes `open_change` safe to repeat, because a
Step Functions Retry repeats the whole task after a transient failure: an existing branch is
moved to the new commit (it belongs to this fix alone), an existing open pull request for the
branch is returned instead of a new one.

Errors: a 5xx, 429, a rate-limit 403, a timeout or a dropped connection raise `TransientError`
(the workflow retries it with backoff); any other refusal raises `RepoError` (not retried).
Messages carry the method, the path and the host's own message, never the token.

httpx is imported on first use; every request has a timeout.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from mirror.fixes.errors import RepoError, TransientError

if TYPE_CHECKING:  # httpx loads on the first request
    import httpx

GITHUB_API = "https://api.github.com"
GITLAB_API = "https://gitlab.com/api/v4"
SECRET_MAX_AGE_S = 300


@dataclass(frozen=True)
class ChangeRequest:
    base_branch: str
    base_sha: str
    branch: str
    files: dict[str, str]
    commit_message: str
    title: str
    body: str


@dataclass(frozen=True)
class OpenedChange:
    branch: str
    commit: str
    url: str | None
    """The pull/merge request's web URL (None for a local repository: nothing is pushed)."""
    number: int | None = None


class RepoHost(Protocol):
    name: str

    def head(self, branch: str) -> str: ...

    def read_file(self, path: str, ref: str) -> str: ...

    def open_change(self, change: ChangeRequest) -> OpenedChange: ...


# --- tokens ------------------------------------------------------------------------------------


def secret_token(secret_id: str) -> Callable[[], str]:
    """A token getter over Secrets Manager (Powertools Parameters, cached `SECRET_MAX_AGE_S`).
    The secret is a plain string or JSON with `token`."""

    def get() -> str:
        from aws_lambda_powertools.utilities import parameters

        try:
            raw = parameters.get_secret(secret_id, max_age=SECRET_MAX_AGE_S)
        except Exception as e:  # noqa: BLE001 - GetParameterError and botocore errors alike
            cause = getattr(e, "__cause__", None) or e
            code = (getattr(cause, "response", None) or {}).get("Error", {}).get("Code", "")
            if (
                code in ("ThrottlingException", "InternalServiceError")
                or "Timeout" in type(cause).__name__
            ):
                raise TransientError(
                    f"repository token secret: {code or type(cause).__name__}"
                ) from None
            raise RepoError(
                f"could not read the repository token secret ({type(e).__name__})"
            ) from None
        text = (raw.decode() if isinstance(raw, bytes) else str(raw)).strip()
        if text.startswith("{"):
            try:
                text = str(json.loads(text).get("token", "")).strip()
            except (ValueError, AttributeError):
                text = ""
        if not text:
            raise RepoError("the repository token secret is empty or has no 'token' field")
        return text

    return get


# --- HTTP --------------------------------------------------------------------------------------


class _Http:
    """One httpx client per adapter; errors classified as described in the module docstring."""

    def __init__(
        self,
        host: str,
        base_url: str,
        headers: Callable[[], dict[str, str]],
        timeout_s: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.host = host
        self.base_url = base_url.rstrip("/")
        self._headers = headers
        self._timeout_s = timeout_s
        self._transport = transport
        self._client: httpx.Client | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200, 201),
        tolerate: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        import httpx

        if self._client is None:
            self._client = httpx.Client(
                base_url=self.base_url,
                timeout=httpx.Timeout(self._timeout_s, connect=min(5.0, self._timeout_s)),
                transport=self._transport,
            )
        try:
            response = self._client.request(method, path, headers=self._headers(), **kwargs)
        except httpx.TimeoutException:
            raise TransientError(f"{self.host} {method} {path}: timed out") from None
        except httpx.TransportError as e:
            raise TransientError(f"{self.host} {method} {path}: {type(e).__name__}") from None
        status = response.status_code
        if status in ok or status in tolerate:
            return response
        message = _message(response)
        where = f"{self.host} {method} {path}: HTTP {status}"
        if status >= 500 or status == 429:
            raise TransientError(f"{where} {message}".strip())
        if status == 403 and response.headers.get("x-ratelimit-remaining") == "0":
            raise TransientError(f"{where} (rate limited)")
        raise RepoError(f"{where} {message}".strip())


def _message(response: httpx.Response) -> str:
    try:
        doc = response.json()
    except ValueError:
        return ""
    if isinstance(doc, dict):
        msg = doc.get("message") or doc.get("error")
        return str(msg)[:300] if msg else ""
    return ""


def _seg(value: str) -> str:
    return quote(value, safe="")


def _path_seg(path: str) -> str:
    return quote(path, safe="/")


class GitHubRepo:
    """GitHub REST API v3: contents API to read, git data API to commit (one commit for all
    files), pulls API for the pull request."""

    name = "github"

    def __init__(
        self,
        repo: str,
        token: Callable[[], str],
        *,
        api_url: str = GITHUB_API,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        owner, _, name = repo.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"a GitHub repository is 'owner/name', not {repo!r}")
        self.repo = repo
        self._owner = owner
        self._base = f"/repos/{_seg(owner)}/{_seg(name)}"
        self._http = _Http(
            "GitHub",
            api_url,
            lambda: {
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {token()}",
                "X-GitHub-Api-Version": "2022-11-28",
            },
            timeout_s,
            transport,
        )

    def head(self, branch: str) -> str:
        r = self._http.request("GET", f"{self._base}/git/ref/heads/{_path_seg(branch)}")
        return str(r.json()["object"]["sha"])

    def read_file(self, path: str, ref: str) -> str:
        r = self._http.request(
            "GET", f"{self._base}/contents/{_path_seg(path)}", params={"ref": ref}
        )
        doc = r.json()
        if not isinstance(doc, dict) or doc.get("type") != "file":
            raise RepoError(f"GitHub: {path} is not a file")
        if doc.get("encoding") != "base64":
            raise RepoError(f"GitHub: {path} is too large for the contents API")
        return base64.b64decode(doc.get("content", "")).decode("utf-8")

    def open_change(self, change: ChangeRequest) -> OpenedChange:
        base = self._http.request("GET", f"{self._base}/git/commits/{change.base_sha}").json()
        tree = self._http.request(
            "POST",
            f"{self._base}/git/trees",
            json={
                "base_tree": base["tree"]["sha"],
                "tree": [
                    {"path": p, "mode": "100644", "type": "blob", "content": text}
                    for p, text in sorted(change.files.items())
                ],
            },
        ).json()
        commit = self._http.request(
            "POST",
            f"{self._base}/git/commits",
            json={
                "message": change.commit_message,
                "tree": tree["sha"],
                "parents": [change.base_sha],
            },
        ).json()["sha"]
        ref = self._http.request(
            "POST",
            f"{self._base}/git/refs",
            json={"ref": f"refs/heads/{change.branch}", "sha": commit},
            tolerate=(422,),
        )
        if ref.status_code == 422:  # the branch exists: an earlier attempt of this fix made it
            self._http.request(
                "PATCH",
                f"{self._base}/git/refs/heads/{_path_seg(change.branch)}",
                json={"sha": commit, "force": True},
            )
        pr = self._http.request(
            "POST",
            f"{self._base}/pulls",
            json={
                "title": change.title,
                "head": change.branch,
                "base": change.base_branch,
                "body": change.body,
                "maintainer_can_modify": True,
            },
            tolerate=(422,),
        )
        if pr.status_code == 422:  # a pull request for this branch is already open
            found = self._http.request(
                "GET",
                f"{self._base}/pulls",
                params={"head": f"{self._owner}:{change.branch}", "state": "open"},
            ).json()
            if not found:
                raise RepoError(f"GitHub: could not open a pull request ({_message(pr)})")
            doc = found[0]
        else:
            doc = pr.json()
        return OpenedChange(change.branch, commit, str(doc["html_url"]), int(doc["number"]))


class GitLabRepo:
    """GitLab REST API v4: repository files API to read, commits API (one commit with an
    `update` action per file, creating the branch from the base commit), merge requests API."""

    name = "gitlab"

    def __init__(
        self,
        project: str,
        token: Callable[[], str],
        *,
        api_url: str = GITLAB_API,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not project:
            raise ValueError("a GitLab project (id or 'group/name') is required")
        self.project = project
        self._base = f"/projects/{_seg(project)}"
        self._http = _Http(
            "GitLab", api_url, lambda: {"Authorization": f"Bearer {token()}"}, timeout_s, transport
        )

    def head(self, branch: str) -> str:
        r = self._http.request("GET", f"{self._base}/repository/branches/{_seg(branch)}")
        return str(r.json()["commit"]["id"])

    def read_file(self, path: str, ref: str) -> str:
        r = self._http.request(
            "GET", f"{self._base}/repository/files/{_seg(path)}", params={"ref": ref}
        )
        doc = r.json()
        if doc.get("encoding") != "base64":
            raise RepoError(f"GitLab: unexpected encoding for {path}")
        return base64.b64decode(doc.get("content", "")).decode("utf-8")

    def open_change(self, change: ChangeRequest) -> OpenedChange:
        r = self._http.request(
            "POST",
            f"{self._base}/repository/commits",
            json={
                "branch": change.branch,
                "start_sha": change.base_sha,
                "commit_message": change.commit_message,
                "actions": [
                    {"action": "update", "file_path": p, "content": text}
                    for p, text in sorted(change.files.items())
                ],
            },
            tolerate=(400,),
        )
        if r.status_code == 400:  # the branch exists: an earlier attempt of this fix made it
            commit = self.head(change.branch)
        else:
            commit = str(r.json()["id"])
        mr = self._http.request(
            "POST",
            f"{self._base}/merge_requests",
            json={
                "source_branch": change.branch,
                "target_branch": change.base_branch,
                "title": change.title,
                "description": change.body,
                "remove_source_branch": True,
            },
            tolerate=(409,),
        )
        if mr.status_code == 409:
            found = self._http.request(
                "GET",
                f"{self._base}/merge_requests",
                params={"source_branch": change.branch, "state": "opened"},
            ).json()
            if not found:
                raise RepoError(f"GitLab: could not open a merge request ({_message(mr)})")
            doc = found[0]
        else:
            doc = mr.json()
        return OpenedChange(change.branch, commit, str(doc["web_url"]), int(doc["iid"]))


class LocalGitRepo:
    """A git repository on this machine (the local run): nothing is pushed. `open_change`
    writes the commit and the branch with git plumbing, leaving the working tree and the
    checked-out branch alone, and returns them: what a push would send."""

    name = "local"

    def __init__(self, path: str | Path, *, timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s

    def git(
        self, *args: str, input: str | None = None, env: Mapping[str, str] | None = None
    ) -> str:
        try:
            out = subprocess.run(
                ["git", *args],
                cwd=self.path,
                input=input,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                env={**os.environ, **(env or {})},
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise TransientError(f"git {args[0]}: timed out") from None
        if out.returncode != 0:
            raise RepoError(f"git {args[0]}: {out.stderr.strip()[:300]}")
        return out.stdout

    def head(self, branch: str) -> str:
        return self.git("rev-parse", "--verify", f"{branch}^{{commit}}").strip()

    def read_file(self, path: str, ref: str) -> str:
        return self.git("show", f"{ref}:{path}")

    def open_change(self, change: ChangeRequest) -> OpenedChange:
        index = self.path / ".git" / f"mirror-index-{os.getpid()}"
        env = {
            "GIT_INDEX_FILE": str(index),
            "GIT_AUTHOR_NAME": "Mirror",
            "GIT_AUTHOR_EMAIL": "mirror@localhost",
            "GIT_COMMITTER_NAME": "Mirror",
            "GIT_COMMITTER_EMAIL": "mirror@localhost",
        }
        try:
            self.git("read-tree", change.base_sha, env=env)
            for path, text in sorted(change.files.items()):
                blob = self.git("hash-object", "-w", "--stdin", input=text).strip()
                self.git("update-index", "--cacheinfo", f"100644,{blob},{path}", env=env)
            tree = self.git("write-tree", env=env).strip()
        finally:
            index.unlink(missing_ok=True)
        commit = self.git(
            "commit-tree", tree, "-p", change.base_sha, input=change.commit_message, env=env
        ).strip()
        self.git("update-ref", f"refs/heads/{change.branch}", commit)
        return OpenedChange(change.branch, commit, None)
