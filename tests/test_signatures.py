"""Signature schemes against the senders' documented vectors, and every way a signature can be wrong."""

from __future__ import annotations

import time

import pytest

from core.signatures import (
    HmacOptions,
    Scheme,
    SignatureInvalid,
    sign_github,
    sign_hmac,
    sign_standard,
    sign_stripe,
    verify,
)

GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STANDARD_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STANDARD_TIMESTAMP = 1614265330
STANDARD_BODY = b'{"test": 2432232314}'
STANDARD_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _rejected(reason_part: str, **kwargs: object) -> None:
    with pytest.raises(SignatureInvalid) as caught:
        verify(**kwargs)  # type: ignore[arg-type]
    assert reason_part in caught.value.reason


# -- github ------------------------------------------------------------------------------------------------


def test_github_documented_vector_is_accepted() -> None:
    assert sign_github(GITHUB_BODY, GITHUB_SECRET) == GITHUB_SIGNATURE
    verify(
        "github",
        body=GITHUB_BODY,
        headers={"X-Hub-Signature-256": GITHUB_SIGNATURE},
        secrets=[GITHUB_SECRET],
    )


@pytest.mark.parametrize(
    ("body", "headers", "secret", "reason"),
    [
        (b"Hello, World?", {"X-Hub-Signature-256": GITHUB_SIGNATURE}, GITHUB_SECRET, "does not match"),
        (GITHUB_BODY, {"X-Hub-Signature-256": GITHUB_SIGNATURE}, "It's a Secret to Everybody!", "match"),
        (GITHUB_BODY, {}, GITHUB_SECRET, "missing"),
        (
            GITHUB_BODY,
            {"X-Hub-Signature": "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59"},
            GITHUB_SECRET,
            "sha1",
        ),
        (
            GITHUB_BODY,
            {"X-Hub-Signature-256": "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59"},
            GITHUB_SECRET,
            "sha256",
        ),
        (GITHUB_BODY, {"X-Hub-Signature-256": "sha256="}, GITHUB_SECRET, "sha256"),
        (GITHUB_BODY, {"X-Hub-Signature-256": GITHUB_SIGNATURE.upper()}, GITHUB_SECRET, "sha256"),
        (GITHUB_BODY, {"X-Hub-Signature-256": "sha256=ünïcödé"}, GITHUB_SECRET, "does not match"),
    ],
    ids=[
        "one-byte-change",
        "wrong-secret",
        "missing",
        "sha1-header",
        "sha1-prefix",
        "empty",
        "upper",
        "unicode",
    ],
)
def test_github_rejects(body: bytes, headers: dict[str, str], secret: str, reason: str) -> None:
    _rejected(reason, scheme="github", body=body, headers=headers, secrets=[secret])


def test_every_byte_matters() -> None:
    for i in range(len(GITHUB_BODY)):
        changed = GITHUB_BODY[:i] + bytes([GITHUB_BODY[i] ^ 1]) + GITHUB_BODY[i + 1 :]
        with pytest.raises(SignatureInvalid):
            verify(
                "github",
                body=changed,
                headers={"x-hub-signature-256": GITHUB_SIGNATURE},
                secrets=[GITHUB_SECRET],
            )


# -- standard webhooks -------------------------------------------------------------------------------------


