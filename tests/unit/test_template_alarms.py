"""template.yaml's operations block: the alarms, the SNS topic they notify and the dashboard
(issue 13, item 13: the template had none). The bridge's metric names and namespace are read
from the code that emits them (`mirror_bridge.metrics`), so a renamed metric fails here
instead of leaving an alarm on a metric nobody writes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from mirror_bridge import metrics
from mirror_dev.local import load_template
from tests.conftest import TEMPLATE_PATH

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resources(template, "AWS::CloudWatch::Alarm")


def metric_stats(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    """(Namespace, MetricName, Dimensions) of a plain alarm or each metric of a math alarm."""
    props = alarm["Properties"]
    if "MetricName" in props:
        return [props]
    return [m["MetricStat"]["Metric"] for m in props["Metrics"] if "MetricStat" in m]


def dims(metric: dict[str, Any]) -> dict[str, Any]:
    return {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}


def alarms_on(template: dict[str, Any], namespace: str, name: str) -> dict[str, dict[str, Any]]:
    return {
        k: a for k, a in alarms(template).items()
        if any(m["Namespace"] == namespace and m["MetricName"] == name for m in metric_stats(a))
    }  # fmt: skip


def bridge_alarm(template: dict[str, Any], *names: str) -> dict[str, Any]:
    """The one alarm reading every bridge metric in `names` (Service=bridge), which exists
    only with the bridge (DeployBridge)."""
    found = [
        a for a in alarms(template).values()
        if {n for n in names}
        <= {m["MetricName"] for m in metric_stats(a) if m["Namespace"] == metrics.NAMESPACE}
    ]  # fmt: skip
    assert len(found) == 1, f"one alarm on {names}: {len(found)}"
    (alarm,) = found
    assert alarm.get("Condition") == "DeployBridge"
    for m in metric_stats(alarm):
        assert dims(m) == {metrics.SERVICE_DIMENSION: metrics.SERVICE}
    return alarm


def test_every_alarm_notifies_the_topic_and_an_email_subscribes_only_when_given(
    template: dict[str, Any],
) -> None:
    (topic,) = resources(template, "AWS::SNS::Topic")
    assert alarms(template)
    for name, alarm in alarms(template).items():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic}], name
        assert alarm["Properties"].get("TreatMissingData") == "notBreaching", name
    (sub,) = resources(template, "AWS::SNS::Subscription").values()
    assert sub["Condition"] == "HasAlarmEmail"
    assert sub["Properties"] == {
        "TopicArn": {"Ref": topic}, "Protocol": "email", "Endpoint": {"Ref": "AlarmEmail"},
    }  # fmt: skip
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""
    assert template["Conditions"]["HasAlarmEmail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]
    }
    assert {"Ref": topic} in [o["Value"] for o in template["Outputs"].values()]


def test_every_function_has_an_errors_and_a_throttles_alarm(template: dict[str, Any]) -> None:
    functions = set(resources(template, "AWS::Serverless::Function"))
    assert len(functions) >= 5
    for metric in ("Errors", "Throttles"):
        watched = {
            dims(m)["FunctionName"]["Ref"]
            for a in alarms_on(template, "AWS/Lambda", metric).values()
            for m in metric_stats(a)
        }
        assert watched == functions, f"{metric}: missing {functions - watched}"
        for a in alarms_on(template, "AWS/Lambda", metric).values():
            assert "Condition" not in a  # the functions always exist
            assert a["Properties"]["Threshold"] >= 1


def test_the_fail_open_and_gate_hold_rates_divide_what_the_bridge_emits(
    template: dict[str, Any],
) -> None:
    for num, den in ((metrics.FAIL_OPENS, metrics.TURNS), (metrics.GATE_HOLDS,
                                                          metrics.GATE_REQUESTS)):  # fmt: skip
        alarm = bridge_alarm(template, num, den)
        props = alarm["Properties"]
        by_id = {m["Id"]: m for m in props["Metrics"]}
        (expr,) = [m for m in props["Metrics"] if "Expression" in m]
        assert expr["ReturnData"] is True
        ids = {m["MetricStat"]["Metric"]["MetricName"]: i for i, m in by_id.items()
               if "MetricStat" in m}  # fmt: skip
        # the numerator over the denominator, guarded against no traffic
        assert re.search(rf"\b{ids[num]}\s*/\s*{ids[den]}\b", expr["Expression"])
        assert f"{ids[den]} > 0" in expr["Expression"]
        assert 0 < props["Threshold"] < 1 and props["ComparisonOperator"] == "GreaterThanThreshold"
        assert all(m["MetricStat"]["Stat"] == "Sum" for m in by_id.values() if "MetricStat" in m)


def test_lost_call_ended_alarms_on_the_bridge_metric(template: dict[str, Any]) -> None:
    alarm = bridge_alarm(template, metrics.CALL_ENDED_LOST)
    props = alarm["Properties"]
    assert props["Statistic"] == "Sum" and props["Threshold"] == 1
    assert props["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_the_dead_letter_queue_and_unhealthy_bridge_tasks_alarm(template: dict[str, Any]) -> None:
    (dlq,) = alarms_on(template, "AWS/SQS", "ApproximateNumberOfMessagesVisible").values()
    assert dims(dlq["Properties"]) == {
        "QueueName": {"Fn::GetAtt": "PostCallReportDeadLetterQueue.QueueName"}
    }
    assert "Condition" not in dlq
    (unhealthy,) = alarms_on(template, "AWS/ApplicationELB", "UnHealthyHostCount").values()
    assert unhealthy["Condition"] == "DeployBridge"
    assert dims(unhealthy["Properties"]) == {
        "TargetGroup": {"Fn::GetAtt": "BridgeTargetGroup.TargetGroupFullName"},
        "LoadBalancer": {"Fn::GetAtt": "BridgeLoadBalancer.LoadBalancerFullName"},
    }
    # only alarms on bridge resources or bridge metrics carry the bridge's condition
    for name, alarm in alarms(template).items():
        bridge = any(
            m["Namespace"] in (metrics.NAMESPACE, "AWS/ApplicationELB") for m in metric_stats(alarm)
        )
        assert (alarm.get("Condition") == "DeployBridge") == bridge, name


def test_the_dashboard_shows_metrics_the_code_emits(template: dict[str, Any]) -> None:
    (dashboard,) = resources(template, "AWS::CloudWatch::Dashboard").values()
    body = json.loads(dashboard["Properties"]["DashboardBody"]["Fn::Sub"])
    shown = [m for w in body["widgets"] for m in w["properties"]["metrics"]]
    bridge_names = {m[1] for m in shown if m[0] == metrics.NAMESPACE}
    emitted = {v for k, v in vars(metrics).items() if k.isupper() and isinstance(v, str)}
    assert bridge_names and bridge_names <= emitted
    for needed in (metrics.ACTIVE_CALLS, metrics.FAIL_OPENS, metrics.RELAY_LATENCY_P99,
                   metrics.CALL_ENDED_LOST, metrics.GATE_HOLDS, metrics.INTERVENTIONS):  # fmt: skip
        assert needed in bridge_names
    for m in shown:
        if m[0] == metrics.NAMESPACE:
            assert m[2:4] == [metrics.SERVICE_DIMENSION, metrics.SERVICE]
    # every function's errors and throttles, referenced by the function (a ${Logical} in the
    # substitution, which CloudFormation resolves to its name)
    functions = set(resources(template, "AWS::Serverless::Function"))
    for metric in ("Errors", "Throttles"):
        refs = {m[3] for m in shown if m[:3] == ["AWS/Lambda", metric, "FunctionName"]}
        assert refs == {"${" + f + "}" for f in functions}
