"""template.yaml's post-call resources (reports table and bucket, PostCallReport and its rule,
the FixPr state machine and its task functions, the Api's additions), their exact grants, and
statemachines/fix_pr.asl.json validated with statelint (cfn-lint does not read DefinitionUri
files) and checked against the code it names."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from statelint.config import Config
from statelint.linter import Linter

from mirror.fixes import errors
from mirror.reports import store
from mirror_dev.reports_local import (
    ASL_PATH,
    FIX_PR_DIR,
    FIX_PR_STEPS,
    load_fix_pr_handlers,
    substitute,
)
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit

ASL_TEXT = (REPO_ROOT / ASL_PATH).read_text(encoding="utf-8")
FUNCTIONS = {
    "collect": "FixPrCollectFunction",
    "draft": "FixPrDraftFunction",
    "validate": "FixPrValidateFunction",
    "await_approval": "FixPrAwaitApprovalFunction",
    "open_pr": "FixPrOpenPrFunction",
    "record": "FixPrRecordFunction",
}
REPORTS_ARN = {"Fn::GetAtt": "ReportsTable.Arn"}


def statements(fn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Unconditional statements by Sid."""
    out: dict[str, dict[str, Any]] = {}
    for policy in fn["Properties"]["Policies"]:
        if isinstance(policy, dict) and "Statement" in policy:
            for s in policy["Statement"]:
                out[s["Sid"]] = s
    return out


def conditional(fn: dict[str, Any]) -> dict[str, str]:
    """Sid -> condition of the `!If` statements."""
    out = {}
    for policy in fn["Properties"]["Policies"]:
        if isinstance(policy, dict) and "Fn::If" in policy:
            condition, then, otherwise = policy["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}
            for s in then["Statement"]:
                out[s["Sid"]] = condition
    return out


def actions(statement: dict[str, Any]) -> set[str]:
    a = statement["Action"]
    return {a} if isinstance(a, str) else set(a)


# --- the ASL -----------------------------------------------------------------------------------

DUMMY = {k: f"arn:aws:lambda:us-east-1:123456789012:function:fixpr-{v}"
         for k, v in FIX_PR_STEPS.items()}  # fmt: skip


def lint(definition: str) -> list[str]:
    return list(Linter.validate(definition, Config([], False, False)))


def test_the_asl_file_passes_statelint_after_substitution() -> None:
    assert lint(substitute(ASL_TEXT, DUMMY)) == []


def test_statelint_catches_a_dangling_transition_and_a_bad_state_type() -> None:
    """The validator would fail the build on the mistakes moto accepts (aws-local.md §10)."""
    broken = json.loads(substitute(ASL_TEXT, DUMMY))
    broken["States"]["ValidatePatch"]["Next"] = "WaitForApprovl"
    broken["States"]["Rejected"]["Type"] = "Succeeded"
    problems = " | ".join(lint(json.dumps(broken)))
    assert 'No state found named "WaitForApprovl"' in problems
    assert "Rejected.Type" in problems


def test_every_placeholder_is_a_substitution_and_every_substitution_is_used(
    resources: dict[str, Any],
) -> None:
    placeholders = set(re.findall(r"\$\{(\w+)\}", ASL_TEXT))
    sm = resources["FixPrStateMachine"]["Properties"]
    assert sm["DefinitionUri"] == str(ASL_PATH) and sm["Type"] == "STANDARD"
    subs = sm["DefinitionSubstitutions"]
    assert placeholders == set(subs) == set(FIX_PR_STEPS)
    for key, step in FIX_PR_STEPS.items():
        assert subs[key] == {"Fn::GetAtt": f"{FUNCTIONS[step]}.Arn"}
    grants = statements(resources["FixPrStateMachine"])
    invoke = grants["InvokeFixPrTasks"]
    assert invoke["Action"] == "lambda:InvokeFunction"
    assert invoke["Resource"] == [{"Fn::GetAtt": f"{f}.Arn"} for f in FUNCTIONS.values()]
    # Log delivery is the only other grant (its APIs take no resource ARN).
    assert set(grants) == {"InvokeFixPrTasks", "DeliverExecutionLogs"}
    assert all(a.startswith("logs:") for a in grants["DeliverExecutionLogs"]["Action"])


def test_the_workflow_logs_errors_without_execution_data_and_is_traced(
    resources: dict[str, Any],
) -> None:
    sm = resources["FixPrStateMachine"]["Properties"]
    logging = sm["Logging"]
    assert logging["Level"] == "ERROR" and logging["IncludeExecutionData"] is False
    (destination,) = logging["Destinations"]
    assert destination["CloudWatchLogsLogGroup"]["LogGroupArn"] == {
        "Fn::GetAtt": "FixPrLogGroup.Arn"
    }
    group = resources["FixPrLogGroup"]["Properties"]
    assert group["RetentionInDays"]
    assert group["LogGroupName"]["Fn::Sub"].startswith("/aws/vendedlogs/states/")
    assert sm["Tracing"] == {"Enabled": True}


def test_retry_and_catch_name_the_task_errors() -> None:
    asl = json.loads(ASL_TEXT)
    states = asl["States"]
    assert issubclass(errors.TransientError, errors.FixError)
    for name, state in states.items():
        if state["Type"] != "Task":
            continue
        (retry,) = state["Retry"]
        assert retry["ErrorEquals"][0] == errors.TransientError.__name__, name
        assert "States.ALL" not in retry["ErrorEquals"]  # permanent errors are not retried
        assert (retry["IntervalSeconds"], retry["BackoffRate"], retry["MaxAttempts"]) == (5, 2.0, 4)
        if name != "RecordFailure":
            assert state["Catch"] == [
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "RecordFailure"}
            ], name
    assert states["RecordFailure"]["Next"] == "Failed" and states["Failed"]["Type"] == "Fail"
    assert states["Rejected"]["Type"] == "Succeed"  # a rejection is not a failure
    wait = states["WaitForApproval"]
    assert wait["Resource"] == "arn:aws:states:::lambda:invoke.waitForTaskToken"
    assert wait["Parameters"]["Payload"]["token.$"] == "$$.Task.Token"
    (choice,) = states["ApprovalDecision"]["Choices"]
    assert choice == {"Variable": "$.approval.approved", "BooleanEquals": True,
                      "Next": "OpenPullRequest"}  # fmt: skip
    assert states["ApprovalDecision"]["Default"] == "RecordRejection"


