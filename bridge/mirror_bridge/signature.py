"""Plivo V3 signature checks for the answer URL, the status callback and the WebSocket upgrade.

The HMAC itself is the plivo SDK's `validate_v3_signature` (pinned 4.63.0), called with the
quirks handled (plivo-protocol.md §3.3): http(s) schemes only, no None arguments, 'GET' in upper
case. Which URL Plivo signs on the upgrade is unresolved (§3.5), so the stream check tries a short
list of candidates built from the *configured* public URL and logs which one matched; every
candidate still needs an HMAC keyed with our token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from plivo.exceptions import ValidationError
from plivo.utils import validate_v3_signature

from mirror_bridge.tenants import normalize_number

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
    query: str = "",
) -> SignatureCheck:
    """The WebSocket upgrade: GET, no params, over the stream URL candidates; `query` is the
    request's (the answer's per-call token), so the signature covers it."""
    url = with_query(public_stream_url, query)
    return check_v3(headers, "GET", stream_url_candidates(url), auth_token, main_auth_token)


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


# --- per-call stream tokens ----------------------------------------------------------------
#
# Plivo's V3 signature on the upgrade proves Plivo sent it once, but the stream URL used to be
# constant: one captured header pair opened streams for any call, for ever. The answer now puts
# a token in the `<Stream>` URL, bound to the call (its id, the number that chose the tenant,
# the tenant) and expiring a few minutes later; the upgrade is checked against the URL WITH its
# query (so the signature covers the token), the token is verified, and a replay cache lets one
# token open one stream. After `start`, the relay checks the call id and number in the frame
# against the token's (`StreamGrant.mismatch`), so a stream opened with it is that call's.

TOKEN_PARAM = "token"
TOKEN_VERSION = "v1"
_TOKEN_KEY_LABEL = b"mirror-stream-token-v1"
MAX_TOKEN_CHARS = 2_048
"""Longer query values are refused before any decoding."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _token_key(secret: str) -> bytes:
    """The tokens' own key, derived from the secret: a token MAC is never a Plivo signature."""
    return hmac.new(secret.encode(), _TOKEN_KEY_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class StreamGrant:
    """What a valid token allows: one stream of this call, before `expires_at`."""

    call_id: str
    number: str
    """The normalized number the answer chose the tenant by ('' when there was none)."""
    tenant_id: str
    expires_at: float
    nonce: str

    def mismatch(self, call_id: str, number: str | None) -> str | None:
        """Why a `start` frame is not this grant's call (None when it is)."""
        if not hmac.compare_digest(call_id.encode(), self.call_id.encode()):
            return "the start frame's callId is not the token's call"
        if normalize_number(number or "") != self.number:
            return "the start frame's number is not the token's"
        return None


def mint_stream_token(
    secret: str, call_id: str, number: str, tenant_id: str, now: float, ttl_s: float
) -> str:
    """`v1.<payload>.<mac>`: the call id, number and tenant, an expiry and a nonce, MACed."""
    payload = json.dumps(
        {"c": call_id, "n": number, "t": tenant_id, "e": int(now + ttl_s) + 1,
         "j": secrets.token_hex(12)},
        separators=(",", ":"),
    )  # fmt: skip
    body = f"{TOKEN_VERSION}.{_b64(payload.encode())}"
    mac = hmac.new(_token_key(secret), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def read_stream_token(secret: str, token: str | None, now: float) -> StreamGrant | str:
    """The grant a token carries, or why it is refused (missing, malformed, forged, expired).
    The replay check is the caller's (`ReplayCache`)."""
    if not token:
        return "missing stream token"
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        return "malformed stream token"
    version, payload, mac = token.split(".")
    if version != TOKEN_VERSION:
        return "unknown stream token version"
    want = hmac.new(_token_key(secret), f"{version}.{payload}".encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(_unb64(mac), want):
            return "stream token MAC does not match"
        data = json.loads(_unb64(payload))
    except (ValueError, TypeError):
        return "malformed stream token"
    try:
        grant = StreamGrant(
            call_id=str(data["c"]), number=str(data["n"]), tenant_id=str(data["t"]),
            expires_at=float(data["e"]), nonce=str(data["j"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return "malformed stream token"
    if not grant.expires_at > now:
        return "stream token expired"
    return grant


class ReplayCache:
    """Nonces of the tokens that opened a stream, each kept until its token expires: one token
    opens one stream (per bridge task). Bounded: when full of unexpired nonces, new ones are
    refused (fail closed) rather than an old one forgotten."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._seen: dict[str, float] = {}

    def claim(self, grant: StreamGrant, now: float) -> bool:
        """True the first time a grant's nonce is seen; False for a replay (or a full cache)."""
        seen = self._seen
        if grant.nonce in seen and seen[grant.nonce] > now:
            return False
        if len(seen) >= self.max_entries:
            for nonce in [n for n, exp in seen.items() if exp <= now]:
                del seen[nonce]
            if len(seen) >= self.max_entries:
                log.error("stream token replay cache is full; refusing the stream")
                return False
        seen[grant.nonce] = grant.expires_at
        return True

    def __len__(self) -> int:
        return len(self._seen)


def with_query(url: str, query: str) -> str:
    """`url` with `query` appended (after any query it already has)."""
    if not query:
        return url
    return f"{url}{'&' if urlsplit(url).query else '?'}{query}"
