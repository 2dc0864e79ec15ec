"""Tenant isolation in the Api (issue 13, item 8): the tenant comes from the caller's IAM
identity, not from the request.

MIRROR_TENANT_PRINCIPALS maps ARN patterns to the tenants they may act for; MIRROR_FIX_REVIEWERS
lists who may decide fixes (the agents' roles are not among them); without MIRROR_API_LOCAL a
request without an IAM context is refused and the body's `reviewer` is not trusted. Every route
is tried as tenant A's principal against tenant B's calls (403; 404 on a call's own routes,
identical to a missing call's), each with its allow twin.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from mirror.usecases.authz import AccessConfigError, TenantAccess
from tests.support.api import API_PATH, asgi, error_of, http_event, invoke

pytestmark = pytest.mark.integration

ACCOUNT = "123456789012"
ACME_AGENT = f"arn:aws:sts::{ACCOUNT}:assumed-role/acme-agent/session-1"
GLOBEX_AGENT = f"arn:aws:sts::{ACCOUNT}:assumed-role/globex-agent/session-9"
OPS = f"arn:aws:iam::{ACCOUNT}:role/mirror-ops"
REVIEWER = f"arn:aws:iam::{ACCOUNT}:user/reviewer-alice"
STRANGER = f"arn:aws:iam::{ACCOUNT}:user/someone"
PRINCIPALS = {
    f"arn:aws:sts::{ACCOUNT}:assumed-role/acme-agent/*": ["acme"],
    f"arn:aws:sts::{ACCOUNT}:assumed-role/globex-agent/*": ["globex"],
    OPS: ["*"],
}
REVIEWERS = [f"arn:aws:iam::{ACCOUNT}:user/reviewer-*"]
CALL = "CA-globex-1"


@pytest.fixture
def api(load_module: Callable[..., ModuleType], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The Api as deployed: not local, with a tenant mapping and a reviewers' set."""
    monkeypatch.delenv("MIRROR_API_LOCAL", raising=False)
    monkeypatch.setenv("MIRROR_TENANT_PRINCIPALS", json.dumps(PRINCIPALS))
    monkeypatch.setenv("MIRROR_FIX_REVIEWERS", json.dumps(REVIEWERS))
    return load_module(API_PATH)


def as_principal(principal: str | None, method: str, path: str, **kw: Any) -> dict[str, Any]:
    """An HTTP API event signed by `principal` (None: no IAM authorizer context at all)."""
    event = http_event(method, path, **kw)
    if principal is None:
        event["requestContext"].pop("authorizer", None)
    else:
        event["requestContext"]["authorizer"]["iam"]["userArn"] = principal
    return event


def score_body(tenant: str | None, call_id: str = CALL) -> dict[str, Any]:
    body: dict[str, Any] = {"call_id": call_id, "customer_text": "Hi.", "agent_text": "Hello!"}
    return body if tenant is None else {**body, "tenant_id": tenant}


def gate_body(tenant: str) -> dict[str, Any]:
    calls = [{"id": "c1", "name": "get_order_details", "args": {"order_id": "W1"}}]
    return {"call_id": CALL, "tenant_id": tenant, "tool_calls": calls}


def correction_body(tenant: str) -> dict[str, Any]:
    event = json.loads((API_PATH.parents[2] / "events" / "generate_correction.json").read_text())
    return {**event, "call_id": CALL, "tenant_id": tenant}


POSTS = {
    "/v1/turns:score": score_body,
    "/v1/tools:gate": gate_body,
    "/v1/corrections": correction_body,
}
CALL_ROUTES = [
    ("GET", f"/v1/calls/{CALL}", "/v1/calls/{call_id}"),
    ("POST", f"/v1/calls/{CALL}/end", "/v1/calls/{call_id}/end"),
    ("POST", f"/v1/calls/{CALL}/override:take", "/v1/calls/{call_id}/override:take"),
]


def seed(api: ModuleType) -> None:
    status, _, _ = invoke(
        api, as_principal(GLOBEX_AGENT, "POST", "/v1/turns:score", body=score_body("globex"))
    )
    assert status == 200


@pytest.mark.parametrize("path", list(POSTS))
def test_a_principal_cannot_act_for_another_tenant(api: ModuleType, path: str) -> None:
    status, _, body = invoke(
        api, as_principal(ACME_AGENT, "POST", path, body=POSTS[path]("globex"))
    )
    assert status == 403
    assert error_of(body, "forbidden")["message"] == "the caller may not act for this tenant"
    # the allow twin: the same request for its own tenant
    status, _, _ = invoke(api, as_principal(ACME_AGENT, "POST", path, body=POSTS[path]("acme")))
    assert status == 200


def test_the_default_tenant_is_a_tenant_like_any_other(api: ModuleType) -> None:
    status, _, body = invoke(
        api, as_principal(ACME_AGENT, "POST", "/v1/turns:score", body=score_body(None))
    )
    assert status == 403 and error_of(body, "forbidden")
    status, _, _ = invoke(api, as_principal(OPS, "POST", "/v1/turns:score", body=score_body(None)))
    assert status == 200  # a principal mapped to "*" acts for every tenant


