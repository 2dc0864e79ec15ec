"""API keys: Secrets Manager through Powertools Parameters when a secret is named, else an env var.

Powertools caches the secret for `SECRET_MAX_AGE_S`, so a rotated key is picked up within that
time without a fetch per call. Values are never logged, put in errors or kept in settings.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping

from mirror.llm.base import LLMUnavailable

SECRET_MAX_AGE_S = 300
_JSON_KEYS = ("api_key", "token")


class KeySource:
    def __init__(
        self,
        secret_name: str | None,
        env_name: str | None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.secret_name = secret_name
        self.env_name = env_name
        self._environ = environ
        self._force = False

    async def get(self) -> str:
        if self.secret_name:
            return await asyncio.to_thread(self._from_secret, self.secret_name)
        env = os.environ if self._environ is None else self._environ
        value = env.get(self.env_name or "", "").strip()
        if not value:
            raise LLMUnavailable(f"no API key: set {self.env_name} or configure a secret")
        return value

    def invalidate(self) -> None:
        """After a 401: read the secret again on the next call (it may have been rotated)."""
        self._force = True

    def _from_secret(self, name: str) -> str:
        from aws_lambda_powertools.utilities import parameters

        force, self._force = self._force, False
        try:
            raw = parameters.get_secret(name, max_age=SECRET_MAX_AGE_S, force_fetch=force)
        except Exception as e:  # noqa: BLE001 - GetParameterError and botocore errors alike
            raise LLMUnavailable(f"could not read secret {name!r} ({type(e).__name__})") from None
        if isinstance(raw, bytes):
            raw = raw.decode()
        return _key_in(str(raw), name)


def _key_in(raw: str, name: str) -> str:
    """A plain secret string, or a JSON key/value secret with `api_key` (or `token`)."""
    text = raw.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            for k in _JSON_KEYS:
                value = doc.get(k)
                if isinstance(value, str) and value.strip():
                    return value.strip()
            raise LLMUnavailable(f"secret {name!r} is JSON without an api_key or token field")
    if not text:
        raise LLMUnavailable(f"secret {name!r} is empty")
    return text
