"""The LLM adapters against faked providers: OpenAI, Azure OpenAI and an OpenAI-compatible judge
endpoint faked at the HTTP layer (respx, strict: an unmocked request fails the test), Bedrock
through botocore's Stubber, keys through moto's Secrets Manager.

The response bodies copy the providers' real shapes (chat.completion objects, error envelopes,
Converse output), so the SDK parses them as it would in production.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import BaseModel, ValidationError

from mirror.config import config_from_env
from mirror.llm import (
    LLMBadOutput,
    LLMError,
    LLMRefusal,
    LLMSettings,
    LLMTimeout,
    LLMUnavailable,
    Tier1Settings,
    build_llm_client,
    build_remote_tiers,
    llm_settings_from_env,
)
from mirror.llm.bedrock import BedrockLLM
from mirror.llm.openai_client import OpenAIChatLLM
from mirror.models import MirrorConfig
from tests.conftest import TEST_REGION, boto_session
from tests.fakes.openai_http import OPENAI_URL, chat_completion, strict_http

pytestmark = pytest.mark.integration

AZURE_ENDPOINT = "https://contoso-judge.openai.azure.com"
AZURE_URL = f"{AZURE_ENDPOINT}/openai/deployments/judge-4o-mini/chat/completions"
SELENE_BASE = "http://127.0.0.1:8000/v1"
SELENE_MODEL = "AtlaAI/Selene-1-Mini-Llama-3.1-8B"
KEY = "sk-test-0123456789abcdef"


class Answer(BaseModel):
    ok: bool
    why: str


GOOD = '{"ok": true, "why": "matches"}'


def azure_completion(content: str) -> dict[str, Any]:
    """Azure adds its content-filter annotations to the same object."""
    body = chat_completion(content, model="gpt-4o-mini-2024-07-18")
    safe = {
        k: {"filtered": False, "severity": "safe"}
        for k in ("hate", "self_harm", "sexual", "violence")
    }
    body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": safe}]
    body["choices"][0]["content_filter_results"] = safe
    return body


def vllm_completion(content: str) -> dict[str, Any]:
    """What vLLM's OpenAI-compatible server returns for a self-hosted judge model."""
    return {
        "id": "chatcmpl-5f0c8a9f2b8e4c3a9d1e7b6a4c2d0e1f",
        "object": "chat.completion",
        "created": 1741570001,
        "model": SELENE_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "reasoning_content": None,
                    "content": content,
                    "tool_calls": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
            }
        ],
        "usage": {"prompt_tokens": 501, "total_tokens": 560, "completion_tokens": 59},
        "prompt_logprobs": None,
    }


