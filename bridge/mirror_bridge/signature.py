"""Plivo V3 signature checks for the answer URL, the status callback and the WebSocket upgrade.

The HMAC itself is the plivo SDK's `validate_v3_signature` (pinned 4.63.0), called with the
quirks handled (plivo-protocol.md §3.3): http(s) schemes only, no None arguments, 'GET' in upper
case. Which URL Plivo signs on the upgrade is unresolved (§3.5), so the stream check tries a short
list of candidates built from the *configured* public URL and logs which one matched; every
candidate still needs an HMAC keyed with our token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from plivo.exceptions import ValidationError
from plivo.utils import validate_v3_signature

log = logging.getLogger("mirror_bridge.signature")

HEADER_V3 = "x-plivo-signature-v3"
HEADER_MA_V3 = "x-plivo-signature-ma-v3"
HEADER_NONCE = "x-plivo-signature-v3-nonce"

Params = Mapping[str, str | list[str]]


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    valid: bool
    matched: str | None = None
    """Which header and URL form matched, e.g. `v3 https`, `ma-v3 http+/websocket`."""
    reason: str = ""


def http_scheme(url: str, secure: bool = True) -> str:
    """`wss`/`ws`/`https`/`http` to `https` (secure) or `http`: the SDK rejects ws schemes."""
    u = urlsplit(url)
    return urlunsplit(("https" if secure else "http", u.netloc, u.path, u.query, u.fragment))


def with_websocket_suffix(url: str) -> str:
    """Plivo's Python stream SDK appends `/websocket` after the query (to the path without one)."""
    return url + "/websocket"


def stream_url_candidates(public_stream_url: str) -> list[tuple[str, str]]:
    """(label, url) pairs for the upgrade, most likely first (§3.5 step 2)."""
    out: list[tuple[str, str]] = []
    for label, secure in (("https", True), ("http", False)):
        url = http_scheme(public_stream_url, secure)
        out.append((label, url))
        out.append((f"{label}+/websocket", with_websocket_suffix(url)))
    return out


def _valid(
    method: str, url: str, nonce: str, token: str, header: str, params: Params | None
) -> bool:
    try:
        return bool(
            validate_v3_signature(method.upper(), url, nonce, token, header, dict(params or {}))
        )
    except (ValidationError, ValueError, TypeError) as e:
        log.debug("signature check raised for %s: %s", url, e)
        return False


def check_v3(
    headers: Mapping[str, str],
    method: str,
    candidates: list[tuple[str, str]],
    auth_token: str,
    main_auth_token: str | None = None,
    params: Params | None = None,
) -> SignatureCheck:
    """Any candidate URL with either header (each with its own token) validates the request."""
    lowered = {k.lower(): v for k, v in headers.items()}
    nonce = lowered.get(HEADER_NONCE)
    keyed: list[tuple[str, str, str]] = []
    if (sig := lowered.get(HEADER_V3)) and auth_token:
        keyed.append(("v3", sig, auth_token))
    if (sig_ma := lowered.get(HEADER_MA_V3)) and main_auth_token:
        keyed.append(("ma-v3", sig_ma, main_auth_token))
    if not nonce:
        return SignatureCheck(False, reason="missing X-Plivo-Signature-V3-Nonce")
    if not keyed:
        return SignatureCheck(False, reason="missing X-Plivo-Signature-V3")
    for header_label, sig, token in keyed:
        for url_label, url in candidates:
            if _valid(method, url, nonce, token, sig, params):
                return SignatureCheck(True, matched=f"{header_label} {url_label}")
    return SignatureCheck(False, reason="no candidate URL matched the signature")


def check_stream_upgrade(
    headers: Mapping[str, str],
    public_stream_url: str,
    auth_token: str,
    main_auth_token: str | None = None,
) -> SignatureCheck:
    """The WebSocket upgrade: GET, no params, over the stream URL candidates."""
    return check_v3(
        headers, "GET", stream_url_candidates(public_stream_url), auth_token, main_auth_token
    )


def check_post(
    headers: Mapping[str, str],
    public_url: str,
    query: str,
    params: Params,
    auth_token: str,
    main_auth_token: str | None = None,
) -> SignatureCheck:
    """A Plivo POST (answer URL, status callback): the configured URL plus the request's query,
    the form fields as params (§3.2 step 4); https first, then http."""
    u = urlsplit(public_url)
    full = urlunsplit((u.scheme, u.netloc, u.path, query or u.query, ""))
    candidates = [("https", http_scheme(full, True)), ("http", http_scheme(full, False))]
    return check_v3(headers, "POST", candidates, auth_token, main_auth_token, params)


def form_params(items: list[tuple[str, Any]]) -> dict[str, str | list[str]]:
    """Form fields to the SDK's params shape: a repeated field becomes a list."""
    out: dict[str, str | list[str]] = {}
    for key, value in items:
        value = str(value)
        if key in out:
            prev = out[key]
            out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out
