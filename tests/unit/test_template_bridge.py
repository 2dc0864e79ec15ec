"""The bridge's container and infrastructure: bridge/Dockerfile and its resources in template.yaml.

There is no Docker engine or AWS account here, so these read the files and pin what must hold:
what a change could silently break (the arm64 platform, the WebSocket idle timeout, the health
check path, the port wiring across four places, least privilege) and what cfn-lint cannot know.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit

DOCKERFILE = REPO_ROOT / "bridge" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / "bridge" / "Dockerfile.dockerignore"
MAIN_PY = REPO_ROOT / "bridge" / "main.py"
SETTINGS_PY = REPO_ROOT / "bridge" / "mirror_bridge" / "settings.py"

CONTAINER = "bridge"


# ------------------------------------------------------------------------------------ helpers


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return out


def instruction_args(name: str) -> list[str]:
    return [args for word, args in dockerfile_instructions() if word == name]


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form CMD/HEALTHCHECK CMD, as argv."""
    import json

    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def cmd_argv() -> list[str]:
    cmds = instruction_args("CMD")
    assert len(cmds) == 1, "one CMD"
    return exec_form(cmds[0])


def flag_value(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def props(resources: dict[str, Any], name: str) -> dict[str, Any]:
    assert name in resources, f"template.yaml has no {name}"
    return resources[name]["Properties"]


def container(resources: dict[str, Any]) -> dict[str, Any]:
    defs = props(resources, "BridgeTaskDefinition")["ContainerDefinitions"]
    assert [d["Name"] for d in defs] == [CONTAINER]
    return defs[0]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def getatt(name: str) -> dict[str, str]:
    return {"Fn::GetAtt": name}


# --------------------------------------------------------------------------------- Dockerfile


def test_base_image_is_the_multi_arch_python_3_12_slim_tag() -> None:
    froms = instruction_args("FROM")
    assert len(froms) == 1, "a single stage: the image is what runs"
    words = froms[0].split()
    # A --platform here would pin the build to one architecture (Fargate runs ARM64).
    assert not any(w.startswith("--platform") for w in words)
    assert words == ["python:3.12-slim"], "the official image: multi-arch, arm64 included"


def test_runs_as_a_non_root_user_created_in_the_image() -> None:
    steps = dockerfile_instructions()
    users = [(i, args) for i, (word, args) in enumerate(steps) if word == "USER"]
    assert users, "no USER: the service would run as root"
    last_user_at, user = users[-1]
    uid = user.split(":")[0]
    assert uid not in ("root", "0")
    # Nothing after the switch runs as root again, and the CMD runs as that user.
    assert all(word != "RUN" for word, _ in steps[last_user_at:])
    assert max(i for i, (word, _) in enumerate(steps) if word == "CMD") > last_user_at
    created = " ".join(instruction_args("RUN"))
    if uid.isdigit():
        assert re.search(rf"useradd\b[^&;]*--uid {uid}\b", created), f"uid {uid} never created"
    else:
        assert re.search(rf"useradd\b[^&;]*\b{re.escape(uid)}\b", created)


def test_python_environment_and_no_secrets_baked_in() -> None:
    env = " ".join(instruction_args("ENV"))
    assert re.search(r"\bPYTHONDONTWRITEBYTECODE=1\b", env)
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    for word in ("ENV", "ARG"):
        for args in instruction_args(word):
            assert not re.search(r"(TOKEN|SECRET|PASSWORD|AUTH|_KEY)", args, re.I), args


def test_dependencies_come_from_the_bridge_requirements_without_pip_cache() -> None:
    copies = instruction_args("COPY")
    assert any(c.split()[0] == "bridge/requirements.txt" for c in copies)
    pip_runs = [r for r in instruction_args("RUN") if "pip install" in r]
    assert pip_runs
    for run in pip_runs:
        assert "--no-cache-dir" in run
        assert "-r " in run


def test_the_image_carries_the_core_library_and_the_bridge() -> None:
    sources = {c.split()[0] for c in instruction_args("COPY")}
    assert {"shared/mirror", "bridge/mirror_bridge", "bridge/main.py"} <= sources


def test_every_copy_source_is_sent_to_the_builder() -> None:
    """The context is the repository root, narrowed by an allow-list named after the Dockerfile
    (BuildKit reads it instead of a root .dockerignore): each COPY source must be let through."""
    allowed = [
        line[1:].strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    ]
    patterns = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()]
    assert "*" in patterns, "the ignore file is an allow-list"
    for copy in instruction_args("COPY"):
        source = copy.split()[0]
        assert source in allowed, f"{source} is not in {DOCKERIGNORE.name}'s allow-list"
    assert ".venv" not in allowed and ".git" not in allowed


