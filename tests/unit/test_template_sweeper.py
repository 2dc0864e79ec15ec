"""template.yaml's CallEndedSweeper: its schedule, log group, least-privilege grants and the
sparse pending index it reads, checked against the names the code uses."""

from __future__ import annotations

from typing import Any

import pytest

from mirror.events import PENDING_FIELD, PENDING_INDEX, PENDING_SINCE_FIELD, PENDING_SOURCE_FIELD
from mirror.usecases.sweep import SweepEvent, SweepSettings
from mirror_dev.local import load_template
from tests.conftest import REPO_ROOT, TEMPLATE_PATH
from tests.support.handlers import load_event

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    resources: dict[str, Any] = load_template(TEMPLATE_PATH)["Resources"]
    return resources


def test_the_call_table_has_the_sparse_pending_index(resources: dict[str, Any]) -> None:
    props = resources["CallStateTable"]["Properties"]
    types = {d["AttributeName"]: d["AttributeType"] for d in props["AttributeDefinitions"]}
    [index] = props["GlobalSecondaryIndexes"]
    assert index["IndexName"] == PENDING_INDEX
    assert [(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]] == [
        (PENDING_SOURCE_FIELD, "HASH"),
        (PENDING_SINCE_FIELD, "RANGE"),
    ]
    assert (types[PENDING_SOURCE_FIELD], types[PENDING_SINCE_FIELD]) == ("S", "N")
    assert index["Projection"] == {"ProjectionType": "ALL"}  # the sweeper rebuilds from it


def test_the_sweeper_runs_on_a_schedule_with_its_own_log_group(resources: dict[str, Any]) -> None:
    props = resources["CallEndedSweeperFunction"]["Properties"]
    assert (props["CodeUri"], props["Handler"]) == (
        "functions/call_ended_sweeper/",
        "app.lambda_handler",
    )
    assert (REPO_ROOT / "functions/call_ended_sweeper/app.py").is_file()
    assert props["LoggingConfig"]["LogGroup"] == {"Ref": "CallEndedSweeperLogGroup"}
    assert resources["CallEndedSweeperLogGroup"]["Properties"]["RetentionInDays"] == 30
    [schedule] = props["Events"].values()
    assert schedule["Type"] == "ScheduleV2"
    assert schedule["Properties"]["ScheduleExpression"] == "rate(5 minutes)"
    env = props["Environment"]["Variables"]
    assert env["EVENT_BUS_NAME"] == {"Ref": "MirrorEventBus"}
    settings = SweepSettings.from_env(env)  # the template's values parse
    assert settings.min_age_s == 300 and settings.limit == 200
    SweepEvent.parse(load_event("call_ended_sweeper.json"))  # the sample event is one


def test_the_sweeper_grants_are_exact(resources: dict[str, Any]) -> None:
    fn = resources["CallEndedSweeperFunction"]
    [policy] = fn["Properties"]["Policies"]
    got = {s["Sid"]: s for s in policy["Statement"]}
    assert set(got) == {"PendingIndexQuery", "PendingMarkClear", "CallEndedPublish"}
    assert got["PendingIndexQuery"]["Action"] == "dynamodb:Query"
    assert got["PendingIndexQuery"]["Resource"] == {
        "Fn::Sub": "${CallStateTable.Arn}/index/" + PENDING_INDEX
    }
    clear = got["PendingMarkClear"]
    assert clear["Action"] == "dynamodb:UpdateItem"
    assert clear["Resource"] == {"Fn::GetAtt": "CallStateTable.Arn"}
    attrs = clear["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"]
    assert set(attrs) == {"pk", "sk", PENDING_FIELD, PENDING_SOURCE_FIELD, PENDING_SINCE_FIELD}
    assert got["CallEndedPublish"]["Action"] == "events:PutEvents"
    assert got["CallEndedPublish"]["Resource"] == {"Fn::GetAtt": "MirrorEventBus.Arn"}


def test_bad_sweeper_settings_fail_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="CALL_ENDED_SWEEP_LIMIT"):
        SweepSettings.from_env({"CALL_ENDED_SWEEP_LIMIT": "0"})
    with pytest.raises(ValueError, match="CALL_ENDED_SWEEP_MIN_AGE_S"):
        SweepSettings.from_env({"CALL_ENDED_SWEEP_MIN_AGE_S": "soon"})
    assert SweepSettings.from_env({}) == SweepSettings()