# --- functions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("step", FIX_PR_STEPS.values())
def test_each_task_function_runs_its_own_handler(resources: dict[str, Any], step: str) -> None:
    props = resources[FUNCTIONS[step]]["Properties"]
    assert props["CodeUri"] == f"{FIX_PR_DIR}/" and props["Handler"] == f"app.{step}"
    assert load_fix_pr_handlers(REPO_ROOT)[step].__name__ == step  # app.<step> is that step's
    env = props["Environment"]["Variables"]
    assert env["REPORTS_TABLE"] == {"Ref": "ReportsTable"}
    assert env["REPO_TOKEN_SECRET"] == {"Ref": "RepoTokenSecretArn"}


EXPECTED_TABLE_GRANTS = {
    "collect": {"FixRecordCreate": ({"dynamodb:PutItem"}, REPORTS_ARN),
                "ReportsByAgentPattern": ({"dynamodb:Query"},
                                          {"Fn::Sub": "${ReportsTable.Arn}/index/ByAgentPattern"})},
    "draft": {},
    "validate": {},
    "await_approval": {"FixRecordAwaitApproval": ({"dynamodb:GetItem", "dynamodb:UpdateItem"},
                                                  REPORTS_ARN)},
    "open_pr": {"FixRecordRead": ({"dynamodb:GetItem"}, REPORTS_ARN)},
    "record": {"FixRecordFinish": ({"dynamodb:GetItem", "dynamodb:PutItem",
                                    "dynamodb:UpdateItem"}, REPORTS_ARN)},
}  # fmt: skip
REPO_STEPS = {"draft", "validate", "open_pr"}


@pytest.mark.parametrize("step", FIX_PR_STEPS.values())
def test_task_grants_are_exact(resources: dict[str, Any], step: str) -> None:
    fn = resources[FUNCTIONS[step]]
    got = {sid: (actions(s), s["Resource"]) for sid, s in statements(fn).items()}
    assert got == EXPECTED_TABLE_GRANTS[step]
    expected = {"RepoTokenSecret": "HasRepoTokenSecret"} if step in REPO_STEPS else {}
    if step == "draft":  # only Draft asks an LLM
        expected |= {"LlmKeySecret": "HasLlmSecret", "BedrockJudgeModel": "HasBedrockModel"}
    assert conditional(fn) == expected


