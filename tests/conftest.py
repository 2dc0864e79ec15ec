"""Fixtures and set-up shared by every test category: no developer LLM key in the environment,
`bridge/` importable, the category rule enforced (tests/categories.py), and fake AWS credentials
with the call-state table under moto.

The table is built from `CallStateTable` in template.yaml, so the tests and the deployed schema
cannot drift apart.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from mirror_dev.local import call_table_properties, create_call_table
from tests.categories import pytest_make_collect_report  # noqa: F401  (the category rule)

# A developer's own LLM keys must never make a test call out: handler modules read the
# environment at import (collection time), so this runs before any of them is imported.
for _name in (
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_DEPLOYMENT", "OPENAI_API_VERSION", "BEDROCK_MODEL_ID", "MIRROR_LLM_PROVIDER",
    "MIRROR_LLM_MODEL", "HF_TOKEN", "MIRROR_CONFIG",
):  # fmt: skip
    os.environ.pop(_name, None)

REPO_ROOT = Path(__file__).resolve().parents[1]

# The campaign's hypothesis profiles (tests/**/test_campaign_*.py, tests/e2e/test_bridge_fuzz.py):
# `ci`, the default, keeps `make test` bounded (examples per property, no shrinking, which can take
# minutes on a found case); `campaign` is `make campaign`'s long run (HYPOTHESIS_PROFILE=campaign).
# Both are derandomized with no example database, so a run is repeatable and writes nothing.
_CAMPAIGN_HEALTH = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                    HealthCheck.data_too_large, HealthCheck.large_base_example,
                    HealthCheck.filter_too_much]  # fmt: skip
settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True, database=None,
    suppress_health_check=_CAMPAIGN_HEALTH,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)  # fmt: skip
settings.register_profile(
    "campaign", max_examples=int(os.environ.get("MIRROR_CAMPAIGN_EXAMPLES", "600")),
    deadline=None, derandomize=False, database=None,
    suppress_health_check=_CAMPAIGN_HEALTH,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],
)  # fmt: skip
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The bridge package is not installed: make `mirror_bridge` importable for every category.
BRIDGE_DIR = REPO_ROOT / "bridge"
if str(BRIDGE_DIR) not in sys.path:
    sys.path.insert(0, str(BRIDGE_DIR))

TEMPLATE_PATH = REPO_ROOT / "template.yaml"
TEST_TABLE_NAME = "mirror-call-state-test"
TEST_REGION = "us-east-1"
AUTH_TOKEN = "MY_TEST_AUTH_TOKEN"  # the bridge's Plivo auth token in the tests


def run(coro: Any, timeout: float = 20.0) -> Any:
    """Run a test coroutine on a fresh loop with an overall deadline."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def call_state_table_properties() -> dict[str, Any]:
    return call_table_properties(TEMPLATE_PATH)


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and no custom endpoint, so nothing can reach a real account."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": TEST_REGION,
        "AWS_REGION": TEST_REGION,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name, raising=False)


def _serialize_moto_dynamodb(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto's DynamoDB operations atomic with respect to each other, as DynamoDB's are.

    moto checks a condition and then writes without a lock, and a failed transaction restores a
    deep copy of the whole table, so concurrent test threads could see races DynamoDB never has.
    """
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()  # re-entrant: transact_write_items calls put_item/update_item

    def locked(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return method(*args, **kwargs)

        return wrapper

    for name in (
        "get_item",
        "query",
        "put_item",
        "update_item",
        "delete_item",
        "transact_write_items",
    ):
        monkeypatch.setattr(DynamoDBBackend, name, locked(getattr(DynamoDBBackend, name)))


_BOTO_SESSION: Any = None


def boto_session() -> Any:
    """One boto3 session for the test process: a fresh session re-reads the service models,
    which costs ~60 ms per client; a shared one makes clients nearly free."""
    global _BOTO_SESSION
    if _BOTO_SESSION is None:
        import boto3

        _BOTO_SESSION = boto3.session.Session()
    return _BOTO_SESSION


@pytest.fixture
def dynamodb_client(aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A DynamoDB client inside in-process moto (fresh, empty backend per test)."""
    from moto import mock_aws

    _serialize_moto_dynamodb(monkeypatch)
    with mock_aws():
        yield boto_session().client("dynamodb", region_name=TEST_REGION)


@pytest.fixture
def call_state_table(dynamodb_client: Any) -> str:
    """A moto table shaped like `CallStateTable` in template.yaml; returns its name."""
    create_call_table(dynamodb_client, TEST_TABLE_NAME, call_state_table_properties())
    return TEST_TABLE_NAME
