"""Tier 1: a zero-shot (NLI) classifier behind an HTTP endpoint, one hypothesis per policy.

Each prose policy becomes its own hypothesis ("The agent's reply violates this rule: ..."), so a
score always names the rule it is about; there is no generic "policy violation" label. The
agent's speech is one premise and each irreversible tool call another, so a violation found in a
call blocks that call. The tier decides only when every premise is decided: a confident
violation, or every policy confidently clean. Anything else is uncertain and goes to Tier 2.

`FORBID`/`REQUIRE` directives are Tier 0's; with no prose policy there is nothing to classify.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from mirror.judge.base import Finding
from mirror.llm.base import LLMBadOutput, LLMTimeout, LLMUnavailable
from mirror.llm.keys import KeySource
from mirror.llm.settings import Tier1Settings
from mirror.models import MirrorConfig, Tier, ToolCall, Turn
from mirror.policy import compile_policies

CHECK = "tier1_nli"
SPEECH_HYPOTHESIS = "The agent's reply violates this rule: {policy}"
ACTION_HYPOTHESIS = "The agent's action violates this rule: {policy}"
POLICY_CHARS = 400
"""NLI models read ~512 tokens of premise and hypothesis together; a long rule is cut."""
PREMISE_CHARS = 1_500
SAGEMAKER_CONNECT_S = 1.0
SAGEMAKER_READ_S = 2.0


class ZeroShotTier:
    tier: Tier = "tier1"

    def __init__(
        self,
        settings: Tier1Settings,
        *,
        environ: Mapping[str, str] | None = None,
        sagemaker_client: Any = None,
    ) -> None:
        # Load the transport at function init, not inside the first turn's 250 ms budget.
        if settings.provider == "sagemaker":
            import boto3  # noqa: F401
        else:
            import httpx  # noqa: F401
        self.settings = settings
        self._token = KeySource(settings.token_secret, settings.token_env, environ)
        self._sagemaker = sagemaker_client
        self._http: Any = None
        self._http_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    async def judge(self, turn: Turn, config: MirrorConfig) -> list[Finding] | None:
        policies = list(
            dict.fromkeys(p[:POLICY_CHARS] for p in compile_policies(config.policies).prose)
        )
        premises = _premises(turn, config)
        if not policies or not premises:
            return None
        s = self.settings
        results = await asyncio.gather(
            *(
                self._classify(text, _hypotheses(policies, call_id), config.timeouts.tier1_s)
                for call_id, text in premises
            )
        )
        findings: list[Finding] = []
        decided = True
        for (call_id, _), scores in zip(premises, results, strict=True):
            hits = [
                (p, x) for p, x in zip(policies, scores, strict=True) if x >= s.confident_threshold
            ]
            findings.extend(
                Finding(
                    CHECK,
                    "not_allowed_by_policy",
                    x,
                    f"violates policy {p!r} (NLI {x:.2f}, {s.model})",
                    call_id,
                    "tier1",
                )
                for p, x in hits
            )
            decided = decided and (bool(hits) or max(scores) < s.clean_below)
        return findings if decided else None

    async def _classify(self, premise: str, hypotheses: list[str], timeout: float) -> list[float]:
        """The entailment score of each hypothesis, in the order given."""
        payload = {
            "inputs": premise,
            "parameters": {
                "candidate_labels": hypotheses,
                "multi_label": True,
                "hypothesis_template": "{}",
            },
        }
        if self.settings.provider == "sagemaker":
            body = await self._invoke_sagemaker(payload, timeout)
        else:
            body = await self._post_hf(payload, timeout)
        return _scores(body, hypotheses)

    async def _post_hf(self, payload: dict[str, Any], timeout: float) -> Any:
        import httpx

        token = await self._token.get()
        client = self._http_client()
        try:
            r = await client.post(
                self.settings.endpoint_url,
                json=payload,
                headers={"Authorization": f"Bearer {token}"},
                timeout=httpx.Timeout(timeout),
            )
        except httpx.TimeoutException:
            raise LLMTimeout(f"tier1 {self.settings.model}: timed out") from None
        except httpx.HTTPError as e:
            raise LLMUnavailable(f"tier1 {self.settings.model}: {type(e).__name__}") from None
        if r.status_code != 200:
            # 503 is HF's "model is loading"; either way this turn goes to the next tier.
            raise LLMUnavailable(f"tier1 {self.settings.model}: HTTP {r.status_code}")
        try:
            return r.json()
        except ValueError:
            raise LLMBadOutput(f"tier1 {self.settings.model}: reply is not JSON") from None

    def _http_client(self) -> Any:
        """One AsyncClient per event loop (a client cannot outlive the loop it ran on)."""
        import httpx

        loop = asyncio.get_running_loop()
        if self._http_loop is None or self._http_loop() is not loop:
            self._http = httpx.AsyncClient(follow_redirects=False)
            self._http_loop = weakref.ref(loop)
        return self._http

    async def _invoke_sagemaker(self, payload: dict[str, Any], timeout: float) -> Any:
        try:
            async with asyncio.timeout(timeout):
                raw = await asyncio.to_thread(self._invoke_sync, json.dumps(payload).encode())
        except TimeoutError:
            raise LLMTimeout(f"tier1 {self.settings.endpoint_name}: timed out") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise LLMBadOutput(f"tier1 {self.settings.endpoint_name}: reply is not JSON") from None

    def _invoke_sync(self, body: bytes) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = self.sagemaker_client().invoke_endpoint(
                EndpointName=self.settings.endpoint_name,
                ContentType="application/json",
                Accept="application/json",
                Body=body,
            )
            data: bytes = reply["Body"].read()
            return data
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "error")
            raise LLMUnavailable(f"tier1 {self.settings.endpoint_name}: {code}") from None
        except BotoCoreError as e:
            raise LLMUnavailable(
                f"tier1 {self.settings.endpoint_name}: {type(e).__name__}"
            ) from None

    def sagemaker_client(self) -> Any:
        if self._sagemaker is None:
            from mirror.aws import client

            self._sagemaker = client(
                "sagemaker-runtime",
                connect_timeout_s=SAGEMAKER_CONNECT_S,
                read_timeout_s=SAGEMAKER_READ_S,
                attempts=1,
                region_name=self.settings.region,
            )
        return self._sagemaker


def _premises(turn: Turn, config: MirrorConfig) -> list[tuple[str | None, str]]:
    """(tool call id or None for speech, premise text): the speech, then each irreversible call."""
    caller = f'The caller said: "{turn.customer_text}"\n' if turn.customer_text else ""
    out: list[tuple[str | None, str]] = []
    if turn.agent_text.strip():
        out.append((None, f'{caller}The agent replies: "{turn.agent_text}"'[-PREMISE_CHARS:]))
    for call in turn.tool_calls:
        if config.is_irreversible(call):
            out.append((call.id, f"{caller}{_describe(call)}"[-PREMISE_CHARS:]))
    return out


def _hypotheses(policies: list[str], call_id: str | None) -> list[str]:
    template = SPEECH_HYPOTHESIS if call_id is None else ACTION_HYPOTHESIS
    return [template.format(policy=p) for p in policies]


def _describe(call: ToolCall) -> str:
    return f"The agent calls {call.name} with {json.dumps(call.args, sort_keys=True)}."


def _scores(body: Any, hypotheses: list[str]) -> list[float]:
    """Scores from either zero-shot shape: {"labels": [...], "scores": [...]} (the Inference API
    and the SageMaker Hugging Face container) or [{"label", "score"}, ...] (the HF router)."""
    pairs: Iterable[tuple[Any, Any]]
    if isinstance(body, dict) and "labels" in body and "scores" in body:
        pairs = zip(body["labels"], body["scores"], strict=False)
    elif isinstance(body, list) and all(isinstance(x, dict) for x in body):
        pairs = ((x.get("label"), x.get("score")) for x in body)
    else:
        raise LLMBadOutput("tier1: reply is not a zero-shot classification")
    by_label: dict[str, float] = {}
    for label, score in pairs:
        if (
            isinstance(label, str)
            and isinstance(score, int | float)
            and not isinstance(score, bool)
        ):
            by_label[label] = float(score)
    missing = [h for h in hypotheses if h not in by_label]
    if missing:
        raise LLMBadOutput(f"tier1: reply lacks {len(missing)} of {len(hypotheses)} hypotheses")
    scores = [by_label[h] for h in hypotheses]
    if any(not 0.0 <= x <= 1.0 for x in scores):
        raise LLMBadOutput("tier1: a score is outside 0..1")
    return scores
