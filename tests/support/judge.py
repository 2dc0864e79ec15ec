"""Small builders for judge tests: a turn from plain lines, without the eval file format."""

from __future__ import annotations

from typing import Any

from mirror.judge import Judge
from mirror.models import MirrorConfig, Turn, Verdict


def turn(
    *lines: tuple[str, Any],
    agent_text: str = "",
    calls: list[dict[str, Any]] | None = None,
) -> Turn:
    """`lines`: ("customer", text), ("agent", text), ("agent", [calls]), ("tool", (name, text))."""
    history: list[dict[str, Any]] = []
    for role, value in lines:
        if role == "tool":
            name, text = value
            history.append({"role": "tool", "name": name, "text": text})
        elif role == "agent" and isinstance(value, list):
            history.append({"role": "agent", "text": "", "tool_calls": value})
        else:
            history.append({"role": role, "text": value})
    customer = next((m["text"] for m in reversed(history) if m["role"] == "customer"), "")
    return Turn.model_validate(
        {
            "customer_text": customer,
            "agent_text": agent_text,
            "tool_calls": calls or [],
            "history": history,
        }
    )


def call(name: str, call_id: str = "c1", **args: Any) -> dict[str, Any]:
    return {"id": call_id, "name": name, "args": args}


def judge(t: Turn, **config: Any) -> Verdict:
    return Judge(MirrorConfig(**config)).evaluate(t)


def checks(v: Verdict) -> set[str]:
    return {r.check for r in v.reasons if r.score >= 0.7}
