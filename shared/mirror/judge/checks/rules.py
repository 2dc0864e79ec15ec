"""Operator rules compiled from `FORBID` / `REQUIRE` directives (see `mirror.policy`)."""

from __future__ import annotations

from mirror.judge import text as tx
from mirror.judge.base import CheckInput, Finding
from mirror.policy import Rule


def triggered(rule: Rule, caller_line: str, agent_text: str) -> bool:
    if rule.trigger_speaker is None:
        return True
    said = caller_line if rule.trigger_speaker == "customer" else agent_text
    return any(tx.find_phrase(said, t) for t in rule.triggers)


class OperatorRules:
    id = "operator_rule"
    default_score = 0.9  # each rule carries its own score; check_scores[id] overrides all

    def run(self, inp: CheckInput) -> list[Finding]:
        found: list[Finding] = []
        if not inp.policies.rules:
            return found
        agent = inp.turn.agent_text.lower()
        if not agent:
            return found
        caller = inp.dialogue.caller_lines[-1] if inp.dialogue.caller_lines else ""
        for rule in inp.policies.rules:
            if not triggered(rule, caller, agent):
                continue
            score = inp.config.check_score(self.id, rule.score)
            if rule.kind == "forbid":
                for phrase in rule.phrases:
                    if said := tx.find_phrase(agent, phrase):
                        found.append(
                            Finding(
                                self.id,
                                "not_allowed_by_policy",
                                score,
                                f"the agent says {said!r}; policy: {rule.source}",
                            )
                        )
                        break
            elif not any(tx.contains_phrase(agent, p) for p in rule.phrases):
                found.append(
                    Finding(
                        self.id,
                        "not_allowed_by_policy",
                        score,
                        f"the agent does not say {' or '.join(repr(p) for p in rule.phrases)}; "
                        f"policy: {rule.source}",
                    )
                )
        return found