@pytest.mark.parametrize(("method", "path", "route"), CALL_ROUTES)
def test_another_tenants_call_is_not_found(
    api: ModuleType, method: str, path: str, route: str
) -> None:
    seed(api)
    query = {"tenant_id": "globex"}
    status, _, body = invoke(api, as_principal(ACME_AGENT, method, path, route=route, query=query))
    assert status == 404
    refused = error_of(body, "call_not_found")
    # exactly what a call that does not exist gets: ids do not leak across tenants
    missing_path = path.replace(CALL, "CA-nope")
    status, _, missing = invoke(
        api, as_principal(GLOBEX_AGENT, method, missing_path, route=route, query=query)
    )
    assert status == 404
    assert refused["message"] == missing["error"]["message"].replace("CA-nope", CALL)
    # nothing was done to the call: its owner reads it, not ended
    status, _, state = invoke(
        api,
        as_principal(
            GLOBEX_AGENT, "GET", f"/v1/calls/{CALL}", route="/v1/calls/{call_id}", query=query
        ),
    )
    assert status == 200 and state["ended"] is False
    # the allow twin: its owner (and a principal mapped to every tenant) gets through
    for owner in (GLOBEX_AGENT, OPS):
        status, _, _ = invoke(api, as_principal(owner, method, path, route=route, query=query))
        assert status == 200


def test_a_request_without_an_iam_identity_is_refused(api: ModuleType) -> None:
    seed(api)
    status, _, body = invoke(
        api, as_principal(None, "POST", "/v1/turns:score", body=score_body("globex"))
    )
    assert status == 403 and "no IAM identity" in error_of(body, "forbidden")["message"]
    status, _, body = invoke(
        api,
        as_principal(
            None,
            "GET",
            f"/v1/calls/{CALL}",
            route="/v1/calls/{call_id}",
            query={"tenant_id": "globex"},
        ),
    )
    assert status == 403 and error_of(body, "forbidden")
    # nor through the app without API Gateway's context at all (a direct invoke's request)
    r = asgi(api, "GET", f"/v1/calls/{CALL}", params={"tenant_id": "globex"})
    assert r.status_code == 403 and error_of(r.json(), "forbidden")


def test_a_principal_mapped_to_nothing_acts_for_no_tenant(api: ModuleType) -> None:
    status, _, body = invoke(
        api, as_principal(STRANGER, "POST", "/v1/tools:gate", body=gate_body("acme"))
    )
    assert status == 403 and error_of(body, "forbidden")


# --- fix decisions: the reviewers' set only ---------------------------------------------------


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_the_agents_own_role_cannot_decide_its_fix(api: ModuleType, action: str) -> None:
    route = f"/v1/fixes/{{fix_id}}/{action}"
    body = {"reviewer": "reviewer-alice", "reason": "looks right"}
    for agent in (ACME_AGENT, OPS):  # tenant access, even to every tenant, is not review
        status, _, refused = invoke(
            api, as_principal(agent, "POST", f"/v1/fixes/fix-1/{action}", route=route, body=body)
        )
        assert status == 403
        assert (
            error_of(refused, "forbidden")["message"]
            == "the caller is not one of the fix reviewers"
        )
    # the body's reviewer is not trusted without local mode, with or without an IAM context
    status, _, refused = invoke(
        api, as_principal(None, "POST", f"/v1/fixes/fix-1/{action}", route=route, body=body)
    )
    assert status == 403 and error_of(refused, "forbidden")
    # the allow twin: a reviewer passes authorization (this deployment has no fix workflow)
    status, _, passed = invoke(
        api, as_principal(REVIEWER, "POST", f"/v1/fixes/fix-1/{action}", route=route, body=body)
    )
    assert status == 404 and error_of(passed, "fix_not_found")


# --- the mapping ----------------------------------------------------------------------------


def test_the_mapping_is_read_and_checked_at_cold_start() -> None:
    access = TenantAccess.from_env(
        {"MIRROR_TENANT_PRINCIPALS": json.dumps(PRINCIPALS),
         "MIRROR_FIX_REVIEWERS": json.dumps(REVIEWERS)}
    )  # fmt: skip
    assert access.tenants_of(ACME_AGENT) == {"acme"} and access.tenants_of(STRANGER) == set()
    assert access.may_act_for(OPS, "anything") and not access.may_act_for(None, "acme")
    assert not access.local
    for bad in (
        {"MIRROR_TENANT_PRINCIPALS": "{"},
        {"MIRROR_TENANT_PRINCIPALS": '{"arn:*": "acme"}'},
        {"MIRROR_TENANT_PRINCIPALS": '{"arn:*": []}'},
        {"MIRROR_FIX_REVIEWERS": '"arn:*"'},
        {"MIRROR_API_LOCAL": "maybe"},
    ):
        with pytest.raises(AccessConfigError):
            TenantAccess.from_env(bad)
    local = TenantAccess.from_env({"MIRROR_API_LOCAL": "true"})
    assert local.may_act_for(None, "acme") and local.reviewer(None, "bob") == "bob"
    assert TenantAccess().reviewer(None, "bob") != "bob"  # not local: refused
    # a pattern matches the whole ARN, not a prefix of it
    narrow = TenantAccess(principals={f"arn:aws:iam::{ACCOUNT}:user/a": ("acme",)})
    assert not narrow.may_act_for(f"arn:aws:iam::{ACCOUNT}:user/ab", "acme")
