"""The fix workflow's configuration: which repository, which files may change, where the token is.

Every task function reads it from its environment (`FixSettings.from_env`), set by template.yaml
from the stack's parameters. A malformed value fails the task with a ValueError naming the
variable (a permanent error: the workflow records it and fails).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mirror.fixes.diff import normalize_path
from mirror.fixes.errors import PatchRejected
from mirror.fixes.repos import (
    GITHUB_API,
    GITLAB_API,
    GitHubRepo,
    GitLabRepo,
    LocalGitRepo,
    RepoHost,
    secret_token,
)

if TYPE_CHECKING:
    import httpx


class FixSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    reports_table: str = Field(min_length=1)
    provider: Literal["github", "gitlab", "local"] = "github"
    repo: str = Field(min_length=1)
    """GitHub `owner/name`; GitLab project id or `group/name`; local: the repository's path."""
    base_branch: str = Field("main", min_length=1)
    prompt_path: str = Field(min_length=1)
    """The agent's prompt file in the repository."""
    fixable_files: tuple[str, ...] = ()
    """The only files a drafted diff may touch (default: the prompt file alone)."""
    api_url: str | None = None
    token_secret: str | None = None
    """Secrets Manager name or ARN of the repository token (plain, or JSON with `token`)."""
    http_timeout_s: float = Field(10.0, gt=0, le=60)
    llm_timeout_s: float = Field(60.0, gt=0, le=600)
    report_url_template: str | None = None
    """How the PR body links a report: `{tenant_id}` and `{call_id}` are filled in (e.g. a
    console or dashboard URL); None lists the reports by table key."""
    max_failures: int = Field(20, ge=1, le=100)

    ENV: ClassVar[dict[str, str]] = {
        "reports_table": "REPORTS_TABLE",
        "provider": "REPO_PROVIDER",
        "repo": "REPO",
        "base_branch": "REPO_BASE_BRANCH",
        "prompt_path": "PROMPT_PATH",
        "fixable_files": "FIXABLE_FILES",
        "api_url": "REPO_API_URL",
        "token_secret": "REPO_TOKEN_SECRET",
        "http_timeout_s": "REPO_HTTP_TIMEOUT_S",
        "llm_timeout_s": "FIX_LLM_TIMEOUT_S",
        "report_url_template": "REPORT_URL_TEMPLATE",
        "max_failures": "FIX_MAX_FAILURES",
    }

    @model_validator(mode="after")
    def _consistent(self) -> FixSettings:
        try:
            prompt = normalize_path(self.prompt_path)
            fixable = tuple(normalize_path(p) for p in self.fixable_files) or (prompt,)
        except PatchRejected as e:
            raise ValueError(str(e)) from None
        if prompt not in fixable:
            raise ValueError("fixable_files must include prompt_path")
        if self.provider != "local" and not self.token_secret:
            raise ValueError(f"provider {self.provider} needs token_secret")
        object.__setattr__(self, "prompt_path", prompt)
        object.__setattr__(self, "fixable_files", fixable)
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FixSettings:
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        for field, var in cls.ENV.items():
            value = env.get(var, "").strip()
            if value:
                raw[field] = value
        if "fixable_files" in raw:
            raw["fixable_files"] = tuple(
                p.strip() for p in raw["fixable_files"].split(",") if p.strip()
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            err = e.errors(include_input=False)[0]
            var = cls.ENV.get(str(err["loc"][0]), "(settings)") if err["loc"] else "(settings)"
            raise ValueError(f"invalid fix settings: {var}: {err['msg']}") from None

    def repo_host(self, transport: httpx.BaseTransport | None = None) -> RepoHost:
        """The adapter for `provider`. `transport` is an httpx transport (tests)."""
        if self.provider == "local":
            return LocalGitRepo(self.repo)
        assert self.token_secret is not None  # checked by the validator
        token = secret_token(self.token_secret)
        if self.provider == "gitlab":
            return GitLabRepo(
                self.repo,
                token,
                api_url=self.api_url or GITLAB_API,
                timeout_s=self.http_timeout_s,
                transport=transport,
            )
        return GitHubRepo(
            self.repo,
            token,
            api_url=self.api_url or GITHUB_API,
            timeout_s=self.http_timeout_s,
            transport=transport,
        )