def openai_error(status: int, code: str | None, message: str, type_: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


RATE_LIMITED = openai_error(
    429,
    "rate_limit_exceeded",
    "Rate limit reached for gpt-4o-mini in organization org-abc on requests per min (RPM): "
    "Limit 500, Used 500, Requested 1. Please try again in 120ms.",
    "requests",
)
SERVER_ERROR = openai_error(
    500,
    None,
    "The server had an error while processing your request. Sorry about that!",
    "server_error",
)


@pytest.fixture(autouse=True)
def http() -> Iterator[respx.MockRouter]:
    """Every test here runs inside strict respx: a request to an unmocked URL is an error."""
    with strict_http() as router:
        yield router


@pytest.fixture(autouse=True)
def no_provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_DEPLOYMENT",
        "OPENAI_API_VERSION",
        "MIRROR_LLM_PROVIDER",
        "MIRROR_LLM_MODEL",
        "BEDROCK_MODEL_ID",
        "HF_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)


class Sleeps:
    """Records backoff waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def openai_llm(sleeps: Sleeps | None = None, **settings: Any) -> OpenAIChatLLM:
    return OpenAIChatLLM(
        LLMSettings(**settings),
        environ={"OPENAI_API_KEY": KEY, "AZURE_OPENAI_API_KEY": KEY},
        sleep=sleeps or Sleeps(),
    )


def ask(llm: Any, timeout_s: float = 5.0, schema: type[BaseModel] = Answer) -> Any:
    return asyncio.run(
        llm.complete_json(
            system="Judge. Answer JSON.", user="<data>hi</data>", schema=schema, timeout_s=timeout_s
        )
    )


def sent(route: respx.Route, i: int = -1) -> dict[str, Any]:
    return json.loads(route.calls[i].request.content)


# -- OpenAI ---------------------------------------------------------------------------------------


def test_openai_sends_json_mode_request_and_validates_reply(http: respx.MockRouter) -> None:
    route = http.post(OPENAI_URL).respond(200, json=chat_completion(GOOD))
    llm = openai_llm()
    assert llm.name == "openai:gpt-4o-mini"
    assert ask(llm) == Answer(ok=True, why="matches")
    body = sent(route)
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [
        {"role": "system", "content": "Judge. Answer JSON."},
        {"role": "user", "content": "<data>hi</data>"},
    ]
    assert body["response_format"] == {"type": "json_object"}
    assert body["max_completion_tokens"] == 400 and "max_tokens" not in body
    assert body["temperature"] == 0
    assert route.calls[0].request.headers["authorization"] == f"Bearer {KEY}"
    # The SDK's own retries are off: its retry counter header says this is the first try.
    assert route.calls[0].request.headers.get("x-stainless-retry-count") in (None, "0")


def test_temperature_none_is_left_out(http: respx.MockRouter) -> None:
    route = http.post(OPENAI_URL).respond(200, json=chat_completion(GOOD))
    ask(openai_llm(temperature=None, model="o4-mini"))
    assert "temperature" not in sent(route) and sent(route)["model"] == "o4-mini"


def test_429_then_success_waits_what_the_server_asks(http: respx.MockRouter) -> None:
    route = http.post(OPENAI_URL).mock(
        side_effect=[
            httpx.Response(429, json=RATE_LIMITED, headers={"retry-after-ms": "120"}),
            httpx.Response(200, json=chat_completion(GOOD)),
        ]
    )
    sleeps = Sleeps()
    assert ask(openai_llm(sleeps)).ok is True
    assert route.call_count == 2 and sleeps.waits == [pytest.approx(0.12)]


def test_5xx_retries_are_bounded_with_growing_backoff(http: respx.MockRouter) -> None:
    route = http.post(OPENAI_URL).respond(500, json=SERVER_ERROR)
    sleeps = Sleeps()
    with pytest.raises(LLMUnavailable, match="HTTP 500"):
        ask(openai_llm(sleeps, max_retries=2))
    assert route.call_count == 3
    first, second = sleeps.waits
    assert 0.1 <= first <= 0.2 and 0.2 <= second <= 0.4  # 0.2 * 2**n, jittered to 50..100%


def test_no_retries_when_max_retries_is_zero(http: respx.MockRouter) -> None:
    route = http.post(OPENAI_URL).respond(503, json=SERVER_ERROR)
    with pytest.raises(LLMUnavailable):
        ask(openai_llm(max_retries=0))
    assert route.call_count == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "invalid_request_error"), (403, "unsupported_country_region_territory"), (404, None)],
)
def test_other_4xx_are_not_retried(http: respx.MockRouter, status: int, code: str | None) -> None:
    route = http.post(OPENAI_URL).respond(
        status, json=openai_error(status, code, "nope", "invalid_request_error")
    )
    sleeps = Sleeps()
    with pytest.raises(LLMUnavailable, match=f"HTTP {status}"):
        ask(openai_llm(sleeps))
    assert route.call_count == 1 and sleeps.waits == []


def test_attempt_timeout_is_retried_then_succeeds(http: respx.MockRouter) -> None:
    route = http.post(OPENAI_URL).mock(
        side_effect=[
            httpx.ReadTimeout("timed out"),
            httpx.Response(200, json=chat_completion(GOOD)),
        ]
    )
    assert ask(openai_llm()).ok is True
    assert route.call_count == 2


def test_timeouts_exhaust_retries_as_llm_timeout(http: respx.MockRouter) -> None:
    route = http.post(OPENAI_URL).mock(side_effect=httpx.ConnectTimeout("timed out"))
    with pytest.raises(LLMTimeout):
        ask(openai_llm(max_retries=1))
    assert route.call_count == 2


def test_the_call_budget_bounds_a_hanging_server(http: respx.MockRouter) -> None:
    started: list[float] = []

    async def hang(request: httpx.Request) -> httpx.Response:
        started.append(time.perf_counter())
        await asyncio.sleep(5)
        return httpx.Response(200, json=chat_completion(GOOD))

    http.post(OPENAI_URL).mock(side_effect=hang)
    start = time.perf_counter()
    with pytest.raises(LLMTimeout):
        ask(openai_llm(max_retries=3), timeout_s=0.1)
    assert time.perf_counter() - start < 1.0 and len(started) == 1


def test_backoff_never_runs_past_the_budget(http: respx.MockRouter) -> None:
    route = http.post(OPENAI_URL).respond(429, json=RATE_LIMITED, headers={"retry-after": "1"})
    sleeps = Sleeps()
    with pytest.raises(LLMUnavailable, match="HTTP 429"):
        ask(openai_llm(sleeps, max_retries=3), timeout_s=0.5)
    assert route.call_count == 1 and sleeps.waits == []  # a 1 s wait cannot fit in 0.5 s


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"ok": true, "why": "trailing comma",}', "Answer"),
        ("Sure! Here is the JSON you asked for.", "Answer"),
        ('{"ok": "maybe", "why": "x"}', r"ok: bool_parsing"),
        ('{"why": "no ok"}', r"ok: missing"),
        ("", "empty reply"),
    ],
)
def test_malformed_output_raises_and_is_not_retried(
    http: respx.MockRouter, content: str, match: str
) -> None:
    route = http.post(OPENAI_URL).respond(200, json=chat_completion(content))
    with pytest.raises(LLMBadOutput, match=match):
        ask(openai_llm())
    assert route.call_count == 1


def test_bad_output_error_never_echoes_the_reply(http: respx.MockRouter) -> None:
    http.post(OPENAI_URL).respond(
        200, json=chat_completion('{"ok": "card 4111 1111 1111 1111", "why": 3}')
    )
    with pytest.raises(LLMBadOutput) as e:
        ask(openai_llm())
    assert "4111" not in str(e.value)


def test_fenced_json_is_accepted(http: respx.MockRouter) -> None:
    http.post(OPENAI_URL).respond(200, json=chat_completion(f"```json\n{GOOD}\n```"))
    assert ask(openai_llm()).why == "matches"


def test_refusal_raises(http: respx.MockRouter) -> None:
    http.post(OPENAI_URL).respond(
        200, json=chat_completion(None, refusal="I'm sorry, I can't help with that request.")
    )
    with pytest.raises(LLMRefusal):
        ask(openai_llm())


@pytest.mark.parametrize(
    ("finish_reason", "error"), [("length", LLMBadOutput), ("content_filter", LLMRefusal)]
)
def test_unfinished_replies_raise(
    http: respx.MockRouter, finish_reason: str, error: type[LLMError]
) -> None:
    http.post(OPENAI_URL).respond(
        200, json=chat_completion('{"ok": true, "why": "cut', finish_reason=finish_reason)
    )
    with pytest.raises(error):
        ask(openai_llm())


def test_missing_key_names_the_env_var_and_sends_nothing(http: respx.MockRouter) -> None:
    route = http.post(OPENAI_URL).respond(200, json=chat_completion(GOOD))
    llm = OpenAIChatLLM(LLMSettings(), environ={})
    with pytest.raises(LLMUnavailable, match="OPENAI_API_KEY"):
        ask(llm)
    assert route.call_count == 0


def test_one_client_serves_successive_event_loops(http: respx.MockRouter) -> None:
    """Lambda handlers may asyncio.run() per event; a client bound to a closed loop would fail."""
    route = http.post(OPENAI_URL).respond(200, json=chat_completion(GOOD))
    llm = openai_llm()
    assert ask(llm).ok and ask(llm).ok
    assert route.call_count == 2


# -- Azure OpenAI ---------------------------------------------------------------------------------


def azure_llm(**settings: Any) -> OpenAIChatLLM:
    return openai_llm(
        provider="azure",
        model="gpt-4o-mini",
        azure_endpoint=AZURE_ENDPOINT,
        azure_api_version="2024-10-21",
        azure_deployment="judge-4o-mini",
        **settings,
    )


def test_azure_calls_the_deployment_with_api_key_header(http: respx.MockRouter) -> None:
    route = http.post(AZURE_URL, params={"api-version": "2024-10-21"}).respond(
        200, json=azure_completion(GOOD)
    )
    llm = azure_llm()
    assert llm.name == "azure:gpt-4o-mini"
    assert ask(llm).ok is True
    request = route.calls[0].request
    assert request.headers["api-key"] == KEY and "authorization" not in request.headers
    body = sent(route)
    assert body["max_tokens"] == 400 and "max_completion_tokens" not in body
    assert body["response_format"] == {"type": "json_object"}


def test_azure_content_filter_is_a_refusal_and_not_retried(http: respx.MockRouter) -> None:
    filtered = {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
            "content management policy.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {"violence": {"filtered": True, "severity": "medium"}},
            },
        }
    }
    route = http.post(AZURE_URL).respond(400, json=filtered)
    with pytest.raises(LLMRefusal):
        ask(azure_llm())
    assert route.call_count == 1


def test_azure_429_is_retried(http: respx.MockRouter) -> None:
    route = http.post(AZURE_URL).mock(
        side_effect=[
            httpx.Response(
                429,
                json={
                    "error": {
                        "code": "429",
                        "message": "Requests to the ChatCompletions_Create "
                        "Operation have exceeded call rate limit.",
                    }
                },
                headers={"retry-after": "0"},
            ),
            httpx.Response(200, json=azure_completion(GOOD)),
        ]
    )
    assert ask(azure_llm()).ok is True and route.call_count == 2


# -- an OpenAI-compatible judge endpoint (a self-hosted Selene model behind vLLM) -----------------


def selene_llm() -> OpenAIChatLLM:
    return openai_llm(model=SELENE_MODEL, base_url=SELENE_BASE)


def test_openai_compatible_endpoint_uses_base_url_and_max_tokens(http: respx.MockRouter) -> None:
    route = http.post(f"{SELENE_BASE}/chat/completions").respond(
        200, json=vllm_completion('{"ok": false, "why": "the agent promised free delivery"}')
    )
    llm = selene_llm()
    assert llm.name == f"openai:{SELENE_MODEL}"
    assert ask(llm) == Answer(ok=False, why="the agent promised free delivery")
    body = sent(route)
    assert body["model"] == SELENE_MODEL and body["max_tokens"] == 400
    assert "max_completion_tokens" not in body


def test_selene_style_prose_verdict_is_bad_output(http: respx.MockRouter) -> None:
    """Selene's native format is Markdown reasoning plus a result, not JSON: never an answer."""
    http.post(f"{SELENE_BASE}/chat/completions").respond(
        200,
        json=vllm_completion(
            "**Reasoning:** The agent confirmed the order before the caller agreed.\n\n"
            "**Result:** 1"
        ),
    )
    with pytest.raises(LLMBadOutput):
        ask(selene_llm())


# -- keys from Secrets Manager --------------------------------------------------------------------


@pytest.fixture
def secrets(aws_credentials: None) -> Iterator[Any]:
    """moto Secrets Manager, with Powertools' parameter cache emptied before and after."""
    from aws_lambda_powertools.utilities import parameters
    from moto import mock_aws

    parameters.clear_caches()
    with mock_aws():
        yield boto_session().client("secretsmanager", region_name=TEST_REGION)
    parameters.clear_caches()


@pytest.mark.parametrize(
    "secret_string", ["sk-from-secrets-manager", '{"api_key": "sk-from-secrets-manager"}']
)
def test_key_comes_from_secrets_manager(
    http: respx.MockRouter, secrets: Any, secret_string: str
) -> None:
    secrets.create_secret(Name="mirror/openai", SecretString=secret_string)
    route = http.post(OPENAI_URL).respond(200, json=chat_completion(GOOD))
    llm = OpenAIChatLLM(
        LLMSettings(api_key_secret="mirror/openai"), environ={"OPENAI_API_KEY": "sk-env-unused"}
    )
    assert ask(llm).ok is True
    assert route.calls[0].request.headers["authorization"] == "Bearer sk-from-secrets-manager"


def test_a_401_rereads_a_rotated_secret_and_never_logs_the_key(
    http: respx.MockRouter, secrets: Any, caplog: pytest.LogCaptureFixture
) -> None:
    secrets.create_secret(Name="mirror/openai", SecretString="sk-old-key-rotated-away")
    unauthorized = openai_error(
        401,
        "invalid_api_key",
        "Incorrect API key provided: sk-old-*******away.",
        "invalid_request_error",
    )
    route = http.post(OPENAI_URL).mock(
        side_effect=lambda request: (
            httpx.Response(200, json=chat_completion(GOOD))
            if request.headers["authorization"] == "Bearer sk-new-key"
            else httpx.Response(401, json=unauthorized)
        )
    )
    llm = OpenAIChatLLM(LLMSettings(api_key_secret="mirror/openai"), environ={})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(LLMUnavailable, match="HTTP 401") as e:
        ask(llm)
    assert route.call_count == 1  # a 401 is not retried
    secrets.put_secret_value(SecretId="mirror/openai", SecretString="sk-new-key")
    assert ask(llm).ok is True  # re-read despite Powertools' 5-minute cache
    assert "sk-old" not in str(e.value)
    # Ours and the SDK's logs at DEBUG (botocore's own DEBUG dumps of Secrets Manager bodies
    # are off in Lambda, where its loggers stay at WARNING).
    ours = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("botocore", "moto"))
    )
    assert "openai._base_client" in {r.name for r in caplog.records}  # the SDK did log
    assert "sk-old-key" not in ours and "sk-new-key" not in ours


