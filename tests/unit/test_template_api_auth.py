"""template.yaml's Api authorization (issue 13, item 8): the tenant mapping and the reviewers'
set reach the function from their own parameters, local mode is never set, and the agents'
and the reviewers' route permissions are separate policies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mirror.usecases.authz import LOCAL_ENV, PRINCIPALS_ENV, REVIEWERS_ENV, TenantAccess
from mirror_dev.local import load_template
from tests.conftest import TEMPLATE_PATH

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = load_template(TEMPLATE_PATH)
    return loaded


def test_the_api_reads_the_mapping_from_its_parameters(template: dict[str, Any]) -> None:
    env = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert env[PRINCIPALS_ENV] == {"Ref": "TenantPrincipals"}
    assert env[REVIEWERS_ENV] == {"Ref": "FixReviewerPrincipals"}
    assert LOCAL_ENV not in env  # never trust a request without an IAM identity in AWS
    params = template["Parameters"]
    defaults = {
        PRINCIPALS_ENV: params["TenantPrincipals"]["Default"],
        REVIEWERS_ENV: params["FixReviewerPrincipals"]["Default"],
    }
    access = TenantAccess.from_env(defaults)  # the defaults parse, and allow nobody
    assert not access.local and not access.may_act_for("arn:aws:iam::1:user/x", "default")
    json.loads(defaults[PRINCIPALS_ENV])


def _routes(policy: dict[str, Any]) -> list[str]:
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "execute-api:Invoke"
    return [r["Fn::Sub"].rsplit("}", 1)[1] for r in statement["Resource"]]


def test_agents_and_reviewers_get_separate_route_policies(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    agent = _routes(resources["MirrorApiAgentPolicy"])
    reviewer = _routes(resources["MirrorApiReviewerPolicy"])
    assert not any("/v1/fixes/" in r for r in agent)
    assert "/*/POST/v1/turns:score" in agent and "/*/POST/v1/tools:gate" in agent
    assert [r for r in reviewer if r != "/*/GET/openapi.json"] == ["/*/POST/v1/fixes/*"]
