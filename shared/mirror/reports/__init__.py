"""Post-call failure reports: patterns, the report builder, its stores and the service.

Importing this package does no I/O and imports neither boto3 nor an LLM SDK.
"""

from __future__ import annotations

from mirror.reports.models import CallEndedDetail, CallReport, ReportEntry, parse_call_ended
from mirror.reports.naming import execution_name, window_of
from mirror.reports.patterns import pattern, pattern_id

__all__ = [
    "CallEndedDetail",
    "CallReport",
    "ReportEntry",
    "execution_name",
    "parse_call_ended",
    "pattern",
    "pattern_id",
    "window_of",
]