def test_an_unreadable_secret_is_an_llm_error(http: respx.MockRouter, secrets: Any) -> None:
    route = http.post(OPENAI_URL).respond(200, json=chat_completion(GOOD))
    llm = OpenAIChatLLM(LLMSettings(api_key_secret="mirror/missing"), environ={})
    with pytest.raises(LLMUnavailable, match="mirror/missing"):
        ask(llm)
    assert route.call_count == 0


def test_json_secret_without_a_key_field_is_rejected(http: respx.MockRouter, secrets: Any) -> None:
    secrets.create_secret(Name="mirror/openai", SecretString='{"username": "x"}')
    with pytest.raises(LLMUnavailable, match="api_key"):
        ask(OpenAIChatLLM(LLMSettings(api_key_secret="mirror/openai"), environ={}))


# -- Amazon Bedrock (Converse) --------------------------------------------------------------------

BEDROCK_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"


def converse_reply(text: str, stop: str = "end_turn") -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": stop,
        "usage": {"inputTokens": 412, "outputTokens": 31, "totalTokens": 443},
        "metrics": {"latencyMs": 612},
    }


@pytest.fixture
def bedrock(aws_credentials: None) -> Iterator[tuple[BedrockLLM, Any]]:
    from botocore.stub import Stubber

    client = boto_session().client("bedrock-runtime", region_name=TEST_REGION)
    llm = BedrockLLM(LLMSettings(provider="bedrock", model=BEDROCK_MODEL), client=client)
    with Stubber(client) as stubber:
        yield llm, stubber
        stubber.assert_no_pending_responses()


