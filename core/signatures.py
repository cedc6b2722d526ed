"""Webhook signature schemes: verify a raw body against its headers before anything parses it.

Every comparison is constant-time (``hmac.compare_digest`` over bytes), every scheme accepts several secrets
(two are active while one is rotated), and timestamped schemes refuse stale and future timestamps alike.
The ``sign_*`` functions produce what a sender would send, for tests, benchmarks and documentation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "HmacOptions",
    "Scheme",
    "SignatureInvalid",
    "sign_github",
    "sign_hmac",
    "sign_standard",
    "sign_stripe",
    "standard_key",
    "verify",
]

DEFAULT_TOLERANCE_S = 300
"""How far a signed timestamp may be from now, either way (Stripe's and Standard Webhooks' default)."""

_TIMESTAMP = re.compile(r"^\d{1,12}$")
_MAX_SIGNATURES = 20
"""More signatures than this in one header is an attack on our CPU, not a rotation."""


class Scheme(StrEnum):
    """How a webhook sender signs its deliveries."""

    GITHUB = "github"
    STRIPE = "stripe"
    STANDARD = "standard"
    HMAC = "hmac"
    NONE = "none"


class SignatureInvalid(Exception):
    """The delivery is not signed by any active secret; ``reason`` says why (never a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Algorithm = Literal["sha256", "sha512", "sha1"]
Encoding = Literal["hex", "base64"]


@dataclass(frozen=True)
class HmacOptions:
    """The generic ``hmac`` scheme: where the signature is and how it is made.

    With ``timestamp_header``, the signed content is ``{timestamp}.{body}`` and the timestamp must be fresh.
    """

    header: str = "X-Signature"
    algorithm: Algorithm = "sha256"
    encoding: Encoding = "hex"
    prefix: str = ""
    timestamp_header: str | None = None


def verify(
    scheme: Scheme | str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
    hmac_options: HmacOptions | None = None,
) -> None:
    """Return if ``body`` carries a valid signature by one of ``secrets``; raise ``SignatureInvalid`` if not.

    Header names are matched case-insensitively; ``now`` is the Unix time freshness is checked against (the
    real clock by default).
    """
    chosen = Scheme(scheme)
    headers = {key.lower(): value for key, value in headers.items()}
    if chosen is Scheme.NONE:
        return
    if not secrets:
        raise SignatureInvalid("the trigger has no active secret")
    moment = time.time() if now is None else now
    if chosen is Scheme.GITHUB:
        _verify_github(body, headers.get("x-hub-signature-256"), secrets, headers)
    elif chosen is Scheme.STRIPE:
        _verify_stripe(body, headers.get("stripe-signature"), secrets, tolerance_s, moment)
    elif chosen is Scheme.STANDARD:
        _verify_standard(body, headers, secrets, tolerance_s, moment)
    else:
        _verify_hmac(body, headers, secrets, tolerance_s, moment, hmac_options or HmacOptions())


# -- github ------------------------------------------------------------------------------------------------


def sign_github(body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _verify_github(
    body: bytes, header: str | None, secrets: Sequence[str], headers: Mapping[str, str]
) -> None:
    if header is None:
        if headers.get("x-hub-signature") is not None:
            raise SignatureInvalid(
                "sha1 signatures (X-Hub-Signature) are not accepted; use X-Hub-Signature-256"
            )
        raise SignatureInvalid("missing X-Hub-Signature-256 header")
    algorithm, _, received = header.strip().partition("=")
    if algorithm != "sha256" or not received:
        raise SignatureInvalid("X-Hub-Signature-256 must be sha256=<hex>")
    candidates = [_ascii(received)]
    if not _matches(candidates, [sign_github(body, secret)[7:].encode() for secret in secrets]):
        raise SignatureInvalid("the signature does not match")


# -- stripe ------------------------------------------------------------------------------------------------


def sign_stripe(body: bytes, secret: str, timestamp: int) -> str:
    """A ``Stripe-Signature`` value for ``body`` signed at ``timestamp``."""
    return f"t={timestamp},v1={_stripe_digest(body, secret, str(timestamp))}"


def _stripe_digest(body: bytes, secret: str, timestamp: str) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _verify_stripe(
    body: bytes, header: str | None, secrets: Sequence[str], tolerance_s: float, now: float
) -> None:
    if header is None:
        raise SignatureInvalid("missing Stripe-Signature header")
    timestamp: str | None = None
    received: list[bytes] = []
    for part in header.split(",")[: _MAX_SIGNATURES + 1]:
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1" and value:
            received.append(_ascii(value))
    if timestamp is None or not received:
        raise SignatureInvalid("Stripe-Signature must hold t=<timestamp> and at least one v1=<signature>")
    _check_fresh(timestamp, tolerance_s, now)
    if not _matches(received, [_stripe_digest(body, s, timestamp).encode() for s in secrets]):
        raise SignatureInvalid("no v1 signature matches")


# -- standard webhooks -------------------------------------------------------------------------------------


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_<base64>``); ``ValueError`` if it is not one."""
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a standard webhooks secret is whsec_ followed by base64") from None
    if not key:
        raise ValueError("a standard webhooks secret must not be empty")
    return key


def sign_standard(body: bytes, secret: str, message_id: str, timestamp: int) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) for a Standard Webhooks delivery."""
    return "v1," + _standard_digest(body, standard_key(secret), message_id, str(timestamp)).decode()


def _standard_digest(body: bytes, key: bytes, message_id: str, timestamp: str) -> bytes:
    content = message_id.encode("utf-8", "surrogateescape") + b"." + timestamp.encode() + b"." + body
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest())


