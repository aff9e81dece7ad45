"""Signed requests and responses between peers (DESIGN rule 7, docs/protocol.md
"Authentication"): HMAC-SHA256 with the cluster key, a time and a single-use nonce.

A signature covers the body through its hash (body_hash): BLAKE3 over the BLAKE3 digests
of its 1 MiB pieces, the hash chunks are named by. A response's functions take that hash
rather than the body, so a receiver that hashes a body of whole chunks once, piece by
piece, both checks the signature and verifies every chunk in it."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping

import blake3

from syncd.index.store import CHUNK

KEY_BYTES = 32
TIME = "X-Syncd-Time"
NONCE = "X-Syncd-Nonce"
SIGNATURE = "X-Syncd-Signature"

_KEY_TEXT = re.compile(r"[0-9a-f]{64}")
_TIME_TEXT = re.compile(r"[0-9]{1,12}")
_NONCE_TEXT = re.compile(r"[0-9a-f]{32}")
_SIGNATURE_TEXT = re.compile(r"[0-9a-f]{64}")


class AuthError(Exception):
    """A request or response that fails authentication; str() says which check failed."""


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def parse_key(text: str) -> bytes:
    """The key from its text form, 64 lowercase hex digits (surrounding whitespace ignored)."""
    text = text.strip()
    if not _KEY_TEXT.fullmatch(text):
        # never echo the text: it may be a key with a typo
        raise ValueError(f"a cluster key is 64 lowercase hex digits, as 'syncd cluster-key' "
                         f"prints it; this is {len(text)} characters that are not")
    return bytes.fromhex(text)


PIECE = CHUNK  # bodies are hashed in pieces of a chunk's size


def pieces(body: bytes) -> list[bytes]:
    """The BLAKE3 digests of the body's consecutive PIECE-byte slices (the last may be
    shorter; an empty body has none). Where a chunk fills a piece, its digest is the
    chunk's name."""
    view = memoryview(body)
    return [blake3.blake3(view[i:i + PIECE]).digest() for i in range(0, len(view), PIECE)]


def hash_of_pieces(digests: list[bytes]) -> bytes:
    """What a signature covers of a body: BLAKE3 over its pieces' digests one after
    another, as a file's hash is over its chunks' (DESIGN, "The content store")."""
    return blake3.blake3(b"".join(digests)).digest()


def body_hash(body: bytes) -> bytes:
    return hash_of_pieces(pieces(body))


def sign_request(key: bytes, method: str, target: str, body: bytes, now: float | None = None,
                 nonce: str | None = None, digest: bytes | None = None) -> dict[str, str]:
    """The headers that sign a request; target is the path and "?query" as sent; `digest`
    the body's body_hash when the caller has it."""
    stamp = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16) if nonce is None else nonce
    return {TIME: stamp, NONCE: nonce,
            SIGNATURE: _mac(key, ["syncd-request-v1", method.upper(), target, stamp, nonce],
                            body_hash(body) if digest is None else digest)}


def sign_response(key: bytes, status: int, request_nonce: str, digest: bytes,
                  now: float | None = None) -> dict[str, str]:
    """The headers that sign a response whose body, as sent, has this body_hash."""
    stamp = str(int(time.time() if now is None else now))
    return {TIME: stamp,
            SIGNATURE: _mac(key, ["syncd-response-v1", str(status), request_nonce, stamp],
                            digest)}


def check_response(key: bytes, status: int, request_nonce: str, headers: Mapping[str, str],
                   digest: bytes, skew: int = 300, now: float | None = None) -> None:
    """Raise AuthError unless the response is signed for the request with this nonce;
    digest is the body_hash of its body as received."""
    found = _headers(headers, TIME, SIGNATURE)
    stamp, signature = found[TIME], found[SIGNATURE]
    _check_mac(signature, _mac(key, ["syncd-response-v1", str(status), request_nonce, stamp],
                               digest))
    _check_time(stamp, skew, now)


class Verifier:
    """Checks signed requests, and remembers the nonces of those it accepted.

    A nonce must be remembered for as long as a replay could pass the time check: a request
    accepted now may carry a time up to `skew` ahead, and stays fresh for `skew` after
    that, so nonce_ttl must be at least 2 * skew.
    """

    def __init__(self, key: bytes, skew: int = 300, nonce_ttl: int = 600):
        if nonce_ttl < 2 * skew:
            raise ValueError(f"nonce_ttl ({nonce_ttl}) must be at least 2 * skew ({skew})")
        self.key = key
        self.skew = skew
        self.nonce_ttl = nonce_ttl
        self._seen: OrderedDict[str, float] = OrderedDict()  # nonce -> when accepted

    def check_request(self, method: str, target: str, headers: Mapping[str, str],
                      body: bytes, now: float | None = None) -> None:
        """Raise AuthError unless the request is signed, fresh and not a replay."""
        now = time.time() if now is None else now
        self._forget_before(now - self.nonce_ttl)
        found = _headers(headers, TIME, NONCE, SIGNATURE)
        stamp, nonce, signature = found[TIME], found[NONCE], found[SIGNATURE]
        if not _NONCE_TEXT.fullmatch(nonce):
            raise AuthError(f"malformed {NONCE}: want 32 lowercase hex digits")
        _check_mac(signature, _mac(self.key, ["syncd-request-v1", method.upper(), target,
                                              stamp, nonce], body_hash(body)))
        _check_time(stamp, self.skew, now)
        if nonce in self._seen:
            raise AuthError("replayed request: this nonce was already used")
        self._seen[nonce] = now

    def _forget_before(self, cutoff: float) -> None:
        # accepted in time order, so the oldest are first
        while self._seen and next(iter(self._seen.values())) < cutoff:
            self._seen.popitem(last=False)


def _mac(key: bytes, lines: list[str], digest: bytes) -> str:
    """Hex HMAC of the signing string: the lines, then the body's digest in hex, joined
    by \\n."""
    text = "\n".join([*lines, digest.hex()])
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _headers(headers: Mapping[str, str], *names: str) -> dict[str, str]:
    """The named headers, looked up case-insensitively (ASGI gives lowercase names)."""
    lower = {k.lower(): v for k, v in headers.items()}
    missing = [name for name in names if name.lower() not in lower]
    if missing:
        raise AuthError(f"unsigned: missing header {', '.join(missing)}")
    return {name: lower[name.lower()] for name in names}


def _check_mac(given: str, expected: str) -> None:
    if not _SIGNATURE_TEXT.fullmatch(given):
        raise AuthError(f"malformed {SIGNATURE}: want 64 lowercase hex digits")
    if not hmac.compare_digest(given, expected):
        raise AuthError("bad signature: not signed with this cluster's key, or altered on "
                        "the way")


def _check_time(stamp: str, skew: int, now: float | None) -> None:
    if not _TIME_TEXT.fullmatch(stamp):
        raise AuthError(f"malformed {TIME}: want unix seconds")
    now = time.time() if now is None else now
    off = int(stamp) - now
    if abs(off) > skew:
        raise AuthError(f"stale time: {abs(off):.0f} s {'ahead of' if off > 0 else 'behind'} "
                        f"this clock (at most {skew} s allowed); check both clocks")
