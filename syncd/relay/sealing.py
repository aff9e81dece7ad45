"""What makes a relay's objects unreadable and unforgeable (docs/protocol.md, "Relays").

Keys come from the cluster key by HKDF-SHA256: one AES-256-GCM key that seals every
object (its name as associated data, so an object moved to another name does not open),
one HMAC key that makes object names (a device's folder, a chunk's name) from ids and
digests without revealing them, and the share id the marker names. A sealed object is
MAGIC, the 8-byte id of the key that sealed it, a 12-byte random nonce, the ciphertext.
Objects are opened with the current key or any earlier one (`cluster-key --rotate` keeps
them in HOME/cluster.key.old), so what was stored before a rotation stays readable.

A device signs what it writes (batches, cursors) with its device key, ECDSA P-256 over
SHA-256 of the object's name and payload: the cluster key says "a member of this share",
the signature "this device", so a member cannot forge another member's objects.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct

from cryptography import x509
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from syncd.identity import Certificate, Identity

MAGIC = b"SRL1"
_HEAD = len(MAGIC) + 8 + 12
MARKER_FORMAT = 1


class Rejected(Exception):
    """An object that must not be used: tampered, truncated, unsigned, or not of this
    share; str() says which, for the log and `syncd status`."""


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"syncd relay v1 " + purpose).derive(key)


class Keys:
    """The relay keys of a cluster key and the keys it replaced (newest first)."""

    def __init__(self, cluster_keys: list[bytes]):
        if not cluster_keys:
            raise ValueError("no cluster key")
        self._aead = {}
        for key in cluster_keys:
            self._aead.setdefault(_derive(key, b"key id")[:8], AESGCM(_derive(key, b"seal")))
        self._current = _derive(cluster_keys[0], b"key id")[:8]
        self._names = _derive(cluster_keys[0], b"names")
        self.shares = [_derive(key, b"share").hex()[:32] for key in cluster_keys]

    @property
    def share(self) -> str:
        """The share id the marker names (of the current key)."""
        return self.shares[0]

    def tag(self, value: str | bytes) -> str:
        """An object name's segment for an id or digest, which reveals neither: 32 hex."""
        data = value.encode() if isinstance(value, str) else value
        return hmac.new(self._names, data, hashlib.sha256).hexdigest()[:32]

    def seal(self, name: str, plain: bytes) -> bytes:
        nonce = os.urandom(12)
        return (MAGIC + self._current + nonce
                + self._aead[self._current].encrypt(nonce, plain, name.encode()))

    def open(self, name: str, sealed: bytes) -> bytes:
        if len(sealed) < _HEAD + 16 or not sealed.startswith(MAGIC):
            raise Rejected(f"{name}: not a syncd relay object (truncated or foreign)")
        key_id, nonce = sealed[4:12], sealed[12:_HEAD]
        aead = self._aead.get(key_id)
        if aead is None:
            raise Rejected(f"{name}: sealed with a key this share never had (another share's "
                           "object, or a cluster key rotated before this home joined)")
        try:
            return aead.decrypt(nonce, sealed[_HEAD:], name.encode())
        except InvalidTag:
            raise Rejected(f"{name}: does not open with the cluster key (altered, truncated "
                           "or moved from another name)") from None

    def marker(self) -> bytes:
        return json.dumps({"syncd_relay": MARKER_FORMAT, "share": self.share}).encode() + b"\n"

    def check_marker(self, data: bytes) -> None:
        """Rejected unless the marker names this share (under any of its keys)."""
        try:
            marker = json.loads(data)
            share = marker["share"]
        except (ValueError, KeyError, TypeError):
            raise Rejected("its marker is not a syncd relay marker") from None
        if share not in self.shares:
            raise Rejected(f"it is the relay of another share ({share}), not of this one "
                           f"({self.share})")


def signing_key(identity: Identity) -> ec.EllipticCurvePrivateKey:
    """The device's private key, from its identity file."""
    text = identity.path.read_bytes()
    start = text.find(b"-----BEGIN PRIVATE KEY-----")
    return serialization.load_pem_private_key(text[start:] if start >= 0 else text, None)


def sign(key: ec.EllipticCurvePrivateKey, name: str, payload: bytes) -> bytes:
    """The payload with its signature ahead: 2-byte length, DER signature, payload."""
    signature = key.sign(name.encode() + b"\0" + payload, ec.ECDSA(hashes.SHA256()))
    return struct.pack(">H", len(signature)) + signature + payload


def verify(cert: Certificate, name: str, signed: bytes) -> bytes:
    """The payload, if its device's certificate checks the signature; else Rejected."""
    if len(signed) < 2:
        raise Rejected(f"{name}: unsigned")
    (size,) = struct.unpack(">H", signed[:2])
    signature, payload = signed[2:2 + size], signed[2 + size:]
    public = x509.load_der_x509_certificate(cert.der).public_key()
    try:
        public.verify(signature, name.encode() + b"\0" + payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise Rejected(f"{name}: not signed by device {cert.device}'s certificate "
                       f"({cert.fingerprint[:16]}...)") from None
    return payload