def _verify_standard(
    body: bytes, headers: Mapping[str, str], secrets: Sequence[str], tolerance_s: float, now: float
) -> None:
    message_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not message_id or timestamp is None or not signatures:
        raise SignatureInvalid("missing webhook-id, webhook-timestamp or webhook-signature header")
    _check_fresh(timestamp, tolerance_s, now)
    received = []
    for item in signatures.split()[:_MAX_SIGNATURES]:
        version, _, value = item.partition(",")
        if version == "v1" and value:
            received.append(_ascii(value))
    if not received:
        raise SignatureInvalid("webhook-signature holds no v1,<base64> signature")
    keys = []
    for secret in secrets:
        try:
            keys.append(standard_key(secret))
        except ValueError:
            continue
    expected = [_standard_digest(body, key, message_id, timestamp) for key in keys]
    if not _matches(received, expected):
        raise SignatureInvalid("no v1 signature matches")


# -- generic hmac ------------------------------------------------------------------------------------------


def sign_hmac(body: bytes, secret: str, options: HmacOptions, timestamp: int | None = None) -> str:
    """The signature header value the generic scheme expects (``timestamp`` when the options name one)."""
    return options.prefix + _hmac_digest(body, secret, options, None if timestamp is None else str(timestamp))


def _hmac_digest(body: bytes, secret: str, options: HmacOptions, timestamp: str | None) -> str:
    content = body if timestamp is None else timestamp.encode() + b"." + body
    digest = hmac.new(secret.encode(), content, getattr(hashlib, options.algorithm)).digest()
    return digest.hex() if options.encoding == "hex" else base64.b64encode(digest).decode()


def _verify_hmac(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    tolerance_s: float,
    now: float,
    options: HmacOptions,
) -> None:
    header = headers.get(options.header.lower())
    if header is None:
        raise SignatureInvalid(f"missing {options.header} header")
    timestamp: str | None = None
    if options.timestamp_header:
        timestamp = headers.get(options.timestamp_header.lower())
        if timestamp is None:
            raise SignatureInvalid(f"missing {options.timestamp_header} header")
        _check_fresh(timestamp, tolerance_s, now)
    value = header.strip()
    if options.prefix:
        if not value.startswith(options.prefix):
            raise SignatureInvalid(f"{options.header} must start with {options.prefix!r}")
        value = value[len(options.prefix) :]
    if options.encoding == "hex":
        value = value.lower()
    expected = [_hmac_digest(body, s, options, timestamp).encode() for s in secrets]
    if not _matches([_ascii(value)], expected):
        raise SignatureInvalid("the signature does not match")


# -- shared ------------------------------------------------------------------------------------------------


def _check_fresh(timestamp: str, tolerance_s: float, now: float) -> None:
    value = timestamp.strip()
    if not _TIMESTAMP.match(value):
        raise SignatureInvalid("the timestamp is not Unix seconds")
    age = now - int(value)
    if age > tolerance_s:
        raise SignatureInvalid(f"the timestamp is stale (more than {tolerance_s:g}s old)")
    if age < -tolerance_s:
        raise SignatureInvalid(f"the timestamp is in the future (more than {tolerance_s:g}s ahead)")


def _ascii(value: str) -> bytes:
    # Header text may hold anything; compare_digest refuses non-ASCII str, so compare bytes.
    return value.strip().encode("utf-8", "replace")


def _matches(received: Sequence[bytes], expected: Sequence[bytes]) -> bool:
    """Whether any received signature equals any expected one; every pair is compared (no early exit)."""
    found = False
    for candidate in received:
        for wanted in expected:
            found |= hmac.compare_digest(candidate, wanted)
    return found
