"""Tier 0 checks. Each is small, pure, and blocks only on exact or structural evidence."""

from __future__ import annotations

from mirror.judge.base import Check
from mirror.judge.checks.amounts import AmountConsistency
from mirror.judge.checks.confirmation import Confirmation
from mirror.judge.checks.grounding import Grounding
from mirror.judge.checks.identity import ObjectIdentity
from mirror.judge.checks.retraction import Retraction
from mirror.judge.checks.rules import OperatorRules
from mirror.judge.checks.variants import VariantOptions

TIER0_CHECKS: tuple[Check, ...] = (
    Confirmation(),
    Grounding(),
    ObjectIdentity(),
    VariantOptions(),
    AmountConsistency(),
    Retraction(),
    OperatorRules(),
)

__all__ = ["TIER0_CHECKS"]