def _standard_headers(
    signature: str = STANDARD_SIGNATURE, timestamp: int = STANDARD_TIMESTAMP
) -> dict[str, str]:
    return {"webhook-id": STANDARD_ID, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_standard_reference_vector_verifies_at_its_time() -> None:
    assert (
        sign_standard(STANDARD_BODY, STANDARD_SECRET, STANDARD_ID, STANDARD_TIMESTAMP) == STANDARD_SIGNATURE
    )
    verify(
        "standard",
        body=STANDARD_BODY,
        headers=_standard_headers(),
        secrets=[STANDARD_SECRET],
        now=STANDARD_TIMESTAMP + 10,
    )


def test_standard_reference_vector_is_stale_with_the_real_clock() -> None:
    _rejected(
        "stale", scheme="standard", body=STANDARD_BODY, headers=_standard_headers(), secrets=[STANDARD_SECRET]
    )


def test_standard_future_timestamp_is_rejected() -> None:
    _rejected(
        "future",
        scheme="standard",
        body=STANDARD_BODY,
        headers=_standard_headers(),
        secrets=[STANDARD_SECRET],
        now=STANDARD_TIMESTAMP - 301,
    )


def test_standard_space_separated_signatures_rotation() -> None:
    other = sign_standard(
        STANDARD_BODY, "whsec_" + "b3RoZXIgc2VjcmV0IGtleQ==", STANDARD_ID, STANDARD_TIMESTAMP
    )
    both = f"v1a,ignored {other} {STANDARD_SIGNATURE}"
    verify(
        "standard",
        body=STANDARD_BODY,
        headers=_standard_headers(both),
        secrets=[STANDARD_SECRET],
        now=STANDARD_TIMESTAMP,
    )
    _rejected(
        "no v1",
        scheme="standard",
        body=STANDARD_BODY + b" ",
        headers=_standard_headers(both),
        secrets=[STANDARD_SECRET],
        now=STANDARD_TIMESTAMP,
    )
    _rejected(
        "missing",
        scheme="standard",
        body=STANDARD_BODY,
        headers={"webhook-id": STANDARD_ID},
        secrets=[STANDARD_SECRET],
    )
    _rejected(
        "Unix seconds",
        scheme="standard",
        body=STANDARD_BODY,
        headers={**_standard_headers(), "webhook-timestamp": "9" * 400},
        secrets=[STANDARD_SECRET],
    )


# -- stripe ------------------------------------------------------------------------------------------------


def test_stripe_several_v1_and_tolerance() -> None:
    body = b'{"id": "evt_1", "type": "charge.succeeded"}'
    now = int(time.time())
    good = sign_stripe(body, "whsec_stripe_new", now).split(",")[1]
    old = sign_stripe(body, "whsec_stripe_old", now).split(",")[1]
    header = f"t={now},{old},{good},v0=deadbeef"
    verify("stripe", body=body, headers={"Stripe-Signature": header}, secrets=["whsec_stripe_new"])
    verify("stripe", body=body, headers={"Stripe-Signature": header}, secrets=["whsec_stripe_old"])
    _rejected(
        "no v1", scheme="stripe", body=body, headers={"Stripe-Signature": header}, secrets=["whsec_other"]
    )
    stale = sign_stripe(body, "whsec_stripe_new", now - 301)
    _rejected(
        "stale", scheme="stripe", body=body, headers={"Stripe-Signature": stale}, secrets=["whsec_stripe_new"]
    )
    verify(
        "stripe",
        body=body,
        headers={"Stripe-Signature": stale},
        secrets=["whsec_stripe_new"],
        tolerance_s=600,
    )
    future = sign_stripe(body, "whsec_stripe_new", now + 301)
    _rejected(
        "future",
        scheme="stripe",
        body=body,
        headers={"Stripe-Signature": future},
        secrets=["whsec_stripe_new"],
    )
    _rejected(
        "t=", scheme="stripe", body=body, headers={"Stripe-Signature": f"v1={good[3:]}"}, secrets=["x" * 8]
    )
    _rejected("missing", scheme="stripe", body=body, headers={}, secrets=["whsec_stripe_new"])


# -- generic hmac ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        HmacOptions(),
        HmacOptions(header="X-Sig", algorithm="sha512", encoding="base64"),
        HmacOptions(header="X-Shopify-Hmac-Sha256", encoding="base64"),
        HmacOptions(algorithm="sha1", prefix="sha1="),
        HmacOptions(prefix="v0=", timestamp_header="X-Timestamp"),
    ],
    ids=["default", "sha512-base64", "shopify", "sha1-prefix", "timestamped"],
)
def test_hmac_variants(options: HmacOptions) -> None:
    body = b'{"order": 7}'
    now = int(time.time())
    stamp = now if options.timestamp_header else None
    headers = {options.header: sign_hmac(body, "hmac-secret", options, stamp)}
    if options.timestamp_header:
        headers[options.timestamp_header] = str(now)
    verify("hmac", body=body, headers=headers, secrets=["hmac-secret"], hmac_options=options)
    _rejected(
        "match",
        scheme="hmac",
        body=body + b"x",
        headers=headers,
        secrets=["hmac-secret"],
        hmac_options=options,
    )
    _rejected(
        "match", scheme="hmac", body=body, headers=headers, secrets=["other-secret"], hmac_options=options
    )
    _rejected("missing", scheme="hmac", body=body, headers={}, secrets=["hmac-secret"], hmac_options=options)
    if options.timestamp_header:
        old = {
            options.header: sign_hmac(body, "hmac-secret", options, now - 1000),
            options.timestamp_header: str(now - 1000),
        }
        _rejected(
            "stale", scheme="hmac", body=body, headers=old, secrets=["hmac-secret"], hmac_options=options
        )
        moved = {**headers, options.timestamp_header: str(now - 1)}  # the timestamp is part of what is signed
        _rejected(
            "match", scheme="hmac", body=body, headers=moved, secrets=["hmac-secret"], hmac_options=options
        )
    if options.prefix:
        bare = {**headers, options.header: headers[options.header][len(options.prefix) :]}
        _rejected(
            "start with",
            scheme="hmac",
            body=body,
            headers=bare,
            secrets=["hmac-secret"],
            hmac_options=options,
        )


# -- rotation and none -------------------------------------------------------------------------------------


def test_two_active_secrets_during_rotation() -> None:
    body = b'{"x": 1}'
    for secret in ("old-secret-1234", "new-secret-5678"):
        headers = {"X-Hub-Signature-256": sign_github(body, secret)}
        verify("github", body=body, headers=headers, secrets=["new-secret-5678", "old-secret-1234"])
        verify(Scheme.GITHUB, body=body, headers=headers, secrets=[secret])
    retired = {"X-Hub-Signature-256": sign_github(body, "old-secret-1234")}
    _rejected("match", scheme="github", body=body, headers=retired, secrets=["new-secret-5678"])
    _rejected("no active secret", scheme="github", body=body, headers=retired, secrets=[])


def test_none_accepts_anything_only_when_chosen() -> None:
    verify("none", body=b"anything", headers={}, secrets=[])
    with pytest.raises(ValueError, match="is not a valid Scheme"):
        verify("", body=b"anything", headers={}, secrets=[])
