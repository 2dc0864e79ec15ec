"""Running the post-call side on moto: tables and bucket from template.yaml, the FixPr state
machine from its real ASL file, and the task functions' real handlers run in-process.

For the tests and the local run (aws-local.md §6.3, §6.5). moto executes the ASL
(`stepfunctions.execute_state_machine`) and its "simple" Lambda backend receives every Invoke
the interpreter makes; `in_process_lambdas` routes those Invokes to the handlers from this
checkout: the handler gets the JSON-decoded payload and a small context, its return value is
the JSON payload, and an exception becomes Lambda's error document with
`x-amz-function-error: Unhandled`, so Retry/Catch see the exception's class name as on AWS.

moto internals are used here (pinned `moto==5.2.*`): `LambdaSimpleBackend.invoke`,
`MockAWS._mocks_active`, `default_user_config`; a test fails loudly if they move.
Never imported by a Lambda function (the layer does not ship the development package).
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror_dev.lambda_context import LambdaContext
from mirror_dev.local import import_file, load_template

REPORTS_TABLE_RESOURCE = "ReportsTable"
FIX_PR_STEPS: dict[str, str] = {
    "CollectFunctionArn": "collect",
    "DraftFunctionArn": "draft",
    "ValidateFunctionArn": "validate",
    "AwaitApprovalFunctionArn": "await_approval",
    "OpenPrFunctionArn": "open_pr",
    "RecordFunctionArn": "record",
}
"""The ASL's DefinitionSubstitutions and the handler in functions/fix_pr/app.py behind each."""
ASL_PATH = Path("statemachines/fix_pr.asl.json")
FIX_PR_DIR = Path("functions/fix_pr")
POST_CALL_REPORT_PATH = Path("functions/post_call_report/app.py")
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}

Handler = Callable[[Any, Any], Any]


# --- tables ------------------------------------------------------------------------------------


def reports_table_properties(template: Path) -> dict[str, Any]:
    resources = load_template(template).get("Resources", {})
    if REPORTS_TABLE_RESOURCE not in resources:
        raise ValueError(f"{template} defines no {REPORTS_TABLE_RESOURCE}")
    return resources[REPORTS_TABLE_RESOURCE]["Properties"]


def create_reports_table(client: Any, table_name: str, props: Mapping[str, Any]) -> None:
    """Keys, GSIs, billing and TTL as the template's `ReportsTable` declares them."""
    kwargs: dict[str, Any] = {
        "TableName": table_name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    client.create_table(**kwargs)
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
        )


# --- moto --------------------------------------------------------------------------------------


@contextmanager
def moto_for_workflows() -> Iterator[None]:
    """moto with ASL execution and the simple Lambda backend. Inside an active in-process mock
    (a test, the demo) it only switches those two settings on, keeping the mock's data;
    otherwise it starts one for the block."""
    from unittest.mock import patch

    from moto import mock_aws
    from moto.core.config import default_user_config
    from moto.core.models import MockAWS

    with patch.dict(default_user_config, MOTO_CONFIG):  # type: ignore[arg-type]
        if MockAWS._mocks_active:
            yield
        else:
            with mock_aws():
                yield


@contextmanager
def in_process_lambdas(handlers: Mapping[str, Handler]) -> Iterator[list[tuple[str, Any]]]:
    """Route moto Lambda Invokes of the named functions to `handlers` (function name →
    handler); yields the (function name, event) of every routed invoke, in order."""
    from moto.awslambda_simple.models import LambdaSimpleBackend

    calls: list[tuple[str, Any]] = []
    original = LambdaSimpleBackend.invoke

    def invoke(
        self: Any, function_name: str, qualifier: str | None, body: Any, headers: Any,
        response_headers: Any,
    ) -> Any:  # fmt: skip
        fn = self.get_function(function_name, qualifier)
        handler = handlers.get(fn.function_name)
        if handler is None:
            return original(self, function_name, qualifier, body, headers, response_headers)
        event = json.loads(body) if body else {}
        calls.append((fn.function_name, event))
        context = LambdaContext(
            fn.function_name, uuid.uuid4().hex, fn.function_arn, remaining_ms=60_000
        )
        try:
            result = handler(event, context)
        except Exception as e:  # noqa: BLE001 - becomes the Lambda error document, as on AWS
            response_headers["x-amz-function-error"] = "Unhandled"
            doc = {"errorMessage": str(e), "errorType": type(e).__name__, "stackTrace": []}
            return json.dumps(doc).encode()
        return json.dumps(result).encode()

    LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        LambdaSimpleBackend.invoke = original  # type: ignore[method-assign]


# --- the FixPr stack ---------------------------------------------------------------------------


def load_fix_pr_handlers(root: Path) -> dict[str, Handler]:
    """step → its handler in functions/fix_pr/app.py in the checkout at `root`."""
    module = import_file(root / FIX_PR_DIR / "app.py", "fix_pr_app")
    return {step: getattr(module, step) for step in FIX_PR_STEPS.values()}


def substitute(definition: str, values: Mapping[str, str]) -> str:
    """DefinitionSubstitutions as CloudFormation applies them; every placeholder must be set."""
    for key, value in values.items():
        definition = definition.replace("${" + key + "}", value)
    if "${" in definition:
        start = definition.index("${")
        raise ValueError(f"unsubstituted placeholder {definition[start : start + 40]!r}")
    return definition


@dataclass(frozen=True)
class FixPrStack:
    state_machine_arn: str
    functions: dict[str, str]
    """step → Lambda function name."""


def deploy_fix_pr(
    session: Any, root: Path, *, prefix: str = "mirror-fixpr", region: str = "us-east-1"
) -> FixPrStack:
    """Create the task functions and the state machine (the real ASL) in moto."""
    iam = session.client("iam", region_name=region)
    lam = session.client("lambda", region_name=region)
    sfn = session.client("stepfunctions", region_name=region)
    role = iam.create_role(
        RoleName=f"{prefix}-role",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        readme = "handlers run in-process (mirror_dev.reports_local.in_process_lambdas)"
        z.writestr("README", readme)
    arns: dict[str, str] = {}
    names: dict[str, str] = {}
    for key, step in FIX_PR_STEPS.items():
        name = f"{prefix}-{step.replace('_', '-')}"
        arns[key] = lam.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role,
            Handler=f"app.{step}",
            Code={"ZipFile": buf.getvalue()},
        )["FunctionArn"]
        names[step] = name
    definition = substitute((root / ASL_PATH).read_text(encoding="utf-8"), arns)
    arn = sfn.create_state_machine(name=prefix, definition=definition, roleArn=role)[
        "stateMachineArn"
    ]
    return FixPrStack(arn, names)


def handlers_by_function(stack: FixPrStack, handlers: Mapping[str, Handler]) -> dict[str, Handler]:
    return {stack.functions[step]: h for step, h in handlers.items()}