def test_bedrock_converse_request_and_reply(bedrock: tuple[BedrockLLM, Any]) -> None:
    llm, stubber = bedrock
    stubber.add_response(
        "converse",
        converse_reply(GOOD),
        expected_params={
            "modelId": BEDROCK_MODEL,
            "system": [{"text": "Judge. Answer JSON."}],
            "messages": [{"role": "user", "content": [{"text": "<data>hi</data>"}]}],
            "inferenceConfig": {"maxTokens": 400, "temperature": 0.0},
        },
    )
    assert llm.name == f"bedrock:{BEDROCK_MODEL}"
    assert ask(llm) == Answer(ok=True, why="matches")


def test_bedrock_fenced_json_is_accepted(bedrock: tuple[BedrockLLM, Any]) -> None:
    llm, stubber = bedrock
    stubber.add_response("converse", converse_reply(f"```json\n{GOOD}\n```"))
    assert ask(llm).ok is True


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (converse_reply("Sorry, I can't.", stop="guardrail_intervened"), LLMRefusal),
        (converse_reply("", stop="content_filtered"), LLMRefusal),
        (converse_reply('{"ok": true, "why": "cut', stop="max_tokens"), LLMBadOutput),
        (converse_reply("The agent did fine."), LLMBadOutput),
    ],
)
def test_bedrock_unusable_replies_raise(
    bedrock: tuple[BedrockLLM, Any], reply: dict[str, Any], error: type[LLMError]
) -> None:
    llm, stubber = bedrock
    stubber.add_response("converse", reply)
    with pytest.raises(error):
        ask(llm)


