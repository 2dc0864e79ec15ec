"""Who may act for which tenant: the Api's authorization, from the caller's IAM identity.

The tenant a request names (`tenant_id` in a body or the query) is a claim; the caller's
identity decides whether it may make it. API Gateway's IAM authorizer puts the SigV4 signer's
ARN in the request context (`requestContext.authorizer.iam.userArn`; for a role session,
`arn:aws:sts::<account>:assumed-role/<role>/<session>`), and `TenantAccess` maps it:

- `MIRROR_TENANT_PRINCIPALS`: a JSON object, ARN glob -> the tenants that principal may act
  for (a list of tenant ids, `"*"` in it for every tenant), e.g.
  `{"arn:aws:sts::123456789012:assumed-role/acme-agent/*": ["acme"]}`. A principal matching
  several patterns gets the union. A principal matching none may act for no tenant.
- `MIRROR_FIX_REVIEWERS`: a JSON list of ARN globs, the principals that may approve or reject
  a fix (`/v1/fixes/...`). Kept apart from the tenants' principals: the voice agent's role is
  never a reviewer unless an operator lists it here.
- `MIRROR_API_LOCAL`: `true` only on a developer's machine. Then a request without an IAM
  context is trusted (it can only come from the local process), the body's `reviewer` names
  the reviewer, and empty mappings allow everything. Otherwise a request without an IAM
  context (e.g. a direct invoke of the function) is refused, and the reviewer is the caller.

Refusals are `forbidden` (403), except on a call's own routes (read, end, take the override),
which answer `call_not_found` (404) exactly as for a call that does not exist, so that a
principal cannot learn which call ids another tenant has. No I/O; parsed once per container.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from mirror.models import CallContext
from mirror.usecases.failure import Failure, FailureKind

PRINCIPALS_ENV = "MIRROR_TENANT_PRINCIPALS"
REVIEWERS_ENV = "MIRROR_FIX_REVIEWERS"
LOCAL_ENV = "MIRROR_API_LOCAL"
ALL_TENANTS = "*"

NO_IDENTITY = "the request carries no IAM identity; call the Api through API Gateway, signed"
NOT_FOR_TENANT = "the caller may not act for this tenant"
NOT_A_REVIEWER = "the caller is not one of the fix reviewers"


class AccessConfigError(ValueError):
    """A malformed mapping: the Api fails at cold start naming the setting."""


def _pattern(globs: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(fnmatch.translate(g) for g in globs) or "$^")


@dataclass(frozen=True)
class TenantAccess:
    principals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """ARN glob -> the tenants (or `*`) its principals may act for."""
    reviewers: tuple[str, ...] = ()
    """ARN globs of the principals that may decide fixes."""
    local: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> TenantAccess:
        local_raw = environ.get(LOCAL_ENV, "").strip().lower()
        if local_raw not in ("", "true", "false", "1", "0"):
            raise AccessConfigError(f"{LOCAL_ENV} must be true or false: {local_raw!r}")
        principals = _json(environ, PRINCIPALS_ENV, {})
        if not isinstance(principals, dict) or not all(
            isinstance(k, str) and k and isinstance(v, list) and v
            and all(isinstance(t, str) and t for t in v)
            for k, v in principals.items()
        ):  # fmt: skip
            raise AccessConfigError(
                f"{PRINCIPALS_ENV} must be a JSON object of ARN patterns to non-empty lists of"
                " tenant ids"
            )
        reviewers = _json(environ, REVIEWERS_ENV, [])
        if not isinstance(reviewers, list) or not all(isinstance(r, str) and r for r in reviewers):
            raise AccessConfigError(f"{REVIEWERS_ENV} must be a JSON list of ARN patterns")
        return cls(
            principals={k: tuple(v) for k, v in principals.items()},
            reviewers=tuple(reviewers),
            local=local_raw in ("true", "1"),
        )

    @cached_property
    def _rules(self) -> list[tuple[re.Pattern[str], frozenset[str]]]:
        return [(_pattern([g]), frozenset(t)) for g, t in self.principals.items()]

    @cached_property
    def _reviewer_pattern(self) -> re.Pattern[str]:
        return _pattern(list(self.reviewers))

    def tenants_of(self, principal: str) -> frozenset[str]:
        """Every tenant the principal may act for (`*` among them: all)."""
        out: set[str] = set()
        for pattern, tenants in self._rules:
            if pattern.fullmatch(principal):
                out |= tenants
        return frozenset(out)

    def may_act_for(self, principal: str | None, tenant_id: str) -> bool:
        if principal is None:
            return self.local
        if self.local and not self.principals:
            return True
        tenants = self.tenants_of(principal)
        return ALL_TENANTS in tenants or tenant_id in tenants

    def authorize_tenant(self, principal: str | None, tenant_id: str) -> Failure | None:
        """None when `principal` may act for `tenant_id`; else the refusal (403)."""
        if self.may_act_for(principal, tenant_id):
            return None
        detail = f"principal {principal or '(none)'} refused for tenant {tenant_id}"
        return _refused("forbidden", NOT_FOR_TENANT if principal else NO_IDENTITY, detail)

    def authorize_call(self, principal: str | None, ctx: CallContext) -> Failure | None:
        """As `authorize_tenant`, for a call's own routes: a principal refused for the tenant
        gets exactly the 404 of a call that does not exist (no request without an identity
        gets that far: it is 403)."""
        refused = self.authorize_tenant(principal, ctx.tenant_id)
        if refused is None or principal is None:
            return refused
        from mirror.usecases.calls import call_not_found

        missing = call_not_found(ctx)
        return _refused("call_not_found", missing.message, refused.log_detail or "")

    def reviewer(self, principal: str | None, claimed: str | None) -> str | None | Failure:
        """Who decides a fix: the IAM caller, if it is a reviewer; the body's `reviewer` only
        in local mode without an IAM context (None when it names none: `decide_fix` asks for
        one)."""
        if principal is None:
            if not self.local:
                return _refused("forbidden", NO_IDENTITY, "fix decision without a principal")
            return claimed
        if self.local and not self.reviewers:
            return principal
        if self._reviewer_pattern.fullmatch(principal):
            return principal
        return _refused("forbidden", NOT_A_REVIEWER, f"principal {principal} is no reviewer")


def _refused(kind: FailureKind, message: str, detail: str) -> Failure:
    """A refusal: `error_type` "forbidden" whatever the kind, so it is counted as one."""
    return Failure(kind, message, log_detail=detail, error_type="forbidden")


def _json(environ: Mapping[str, str], name: str, default: object) -> object:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError:
        raise AccessConfigError(f"{name} is not valid JSON") from None