def test_uvicorn_serves_the_main_factory_behind_the_proxy() -> None:
    argv = cmd_argv()
    assert argv[0] == "uvicorn"
    assert argv[1] == "main:build_app" and "--factory" in argv
    assert "--proxy-headers" in argv
    assert flag_value(argv, "--host") == "0.0.0.0"
    assert 5 <= float(flag_value(argv, "--ws-ping-interval")) <= 60
    assert float(flag_value(argv, "--ws-ping-timeout")) > 0
    # The factory uvicorn is told to serve exists in main.py.
    tree = ast.parse(MAIN_PY.read_text(encoding="utf-8"))
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "build_app" in functions


def test_healthcheck_gets_healthz_on_the_served_port() -> None:
    checks = instruction_args("HEALTHCHECK")
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD ")
    assert command, "HEALTHCHECK NONE or no command"
    assert "--interval=" in options and "--timeout=" in options
    port = flag_value(cmd_argv(), "--port")
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(exec_form(command))


# ------------------------------------------------------------------------------- port wiring


def test_one_container_port_everywhere(resources: dict[str, Any]) -> None:
    port = int(flag_value(cmd_argv(), "--port"))
    assert [int(p.split("/")[0]) for p in instruction_args("EXPOSE")] == [port]
    mappings = container(resources)["PortMappings"]
    assert [m["ContainerPort"] for m in mappings] == [port]
    assert props(resources, "BridgeTargetGroup")["Port"] == port
    [lb] = props(resources, "BridgeService")["LoadBalancers"]
    assert lb["ContainerName"] == CONTAINER and lb["ContainerPort"] == port
    assert lb["TargetGroupArn"] == ref("BridgeTargetGroup")
    [ingress] = props(resources, "BridgeTaskSecurityGroup")["SecurityGroupIngress"]
    assert (ingress["FromPort"], ingress["ToPort"]) == (port, port)
    health = " ".join(container(resources)["HealthCheck"]["Command"])
    assert f"http://127.0.0.1:{port}/healthz" in health


def test_app_keep_alive_outlasts_the_load_balancer_idle_timeout(
    resources: dict[str, Any],
) -> None:
    """Otherwise the ALB may reuse a connection the app has just closed, and answers 502."""
    attrs = {
        a["Key"]: a["Value"]
        for a in props(resources, "BridgeLoadBalancer")["LoadBalancerAttributes"]
    }
    keep_alive = int(flag_value(cmd_argv(), "--timeout-keep-alive"))
    assert keep_alive > int(attrs["idle_timeout.timeout_seconds"])


# ----------------------------------------------------------------------------- the task and service


