"""FixPr task. Record: the fix's outcome (opened, rejected with who and why, or failed with why).

Thin on purpose: the step lives in `mirror.fixes.workflow`; `mirror.fixes.tasks.run` builds
its dependencies and lets failures propagate, so Step Functions sees the error's class name
(statemachines/fix_pr.asl.json retries `TransientError`, catches the rest).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from mirror.fixes.tasks import run

logger = Logger()
metrics = Metrics()


def _count(name: str, **dimensions: str) -> None:
    with single_metric(name=name, unit=MetricUnit.Count, value=1) as metric:
        for key, value in dimensions.items():
            metric.add_dimension(name=key, value=value)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return run("record", event, logger, _count)
