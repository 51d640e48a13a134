"""Outgoing webhooks: signed POSTs to the operator's endpoints, and the check receivers run.

Body: the event as JSON, ``{"id", "type", "created", "data"}`` (``id`` is the event id: the same
event is delivered with the same id on every attempt, so receivers deduplicate by it).

Headers (Stripe's scheme, RELIABILITY R9):

* ``Evbilling-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>``,
  signed afresh on every attempt;
* ``Evbilling-Event-Id: <event id>``.

``verify`` is what a receiver does: it refuses a missing or malformed header, a signature that
matches none of the secrets (give two during a secret rotation) and a timestamp more than
``tolerance_s`` (300 s) old or more than 60 s in the future; signatures are compared in constant
time. ``HttpWebhookSender`` posts with httpx (timeouts on connect and on the whole exchange, no
redirects followed, the response body never read): a 2xx is delivered, anything else is retried
by the delivery worker. Unless ``allow_private_networks``, an endpoint that resolves to a
loopback, private, link-local or reserved address is refused (a guard against server-side request
forgery; a DNS answer that changes between the check and the connection is not caught).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from evbilling import __version__
from evbilling.services.notifications import SendResult

SIGNATURE_HEADER = "Evbilling-Signature"
EVENT_ID_HEADER = "Evbilling-Event-Id"
TOLERANCE_S = 300
FUTURE_TOLERANCE_S = 60
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of generated secrets
TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
SIGNATURE_HEADER_MAX = 2_000


class WebhookSignatureError(ValueError):
    """The request is not a genuine, fresh webhook; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_secret() -> str:
    """A signing secret: ``whsec_`` + 256 random bits."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int) -> str:
    return f"t={timestamp},v1={sign(secret, body, timestamp)}"


def verify(body: bytes, header: str | None, secret: str | Sequence[str], *,
           tolerance_s: int = TOLERANCE_S, future_tolerance_s: int = FUTURE_TOLERANCE_S,
           now: int | None = None) -> int:
    """Check a received webhook; returns its timestamp or raises ``WebhookSignatureError``.
    Precedence: missing header, malformed header, no matching signature, stale timestamp."""
    if not header:
        raise WebhookSignatureError("missing signature header")
    if len(header) > SIGNATURE_HEADER_MAX:
        raise WebhookSignatureError("malformed signature header")
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            signatures.append(value)
    if len(timestamps) != 1 or not (timestamps[0].isascii() and timestamps[0].isdigit()) \
            or not signatures:
        raise WebhookSignatureError("malformed signature header")
    timestamp = int(timestamps[0])
    keys = [secret] if isinstance(secret, str) else list(secret)
    expected = [sign(key, body, timestamp) for key in keys]
    if not any(hmac.compare_digest(e.encode(), given.encode())
               for e in expected for given in signatures):
        raise WebhookSignatureError("no signature matches")
    current = int(time.time()) if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookSignatureError("timestamp too old")
    if timestamp > current + future_tolerance_s:
        raise WebhookSignatureError("timestamp in the future")
    return timestamp


def check_url(url: str) -> str:
    """An endpoint URL we are willing to call: http(s), a host, no credentials in it."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise ValueError("no credentials in the URL (the signature authenticates us)")
    if parts.fragment:
        raise ValueError("no #fragment")
    return url


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)


class HttpWebhookSender:
    """``services.notifications.WebhookSender`` over httpx (one client per event loop)."""

    def __init__(self, *, timeout_s: float = TIMEOUT_S,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 allow_private_networks: bool = False,
                 clock: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self.allow_private_networks = allow_private_networks
        self.clock = clock
        self.transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout, follow_redirects=False, transport=self.transport,
                headers={"User-Agent": f"evbilling-webhooks/{__version__}"},
                limits=httpx.Limits(max_connections=50, max_keepalive_connections=10))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(self, *, url: str, secret: str,
                   envelope: Mapping[str, Any]) -> SendResult:
        try:
            check_url(url)
        except ValueError as exc:
            return SendResult(False, f"refused URL: {exc}", permanent=True)
        if not self.allow_private_networks:
            refusal = await self._refuse_private(url)
            if refusal is not None:
                return refusal
        body = orjson.dumps(dict(envelope))
        timestamp = int(self.clock())
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: signature_header(secret, body, timestamp),
                   EVENT_ID_HEADER: str(envelope.get("id", ""))}
        try:
            async with self._http().stream("POST", url, content=body,
                                           headers=headers) as response:
                status = response.status_code  # the body is never read
        except httpx.TimeoutException:
            return SendResult(False, "timed out")
        except httpx.HTTPError as exc:
            return SendResult(False, f"{type(exc).__name__}: {exc}"[:500])
        if 200 <= status < 300:
            return SendResult(True)
        return SendResult(False, f"HTTP {status}")

    @staticmethod
    async def _refuse_private(url: str) -> SendResult | None:
        host = urlsplit(url).hostname or ""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None)
        except OSError as exc:
            return SendResult(False, f"cannot resolve {host}: {exc}")
        addresses = {str(info[4][0]) for info in infos}
        if not addresses or not all(_public(a) for a in addresses):
            return SendResult(False, f"{host} resolves to a private address", permanent=True)
        return None