def test_task_definition_is_fargate_arm64(resources: dict[str, Any]) -> None:
    task = props(resources, "BridgeTaskDefinition")
    assert task["RuntimePlatform"] == {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"}
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    assert task["NetworkMode"] == "awsvpc"
    assert task["ExecutionRoleArn"] == getatt("BridgeExecutionRole.Arn")
    assert task["TaskRoleArn"] == getatt("BridgeTaskRole.Arn")
    assert container(resources)["Image"] == ref("BridgeImageUri")


def test_container_environment_names_this_stacks_resources(resources: dict[str, Any]) -> None:
    c = container(resources)
    env = {e["Name"]: e["Value"] for e in c["Environment"]}
    assert env["CALL_TABLE"] == ref("CallStateTable")
    assert env["SCORE_TURN_FUNCTION"] == ref("ScoreTurnFunction")
    assert env["GATE_TOOL_FUNCTION"] == ref("GateToolFunction")
    assert env["GENERATE_CORRECTION_FUNCTION"] == ref("GenerateCorrectionFunction")
    assert env["EVENT_BUS_NAME"] == ref("MirrorEventBus")
    assert env["MIRROR_STAGE"] == ref("Stage")
    assert env["LOG_LEVEL"] == ref("LogLevel")
    assert {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_LOG_LEVEL"} <= env.keys()
    # Public URLs are https on the configured host (Plivo signs them; never derived).
    for branch in env["PUBLIC_BASE_URL"]["Fn::If"][1:]:
        assert branch["Fn::Sub"].startswith("https://")
    # The auth token is an ECS secret, never a plain variable.
    assert "PLIVO_AUTH_TOKEN" not in env
    secrets = {s["Name"]: s["ValueFrom"] for s in c["Secrets"]}
    assert secrets == {"PLIVO_AUTH_TOKEN": ref("PlivoAuthTokenSecretArn")}
    # The REST Speak fallback (one-way streams) needs the account's Auth ID beside the token.
    assert env["PLIVO_AUTH_ID"] == ref("PlivoAuthId")


def test_container_environment_satisfies_the_bridge_settings(
    resources: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bridge validates its settings at start-up: what the task gives it must pass."""
    spec = importlib.util.spec_from_file_location("_bridge_settings_under_test", SETTINGS_PY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look the module up
    spec.loader.exec_module(module)
    c = container(resources)
    environ = {
        e["Name"]: "" if isinstance(e["Value"], dict) else e["Value"] for e in c["Environment"]
    }
    environ.update({s["Name"]: "a-token" for s in c["Secrets"]})
    environ["PUBLIC_BASE_URL"] = "https://bridge.example.com"
    environ["SIGNATURE_MODE"] = "enforce"  # the parameter's default
    settings = module.Settings.from_env(environ)
    assert settings.answer_url == "https://bridge.example.com/plivo/answer"
    assert settings.stream_url == "wss://bridge.example.com/plivo/stream"


def test_signature_mode_parameter_cannot_turn_checks_off(template: dict[str, Any]) -> None:
    param = template["Parameters"]["BridgeSignatureMode"]
    assert param["Default"] == "enforce"
    assert "off" not in param["AllowedValues"]


def test_service_runs_in_private_subnets_with_a_circuit_breaker(
    resources: dict[str, Any],
) -> None:
    service = resources["BridgeService"]
    p = service["Properties"]
    assert p["LaunchType"] == "FARGATE"
    assert p["Cluster"] == ref("BridgeCluster")
    assert p["TaskDefinition"] == ref("BridgeTaskDefinition")
    assert p["DesiredCount"] == ref("BridgeDesiredCount")
    vpc = p["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert vpc["Subnets"] == ref("PrivateSubnetIds")
    assert vpc["AssignPublicIp"] == "DISABLED"
    assert vpc["SecurityGroups"] == [getatt("BridgeTaskSecurityGroup.GroupId")]
    breaker = p["DeploymentConfiguration"]["DeploymentCircuitBreaker"]
    assert breaker == {"Enable": True, "Rollback": True}
    # A service may only use a target group already attached to a listener.
    assert "BridgeHttpsListener" in as_list(service.get("DependsOn", []))


def test_logs_go_to_a_log_group_with_retention(resources: dict[str, Any]) -> None:
    retention = props(resources, "BridgeLogGroup")["RetentionInDays"]
    assert isinstance(retention, int) and 1 <= retention <= 365
    logging = container(resources)["LogConfiguration"]
    assert logging["LogDriver"] == "awslogs"
    assert logging["Options"]["awslogs-group"] == ref("BridgeLogGroup")


# ------------------------------------------------------------------------- load balancer


def test_load_balancer_is_public_with_a_websocket_idle_timeout(resources: dict[str, Any]) -> None:
    lb = props(resources, "BridgeLoadBalancer")
    assert lb["Type"] == "application"
    assert lb["Scheme"] == "internet-facing"
    assert lb["Subnets"] == ref("PublicSubnetIds")
    assert lb["SecurityGroups"] == [getatt("BridgeLoadBalancerSecurityGroup.GroupId")]
    attrs = {a["Key"]: a["Value"] for a in lb["LoadBalancerAttributes"]}
    # A Plivo stream lasts the whole call.
    assert int(attrs["idle_timeout.timeout_seconds"]) >= 3600


def test_target_group_checks_healthz_on_ip_targets(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    tg = props(resources, "BridgeTargetGroup")
    assert tg["TargetType"] == "ip"  # awsvpc tasks register by IP
    assert tg["HealthCheckPath"] == "/healthz"
    assert tg["Matcher"] == {"HttpCode": "200"}
    assert tg["Protocol"] == "HTTP" and tg["ProtocolVersion"] == "HTTP1"  # WebSocket upgrades
    attrs = {a["Key"]: a["Value"] for a in tg["TargetGroupAttributes"]}
    delay = attrs["deregistration_delay.timeout_seconds"]
    assert delay == ref("BridgeDrainSeconds")
    param = template["Parameters"]["BridgeDrainSeconds"]
    assert 0 <= param["MinValue"] <= param["Default"] <= param["MaxValue"] <= 3600
    assert param["Default"] >= 60, "a deployment should not cut every live call at once"


def test_https_listener_forwards_and_http_only_redirects(resources: dict[str, Any]) -> None:
    https = props(resources, "BridgeHttpsListener")
    assert (https["Port"], https["Protocol"]) == (443, "HTTPS")
    assert https["Certificates"] == [{"CertificateArn": ref("CertificateArn")}]
    assert https["DefaultActions"] == [
        {"Type": "forward", "TargetGroupArn": ref("BridgeTargetGroup")}
    ]
    redirect = resources["BridgeHttpRedirectListener"]
    assert redirect["Condition"] == "BridgeHttpRedirect"  # DeployBridge and HttpRedirectEnabled
    [action] = redirect["Properties"]["DefaultActions"]
    assert action["Type"] == "redirect"
    assert action["RedirectConfig"]["Protocol"] == "HTTPS"
    assert action["RedirectConfig"]["Port"] == "443"
    # Nothing else listens in the clear.
    listeners = [r for r in resources.values() if r["Type"].endswith("::Listener")]
    assert len(listeners) == 2


def test_security_groups_admit_plivo_to_the_alb_and_only_the_alb_to_tasks(
    resources: dict[str, Any],
) -> None:
    alb_rules = props(resources, "BridgeLoadBalancerSecurityGroup")["SecurityGroupIngress"]
    https_rule, http_rule = alb_rules
    assert https_rule["CidrIp"] == "0.0.0.0/0"
    assert (https_rule["FromPort"], https_rule["ToPort"]) == (443, 443)
    cond, when_on, when_off = http_rule["Fn::If"]
    assert cond == "HttpRedirectEnabled" and when_off == ref("AWS::NoValue")
    assert (when_on["FromPort"], when_on["ToPort"]) == (80, 80)
    [task_rule] = props(resources, "BridgeTaskSecurityGroup")["SecurityGroupIngress"]
    assert task_rule["SourceSecurityGroupId"] == getatt("BridgeLoadBalancerSecurityGroup.GroupId")
    assert not {"CidrIp", "CidrIpv6", "SourcePrefixListId"} & task_rule.keys()
    # No separate ingress resource opens the tasks some other way.
    assert not [r for r in resources.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"]


# ------------------------------------------------------------------------------------ IAM


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for policy in role.get("Policies", []) for s in policy["PolicyDocument"]["Statement"]]


def _key(value: Any) -> str:
    return repr(sorted(value.items())) if isinstance(value, dict) else str(value)


def test_task_role_grants_exactly_the_allowed_actions_on_the_allowed_resources(
    resources: dict[str, Any],
) -> None:
    role = props(resources, "BridgeTaskRole")
    assert "ManagedPolicyArns" not in role
    granted = {
        (frozenset(as_list(s["Action"])), frozenset(_key(r) for r in as_list(s["Resource"])))
        for s in _statements(role)
    }
    expected = {
        (
            frozenset({"lambda:InvokeFunction"}),
            frozenset(
                _key(getatt(f"{fn}.Arn"))
                for fn in ("ScoreTurnFunction", "GateToolFunction", "GenerateCorrectionFunction")
            ),
        ),
        (
            frozenset(
                f"dynamodb:{a}" for a in ("GetItem", "PutItem", "UpdateItem", "Query", "DeleteItem")
            ),
            frozenset({_key(getatt("CallStateTable.Arn"))}),
        ),
        (frozenset({"events:PutEvents"}), frozenset({_key(getatt("MirrorEventBus.Arn"))})),
        # Polly's SynthesizeSpeech takes no resource ARN: "*" is the only possible scope.
        (frozenset({"polly:SynthesizeSpeech"}), frozenset({"*"})),
    }
    assert granted == expected
    for s in _statements(role):
        assert s["Effect"] == "Allow"
        assert "NotAction" not in s and "NotResource" not in s
        assert not any("*" in a for a in as_list(s["Action"]))


def test_task_role_trusts_only_ecs_tasks_of_this_account(resources: dict[str, Any]) -> None:
    [trust] = props(resources, "BridgeTaskRole")["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"]["StringEquals"]["aws:SourceAccount"] == ref("AWS::AccountId")


def test_execution_role_pulls_logs_and_reads_only_the_plivo_secret(
    resources: dict[str, Any],
) -> None:
    role = props(resources, "BridgeExecutionRole")
    managed = role["ManagedPolicyArns"]
    assert len(managed) == 1
    assert managed[0]["Fn::Sub"].endswith(
        ":iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
    )
    [secret] = _statements(role)
    assert secret["Action"] == "secretsmanager:GetSecretValue"
    assert secret["Resource"] == {"Fn::Sub": "${PlivoAuthTokenSecretArn}"}


# ----------------------------------------------------------------------------- autoscaling


def test_service_autoscales_on_cpu_between_the_count_parameters(resources: dict[str, Any]) -> None:
    target = props(resources, "BridgeScalableTarget")
    assert target["ServiceNamespace"] == "ecs"
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    assert target["ResourceId"] == {"Fn::Sub": "service/${BridgeCluster}/${BridgeService.Name}"}
    assert target["MinCapacity"] == ref("BridgeDesiredCount")
    assert target["MaxCapacity"] == ref("BridgeMaxCount")
    policies = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"
        and r["Properties"].get("ScalingTargetId") == ref("BridgeScalableTarget")
    ]
    assert policies
    tracking = [p["TargetTrackingScalingPolicyConfiguration"] for p in policies]
    metrics = {t["PredefinedMetricSpecification"]["PredefinedMetricType"] for t in tracking}
    assert "ECSServiceAverageCPUUtilization" in metrics
    assert all(0 < t["TargetValue"] < 100 for t in tracking)


# ------------------------------------------------------------------------ parameters, outputs


def test_the_bridge_is_optional_and_complete_when_deployed(template: dict[str, Any]) -> None:
    """`sam deploy` with samconfig.toml alone gives the functions, the API and the post-call
    workflow; a BridgeImageUri adds the bridge, and then a rule demands what it needs."""
    params = template["Parameters"]
    assert all("Default" in p for p in params.values()), "a parameter samconfig.toml lacks"
    assert params["BridgeImageUri"]["Default"] == ""
    conditions = template["Conditions"]
    assert conditions["DeployBridge"] == {"Fn::Not": [{"Fn::Equals": [ref("BridgeImageUri"), ""]}]}
    assert conditions["BridgeHttpRedirect"] == {
        "Fn::And": [{"Condition": "DeployBridge"}, {"Condition": "HttpRedirectEnabled"}]
    }
    bridge = {n: r for n, r in template["Resources"].items() if n.startswith("Bridge")}
    assert len(bridge) == 14
    for name, resource in bridge.items():
        assert resource.get("Condition") in ("DeployBridge", "BridgeHttpRedirect"), name
    for name in ("BridgeLoadBalancerDnsName", "PlivoAnswerUrl", "BridgeClusterName",
                 "BridgeServiceName", "BridgeLogGroupName"):  # fmt: skip
        assert template["Outputs"][name]["Condition"] == "DeployBridge", name
    rule = template["Rules"]["BridgeParameters"]
    assert rule["RuleCondition"] == conditions["DeployBridge"]
    asserted = json.dumps(rule["Assertions"])
    for name in ("VpcId", "PublicSubnetIds", "PrivateSubnetIds", "CertificateArn",
                 "PlivoAuthTokenSecretArn"):  # fmt: skip
        assert json.dumps(ref(name)) in asserted, name
    assert params["PublicSubnetIds"]["Type"] == "CommaDelimitedList"
    assert params["PrivateSubnetIds"]["Type"] == "CommaDelimitedList"
    count = params["BridgeDesiredCount"]
    assert count["Type"] == "Number" and count["MinValue"] >= 1
    assert params["BridgeMaxCount"]["Default"] >= count["Default"]


def test_outputs_give_the_plivo_answer_url_and_the_event_bus(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert outputs["BridgeLoadBalancerDnsName"]["Value"] == getatt("BridgeLoadBalancer.DNSName")
    cond, with_domain, without = outputs["PlivoAnswerUrl"]["Value"]["Fn::If"]
    assert cond == "HasBridgeDomainName"
    assert with_domain == {"Fn::Sub": "https://${BridgeDomainName}/plivo/answer"}
    assert without == {"Fn::Sub": "https://${BridgeLoadBalancer.DNSName}/plivo/answer"}
    assert outputs["EventBusName"]["Value"] == ref("MirrorEventBus")
    assert outputs["EventBusArn"]["Value"] == getatt("MirrorEventBus.Arn")


def test_dockerfile_parser_joins_continuations_and_skips_comments(tmp_path: Path) -> None:
    """The helper the checks above rest on."""
    f = tmp_path / "Dockerfile"
    f.write_text(
        '# c\nFROM a:1\nRUN one \\\n    # inside\n    two\nCMD ["x", "y"]\n', encoding="utf-8"
    )
    assert dockerfile_instructions(f) == [
        ("FROM", "a:1"),
        ("RUN", "one two"),
        ("CMD", '["x", "y"]'),
    ]
