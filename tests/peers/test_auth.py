"""Request and response signing (docs/protocol.md, "Authentication")."""

from __future__ import annotations

import hashlib
import hmac

import blake3
import pytest

from syncd.auth import (
    AuthError,
    Verifier,
    body_hash,
    check_response,
    new_key,
    parse_key,
    sign_request,
    sign_response,
)

KEY = bytes(range(32))
NOW = 1_763_900_000
BODY = b'{"device": "3f2a", "name": "alpha"}'


def signed(**kw) -> dict[str, str]:
    args = {"key": KEY, "method": "POST", "target": "/v1/changes?since=4", "body": BODY,
            "now": NOW} | kw
    return sign_request(**args)


def check(headers, *, verifier=None, method="POST", target="/v1/changes?since=4", body=BODY,
          now=NOW) -> Verifier:
    verifier = verifier or Verifier(KEY)
    verifier.check_request(method, target, headers, body, now=now)
    return verifier


def test_keys():
    key = new_key()
    assert len(key) == 32 and key != new_key()
    assert parse_key(f"  {key.hex()}\n") == key
    for bad in ["", key.hex()[:-1], key.hex() + "0", key.hex().upper(), "g" * 64,
                key.hex()[:32] + " " + key.hex()[32:]]:
        with pytest.raises(ValueError, match="64 lowercase hex digits"):
            parse_key(bad)


def documented_body_hash(body: bytes) -> str:
    """docs/protocol.md: BLAKE3 over the BLAKE3 digests of the body's 1 MiB pieces."""
    digests = b"".join(blake3.blake3(body[i:i + (1 << 20)]).digest()
                       for i in range(0, len(body), 1 << 20))
    return blake3.blake3(digests).hexdigest()


def test_body_hash_is_the_documented_one():
    for size in [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, 3 << 20]:
        body = bytes(range(256)) * (size // 256) + bytes(size % 256)
        assert body_hash(body).hex() == documented_body_hash(body), size
    assert body_hash(b"").hex() == blake3.blake3(b"").hexdigest()


def test_signature_is_the_documented_one():
    headers = signed(nonce="0" * 32)
    text = "\n".join(["syncd-request-v1", "POST", "/v1/changes?since=4", str(NOW), "0" * 32,
                      documented_body_hash(BODY)])
    assert headers == {
        "X-Syncd-Time": str(NOW), "X-Syncd-Nonce": "0" * 32,
        "X-Syncd-Signature": hmac.new(KEY, text.encode(), hashlib.sha256).hexdigest()}
    response = sign_response(KEY, 200, "0" * 32, body_hash(b"{}"), now=NOW)
    text = "\n".join(["syncd-response-v1", "200", "0" * 32, str(NOW),
                      documented_body_hash(b"{}")])
    assert response == {"X-Syncd-Time": str(NOW),
                        "X-Syncd-Signature": hmac.new(KEY, text.encode(),
                                                      hashlib.sha256).hexdigest()}


def test_round_trip_with_asgi_style_lowercase_headers():
    headers = signed()
    check(headers)
    check({k.lower(): v for k, v in signed().items()})
    check(signed(method="get", body=b""), method="GET", body=b"")
    assert len(headers["X-Syncd-Nonce"]) == 32 and headers["X-Syncd-Nonce"] != \
        signed()["X-Syncd-Nonce"]


@pytest.mark.parametrize("change, reason", [
    ({"verifier": Verifier(bytes(32))}, "bad signature"),
    ({"body": BODY + b" "}, "bad signature"),
    ({"target": "/v1/changes?since=0"}, "bad signature"),
    ({"target": "/v1/changes"}, "bad signature"),
    ({"method": "GET"}, "bad signature"),
    ({"now": NOW + 301}, "stale time"),
    ({"now": NOW - 301}, "stale time"),
])
def test_refusals(change, reason):
    with pytest.raises(AuthError, match=reason):
        check(signed(), **change)


def test_time_within_the_skew_passes():
    check(signed(), now=NOW + 300)
    check(signed(), now=NOW - 300)


def test_a_replayed_nonce_is_refused_until_it_could_no_longer_be_fresh():
    headers = signed()
    verifier = check(headers)
    with pytest.raises(AuthError, match="replayed"):
        check(headers, verifier=verifier, now=NOW + 200)
    # a replay signed afresh with the same nonce is still a replay
    with pytest.raises(AuthError, match="replayed"):
        check(signed(nonce=headers["X-Syncd-Nonce"], now=NOW + 500), verifier=verifier,
              now=NOW + 500)
    # by the time the nonce is forgotten, the old request is stale anyway
    with pytest.raises(AuthError, match="stale"):
        check(headers, verifier=verifier, now=NOW + 601)
    assert not verifier._seen


def test_only_accepted_requests_use_up_their_nonce():
    verifier = Verifier(KEY)
    headers = signed()
    for bad in [dict(headers, **{"X-Syncd-Signature": "0" * 64}), headers]:
        with pytest.raises(AuthError):
            check(bad, verifier=verifier, now=NOW + 1000)
    assert not verifier._seen  # refused requests leave nothing in memory
    check(headers, verifier=verifier)


@pytest.mark.parametrize("name", ["X-Syncd-Time", "X-Syncd-Nonce", "X-Syncd-Signature"])
def test_missing_header(name):
    headers = signed()
    del headers[name]
    with pytest.raises(AuthError, match=f"missing header {name}"):
        check(headers)


@pytest.mark.parametrize("name, value", [
    ("X-Syncd-Time", "17639e5"), ("X-Syncd-Time", ""), ("X-Syncd-Nonce", "Z" * 32),
    ("X-Syncd-Signature", "é" * 64), ("X-Syncd-Signature", "ab"),
])
def test_malformed_header(name, value):
    with pytest.raises(AuthError, match=f"malformed {name}|bad signature"):
        check(dict(signed(), **{name: value}))


def test_nonce_memory_must_outlast_two_skews():
    with pytest.raises(ValueError):
        Verifier(KEY, skew=300, nonce_ttl=599)


def test_response_check():
    nonce, body = signed()["X-Syncd-Nonce"], body_hash(b"{}")
    headers = sign_response(KEY, 200, nonce, body, now=NOW)
    check_response(KEY, 200, nonce, headers, body, now=NOW + 10)
    check_response(KEY, 200, nonce, {k.lower(): v for k, v in headers.items()}, body, now=NOW)
    refusals = [
        ((bytes(32), 200, nonce, headers, body), "bad signature"),
        ((KEY, 500, nonce, headers, body), "bad signature"),
        ((KEY, 200, "0" * 32, headers, body), "bad signature"),
        ((KEY, 200, nonce, headers, body_hash(b"{ }")), "bad signature"),
        ((KEY, 200, nonce, {"X-Syncd-Time": str(NOW)}, body), "missing header"),
    ]
    for args, reason in refusals:
        with pytest.raises(AuthError, match=reason):
            check_response(*args, now=NOW)
    with pytest.raises(AuthError, match="stale"):
        check_response(KEY, 200, nonce, headers, body, now=NOW + 301)
