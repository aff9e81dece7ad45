"""A home's device identity and the TLS peers talk (docs/protocol.md, "Identity and TLS").

Each home has its own key pair and a self-signed certificate whose subject (CN) is its
device id, both in HOME/device.pem (mode 0600). A peer is pinned by the SHA-256 of its
certificate (DER), its fingerprint. No certificate authority: the server's trust store
is exactly the certificates of the peers pinned here, and a client trusts exactly the
certificate it pinned for the peer it calls.

hypercorn does not hand the client's certificate to the application, so the server's
context makes its TLS objects of a class (PeerTLS) that records, when its handshake
completes, the client's fingerprint in a context variable (CLIENT): hypercorn runs the
handshake in the connection's task and starts the application's task from it, and trio
gives a new task a copy of its starter's context. The application reads CLIENT for each
request. The trust store is replaced, not edited: the listening context's server-name
callback hands each new connection the context of the current set of pins.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import hashlib
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_DEVICE = re.compile(r"[0-9a-f]{32}")

# The fingerprint of the certificate the client of this connection presented, verified
# against the pins; None: it presented none (it may only say hello, see api.Admitted).
CLIENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("tls_client", default=None)


class IdentityError(Exception):
    """A device identity file or certificate that cannot be used; str() says why."""


def fingerprint(der: bytes) -> str:
    """A certificate's fingerprint: SHA-256 of its DER bytes, 64 lowercase hex digits."""
    return hashlib.sha256(der).hexdigest()


def parse_fingerprint(text: str) -> str:
    """A fingerprint as given by a person: 64 hex digits, colons and case ignored."""
    value = text.strip().replace(":", "").lower()
    if not _FINGERPRINT.fullmatch(value):
        raise ValueError(f"a fingerprint is 64 hex digits, as 'syncd id' prints it; "
                         f"{text[:80]!r} is not")
    return value


@dataclass(frozen=True)
class Certificate:
    pem: str
    der: bytes
    fingerprint: str
    device: str  # the device id its subject names

    @classmethod
    def from_pem(cls, pem: str) -> Certificate:
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
        except ValueError as e:
            raise IdentityError(f"not a certificate: {e}") from None
        return cls.of(cert)

    @classmethod
    def from_der(cls, der: bytes) -> Certificate:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as e:
            raise IdentityError(f"not a certificate: {e}") from None
        return cls.of(cert)

    @classmethod
    def of(cls, cert: x509.Certificate) -> Certificate:
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        device = str(names[0].value) if names else ""
        if not _DEVICE.fullmatch(device):
            raise IdentityError("its subject is not a device id (32 lowercase hex digits)")
        der = cert.public_bytes(serialization.Encoding.DER)
        return cls(cert.public_bytes(serialization.Encoding.PEM).decode(), der,
                   fingerprint(der), device)


@dataclass(frozen=True)
class Identity:
    path: Path  # the key and the certificate, PEM, one file
    cert: Certificate

    @property
    def device(self) -> str:
        return self.cert.device

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint


def load(path: Path) -> Identity:
    try:
        text = path.read_text()
    except OSError as e:
        raise IdentityError(f"cannot read {path}: {e.strerror}") from None
    start = text.find("-----BEGIN CERTIFICATE-----")
    if start < 0:
        raise IdentityError(f"{path} holds no certificate")
    try:
        return Identity(path, Certificate.from_pem(text[start:]))
    except IdentityError as e:
        raise IdentityError(f"{path}: {e}") from None


def ensure(path: Path, device: str) -> Identity:
    """The identity in `path`, made first (a new key pair and a certificate naming
    `device`) when there is none: at `syncd init`, and at the first start of a home made
    before identities. Two processes that make one at once both end with the one that got
    there first (link() never replaces)."""
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as f:
            f.write(_new_identity(device))
            f.flush()
            os.fsync(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    identity = load(path)
    if identity.device != device:
        raise IdentityError(f"{path} is the certificate of device {identity.device}, not of "
                            f"this home's device {device}")
    return identity


def _new_identity(device: str) -> bytes:
    """A P-256 key and a self-signed certificate naming `device`, valid for ever (a pin,
    not a date, is what makes it trusted: RFC 5280's 99991231235959Z, "no expiry")."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(datetime.datetime(9999, 12, 31, 23, 59, 59,
                                               tzinfo=datetime.UTC))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
            + cert.public_bytes(serialization.Encoding.PEM))


class PeerTLS(ssl.SSLObject):
    """A server-side TLS object that publishes its client's fingerprint (CLIENT) when
    its handshake completes, for the requests of that connection."""

    def do_handshake(self) -> None:
        super().do_handshake()
        der = self.getpeercert(binary_form=True)
        CLIENT.set(fingerprint(der) if der else None)


def _context(identity: Identity, server: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # the pin, not a name, says who it is
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(identity.path)
    return ctx


class TrustStore:
    """The server side: `listening` is the context hypercorn listens with; each new
    connection gets, at its ClientHello, the context that trusts exactly the current
    pins (set()). A client may present no certificate: then it may only say hello."""

    def __init__(self, identity: Identity):
        self.identity = identity
        self._current = self._made([])
        self.listening = self._made([])
        self.listening.sni_callback = self._choose

    def set(self, pems: list[str]) -> None:
        """Trust exactly these certificates from the next handshake on."""
        self._current = self._made(pems)

    def _made(self, pems: list[str]) -> ssl.SSLContext:
        ctx = _context(self.identity, server=True)
        ctx.num_tickets = 0  # no client resumes sessions: the tickets would be wasted
        ctx.verify_mode = ssl.CERT_OPTIONAL
        if pems:
            ctx.load_verify_locations(cadata="".join(pems))
        ctx.sslobject_class = PeerTLS
        return ctx

    def _choose(self, tls: ssl.SSLObject, server_name: str | None,
                ctx: ssl.SSLContext) -> None:
        tls.context = self._current


def client_context(identity: Identity, pinned: str | None, present: bool = False
                   ) -> ssl.SSLContext:
    """The client side for one peer: trust only its pinned certificate (PEM) and present
    ours; with none pinned yet, accept any certificate, which the hello then checks
    before it is pinned (trust on first use), and present ours only when `present` (a
    peer that has not pinned it refuses the handshake)."""
    if pinned:
        ctx = _context(identity, server=False)
        ctx.load_verify_locations(cadata=pinned)
    else:
        ctx = _bare_client()
        if present:
            ctx.load_cert_chain(identity.path)
    return ctx


def _bare_client() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