def test_post_call_report_function(resources: dict[str, Any]) -> None:
    fn = resources["PostCallReportFunction"]
    props = fn["Properties"]
    assert (props["CodeUri"], props["Handler"]) == (
        "functions/post_call_report/",
        "app.lambda_handler",
    )
    assert (REPO_ROOT / "functions/post_call_report/app.py").is_file()
    env = props["Environment"]["Variables"]
    assert env["REPORTS_TABLE"] == {"Ref": "ReportsTable"}
    assert env["REPORTS_BUCKET"] == {"Ref": "ReportsBucket"}
    assert env["FIX_STATE_MACHINE_ARN"] == {
        "Fn::If": ["HasFixRepo", {"Ref": "FixPrStateMachine"}, ""]
    }
    assert env["FIX_THRESHOLD"] == {"Ref": "FixThreshold"}
    assert props["DeadLetterQueue"]["TargetArn"] == {
        "Fn::GetAtt": "PostCallReportDeadLetterQueue.Arn"
    }
    got = {sid: (actions(s), s["Resource"]) for sid, s in statements(fn).items()}
    assert got == {
        "CallStateTableRead": ({"dynamodb:GetItem", "dynamodb:Query"},
                               {"Fn::GetAtt": "CallStateTable.Arn"}),
        "ReportsTableItems": ({"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
                              REPORTS_ARN),
        "TranscriptObjects": ({"s3:PutObject"}, {"Fn::Sub": "${ReportsBucket.Arn}/transcripts/*"}),
        "StartFixWorkflow": ({"states:StartExecution"}, {"Ref": "FixPrStateMachine"}),
    }  # fmt: skip
    assert conditional(fn) == {
        "LlmKeySecret": "HasLlmSecret",
        "BedrockJudgeModel": "HasBedrockModel",
    }
    rule = props["Events"]["CallEnded"]
    assert rule["Type"] == "EventBridgeRule"
    assert rule["Properties"]["EventBusName"] == {"Ref": "MirrorEventBus"}
    assert rule["Properties"]["Pattern"] == {
        "source": ["mirror.bridge", "mirror.api"], "detail-type": ["CallEnded"]
    }  # fmt: skip


def test_reports_table_and_bucket(resources: dict[str, Any]) -> None:
    props = resources["ReportsTable"]["Properties"]
    assert [k["AttributeName"] for k in props["KeySchema"]] == [store.PK, store.SK]
    (gsi,) = props["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == store.GSI_NAME
    assert [k["AttributeName"] for k in gsi["KeySchema"]] == [store.GSI_HASH, store.GSI_RANGE]
    assert props["TimeToLiveSpecification"] == {
        "AttributeName": store.TTL_ATTRIBUTE,
        "Enabled": True,
    }
    assert props["SSESpecification"] == {"SSEEnabled": True}
    assert resources["ReportsTable"]["DeletionPolicy"] == "Retain"
    bucket = resources["ReportsBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    (deny,) = resources["ReportsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }


def test_api_function_decides_fixes_and_publishes_call_ended(resources: dict[str, Any]) -> None:
    api = resources["ApiFunction"]
    env = api["Properties"]["Environment"]["Variables"]
    assert env["REPORTS_TABLE"] == {"Ref": "ReportsTable"}
    assert env["EVENT_BUS_NAME"] == {"Ref": "MirrorEventBus"}
    s = statements(api)
    assert actions(s["FixRecordDecisions"]) == {"dynamodb:GetItem", "dynamodb:UpdateItem"}
    assert s["FixRecordDecisions"]["Resource"] == REPORTS_ARN
    # task tokens of service integrations cannot be scoped: the only "*" grant, and only these
    assert actions(s["DeliverFixDecisions"]) == {"states:SendTaskSuccess", "states:SendTaskFailure"}
    assert s["PutCallEvents"] == {"Sid": "PutCallEvents", "Effect": "Allow",
                                  "Action": "events:PutEvents",
                                  "Resource": {"Fn::GetAtt": "MirrorEventBus.Arn"}}  # fmt: skip
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"])
              for e in api["Properties"]["Events"].values()}  # fmt: skip
    assert {("POST", "/v1/fixes/{fix_id}/approve"), ("POST", "/v1/fixes/{fix_id}/reject")} <= routes


def test_parameters_default_to_no_fix_workflow(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    assert params["RepoName"]["Default"] == "" and params["RepoTokenSecretArn"]["Default"] == ""
    assert template["Conditions"]["HasFixRepo"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "RepoName"}, ""]}]
    }
    assert params["FixThreshold"]["Default"] == 3 and params["FixWindowDays"]["Default"] == 7