@pytest.mark.parametrize(
    ("code", "status"),
    [("ThrottlingException", 429), ("ValidationException", 400), ("ModelTimeoutException", 408)],
)
def test_bedrock_service_errors_raise(
    bedrock: tuple[BedrockLLM, Any], code: str, status: int
) -> None:
    llm, stubber = bedrock
    stubber.add_client_error("converse", service_error_code=code, http_status_code=status)
    with pytest.raises(LLMUnavailable, match=code):
        ask(llm)


def test_bedrock_budget_bounds_a_slow_call() -> None:
    class Slow:
        def converse(self, **request: Any) -> dict[str, Any]:
            time.sleep(0.3)
            return converse_reply(GOOD)

    llm = BedrockLLM(LLMSettings(provider="bedrock", model=BEDROCK_MODEL), client=Slow())

    async def timed() -> float:
        start = time.perf_counter()
        with pytest.raises(LLMTimeout):
            await llm.complete_json(system="s", user="u", schema=Answer, timeout_s=0.05)
        return time.perf_counter() - start

    assert asyncio.run(timed()) < 0.25  # the judge gets its answer; the thread ends on its own


def test_bedrock_client_config_comes_from_settings(aws_credentials: None) -> None:
    llm = BedrockLLM(
        LLMSettings(
            provider="bedrock",
            model=BEDROCK_MODEL,
            bedrock_region="eu-west-1",
            timeout_s=4,
            max_retries=1,
        )
    )
    client = llm.client()
    config = client.meta.config
    assert client.meta.region_name == "eu-west-1"
    assert (config.read_timeout, config.connect_timeout) == (4, 2.0)
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}


