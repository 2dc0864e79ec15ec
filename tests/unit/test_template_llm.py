"""The LLM key secret and the Bedrock model are granted to the functions that call an LLM, only
when configured, and only that secret and that model."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.unit

LLM_FUNCTIONS = (
    "ScoreTurnFunction",
    "GateToolFunction",
    "GenerateCorrectionFunction",
    "ApiFunction",
)


def _conditional_statements(fn: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    out = {}
    for policy in fn["Properties"]["Policies"]:
        if isinstance(policy, dict) and "Fn::If" in policy:
            condition, then, otherwise = policy["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}
            (statement,) = then["Statement"]
            out[statement["Sid"]] = (condition, statement)
    return out


@pytest.mark.parametrize("name", LLM_FUNCTIONS)
def test_llm_grants_are_conditional_and_exact(template: dict[str, Any], name: str) -> None:
    grants = _conditional_statements(template["Resources"][name])
    assert set(grants) == {"LlmKeySecret", "BedrockJudgeModel"}
    condition, secret = grants["LlmKeySecret"]
    assert condition == "HasLlmSecret"
    assert secret["Action"] == "secretsmanager:GetSecretValue"
    assert secret["Resource"] == {"Ref": "LlmSecretArn"}
    condition, bedrock = grants["BedrockJudgeModel"]
    assert condition == "HasBedrockModel" and bedrock["Action"] == "bedrock:InvokeModel"
    assert bedrock["Resource"]["Fn::Sub"].endswith("::foundation-model/${BedrockModelId}")


def test_llm_parameters_default_to_nothing_granted(template: dict[str, Any]) -> None:
    params, conditions = template["Parameters"], template["Conditions"]
    assert params["LlmSecretArn"]["Default"] == "" and params["BedrockModelId"]["Default"] == ""
    assert conditions["HasLlmSecret"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "LlmSecretArn"}, ""]}]
    }
    assert conditions["HasBedrockModel"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "BedrockModelId"}, ""]}]
    }