# -- settings and factories -----------------------------------------------------------------------


def test_settings_from_env() -> None:
    assert llm_settings_from_env({}) is None
    assert llm_settings_from_env({"OPENAI_API_KEY": KEY}) == LLMSettings()
    compat = llm_settings_from_env(
        {"OPENAI_BASE_URL": SELENE_BASE, "MIRROR_LLM_MODEL": SELENE_MODEL}
    )
    assert compat == LLMSettings(model=SELENE_MODEL, base_url=SELENE_BASE)
    azure = llm_settings_from_env(
        {
            "AZURE_OPENAI_ENDPOINT": AZURE_ENDPOINT,
            "AZURE_OPENAI_API_KEY": KEY,
            "OPENAI_API_VERSION": "2024-10-21",
            "AZURE_OPENAI_DEPLOYMENT": "judge-4o-mini",
            "OPENAI_API_KEY": KEY,  # Azure wins when its endpoint is set
        }
    )
    assert azure is not None and azure.provider == "azure"
    assert (azure.model, azure.azure_deployment) == ("judge-4o-mini", "judge-4o-mini")
    bedrock = llm_settings_from_env({"BEDROCK_MODEL_ID": BEDROCK_MODEL})
    assert bedrock == LLMSettings(provider="bedrock", model=BEDROCK_MODEL)
    explicit = llm_settings_from_env(
        {
            "MIRROR_LLM_PROVIDER": "bedrock",
            "MIRROR_LLM_MODEL": "amazon.nova-lite-v1:0",
            "OPENAI_API_KEY": KEY,
        }
    )
    assert explicit is not None and explicit.model == "amazon.nova-lite-v1:0"
    with pytest.raises(ValueError, match="MIRROR_LLM_PROVIDER"):
        llm_settings_from_env({"MIRROR_LLM_PROVIDER": "anthropic"})
    with pytest.raises(ValueError, match="azure_endpoint"):
        llm_settings_from_env({"MIRROR_LLM_PROVIDER": "azure"})  # no endpoint, no version


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (dict(provider="azure", azure_endpoint=AZURE_ENDPOINT), "azure_api_version"),
        (dict(azure_deployment="d"), "only for provider azure"),
        (dict(provider="bedrock", model="m", base_url=SELENE_BASE), "base_url"),
        (dict(provider="bedrock", model="m", api_key_secret="s"), "IAM"),
        (dict(bedrock_region="us-east-1"), "bedrock_region"),
        (dict(provider="bedrock"), "Bedrock model id"),
        (dict(max_retries=9), "max_retries"),
    ],
)
def test_settings_reject_fields_for_another_provider(settings: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        LLMSettings(**settings)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (dict(confident_threshold=0.5, clean_below=0.6), "clean_below"),
        (dict(provider="sagemaker"), "endpoint_name"),
        (dict(provider="sagemaker", endpoint_name="e", url="http://127.0.0.1"), "url"),
        (dict(endpoint_name="e"), "sagemaker"),
    ],
)
def test_tier1_settings_validate(settings: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Tier1Settings(**settings)


def test_factories_pick_adapters_and_order_tiers() -> None:
    assert isinstance(build_llm_client(LLMSettings()), OpenAIChatLLM)
    assert isinstance(build_llm_client(LLMSettings(provider="bedrock", model="m")), BedrockLLM)
    assert build_remote_tiers(MirrorConfig()) == []
    both = build_remote_tiers(MirrorConfig(tier1=Tier1Settings(), llm=LLMSettings()))
    assert [t.tier for t in both] == ["tier1", "tier2"]
    only_llm = build_remote_tiers(MirrorConfig(llm=LLMSettings(provider="bedrock", model="m")))
    assert [t.tier for t in only_llm] == ["tier2"]
    assert only_llm[0].client.name == "bedrock:m"  # type: ignore[attr-defined]
    assert [t.tier for t in build_remote_tiers(MirrorConfig(tier1=Tier1Settings()))] == ["tier1"]


def test_config_json_carries_llm_and_tier1() -> None:
    doc = {
        "llm": {
            "provider": "openai",
            "model": SELENE_MODEL,
            "base_url": SELENE_BASE,
            "api_key_secret": "mirror/judge",
        },
        "tier1": {"model": "MoritzLaurer/deberta-v3-large-zeroshot-v2.0", "token_secret": "hf"},
    }
    config = config_from_env({"MIRROR_CONFIG": json.dumps(doc)})
    assert config.llm is not None and config.llm.base_url == SELENE_BASE
    assert config.tier1 is not None and config.tier1.endpoint_url == (
        "https://router.huggingface.co/hf-inference/models/"
        "MoritzLaurer/deberta-v3-large-zeroshot-v2.0"
    )
    # Settings name where keys live, never the keys: a dump holds nothing secret.
    assert "sk-" not in json.dumps(config.model_dump())


def test_importing_the_models_loads_no_sdk() -> None:
    import subprocess
    import sys

    code = (
        "import sys, mirror.models, mirror.llm, mirror.prompt;"
        "print([m for m in ('openai', 'httpx', 'boto3', 'botocore') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
