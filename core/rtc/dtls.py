"""DTLS-SRTP (RFC 5764) for one WebRTC session, through pyOpenSSL's public API.

One :class:`DtlsCertificate` (self-signed ECDSA P-256, made with ``cryptography``) and one
pair of ``SSL.Context`` (server, client) serve every session of the process; each session
has a :class:`DtlsConnection` over memory BIOs: datagrams in through :meth:`receive`, the
datagrams to send come back as a list (records packed whole into datagrams of at most
``mtu`` bytes, never split across two). Retransmission of a lost flight is OpenSSL's own
timer: :meth:`timeout` says when, :meth:`handle_timeout` gives the datagrams to resend.

After the handshake :meth:`srtp_keys` exports the keying material (RFC 5764 4.2) for the
negotiated protection profile, and :meth:`peer_fingerprint` checks the peer's certificate
against the ``a=fingerprint`` of its SDP (certificates are self-signed: the fingerprint,
not a CA, is the trust anchor).
"""

from __future__ import annotations

import datetime
import logging
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from pylibsrtp import Policy

logger = logging.getLogger(__name__)

__all__ = ["DtlsCertificate", "DtlsConnection", "DtlsContexts", "DtlsError", "SrtpKeys"]

DTLS_RECORD_HEADER = 13
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha-1": hashes.SHA1,
    "sha-224": hashes.SHA224,
    "sha-256": hashes.SHA256,
    "sha-384": hashes.SHA384,
    "sha-512": hashes.SHA512,
}


@dataclass(frozen=True)
class _Profile:
    openssl_name: bytes
    libsrtp: int
    key_length: int
    salt_length: int


_PROFILES = (
    _Profile(b"SRTP_AEAD_AES_128_GCM", Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12),
    _Profile(b"SRTP_AES128_CM_SHA1_80", Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14),
)
"""Offered in this order (GCM is cheaper per packet); every browser and aiortc has CM."""


class DtlsError(Exception):
    """The handshake failed or the peer is not who its SDP says."""


@dataclass(frozen=True)
class SrtpKeys:
    profile: int
    """A ``pylibsrtp.Policy.SRTP_PROFILE_*`` value."""
    profile_name: str
    tx_key: bytes
    """Key + salt for what we send."""
    rx_key: bytes


class DtlsCertificate:
    """A self-signed ECDSA P-256 certificate and its SDP fingerprint."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert
        digest = cert.fingerprint(hashes.SHA256())
        self.fingerprint = "sha-256 " + ":".join(f"{b:02X}" for b in digest)
        """``sha-256 AB:CD:...`` as it goes into ``a=fingerprint``."""

    @classmethod
    def generate(cls, days: int = 30) -> DtlsCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, secrets.token_hex(8))])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)


def _accept_any(*_args: Any) -> bool:
    # Self-signed peer certificates: the SDP fingerprint is checked after the handshake.
    return True


class DtlsContexts:
    """The two SSL contexts (server and client role) every session of a process shares."""

    def __init__(self, certificate: DtlsCertificate) -> None:
        self.certificate = certificate
        self.server = self._make(certificate, SSL.DTLS_SERVER_METHOD)
        self.client = self._make(certificate, SSL.DTLS_CLIENT_METHOD)

    @staticmethod
    def _make(certificate: DtlsCertificate, method: int) -> SSL.Context:
        ctx = SSL.Context(method)
        ctx.use_certificate(certificate.cert)
        ctx.use_privatekey(certificate.key)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_any)
        ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU)
        ctx.set_tlsext_use_srtp(b":".join(p.openssl_name for p in _PROFILES))
        ctx.set_cipher_list(b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384")
        return ctx


def _split_records(data: bytes, mtu: int) -> list[bytes]:
    """Pack whole DTLS records into datagrams of at most ``mtu`` bytes (a larger record
    goes alone)."""
    datagrams: list[bytes] = []
    current = bytearray()
    pos = 0
    while pos < len(data):
        if len(data) - pos < DTLS_RECORD_HEADER:
            record = data[pos:]
        else:
            length = int.from_bytes(data[pos + 11 : pos + 13], "big")
            record = data[pos : pos + DTLS_RECORD_HEADER + length]
        pos += len(record)
        if current and len(current) + len(record) > mtu:
            datagrams.append(bytes(current))
            current = bytearray()
        current += record
    if current:
        datagrams.append(bytes(current))
    return datagrams


class DtlsConnection:
    """One DTLS association in the server or client role, over memory BIOs."""

    def __init__(
        self, contexts: DtlsContexts, role: Literal["server", "client"], *, mtu: int = 1200
    ) -> None:
        self.role = role
        self.mtu = mtu
        ctx = contexts.server if role == "server" else contexts.client
        self._ssl = SSL.Connection(ctx, None)
        self._ssl.set_ciphertext_mtu(mtu - 28 - 8)  # room for IPv6+UDP below the datagram
        if role == "server":
            self._ssl.set_accept_state()
        else:
            self._ssl.set_connect_state()
        self.handshake_done = False
        self.closed_by_peer = False

    def _pending(self) -> list[bytes]:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._ssl.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            return []
        return _split_records(b"".join(chunks), self.mtu)

    def _step(self) -> None:
        try:
            if not self.handshake_done:
                self._ssl.do_handshake()
                self.handshake_done = True
            # Drain records after the handshake: alerts (close_notify) and ignored app data.
            while True:
                self._ssl.recv(65536)
        except SSL.WantReadError:
            return
        except SSL.ZeroReturnError:
            self.closed_by_peer = True
        except SSL.Error as exc:
            raise DtlsError(f"DTLS: {exc}") from None

    def start(self) -> list[bytes]:
        """The client's first flight (ClientHello); nothing for the server."""
        if self.role == "client":
            self._step()
        return self._pending()

    def receive(self, datagram: bytes) -> list[bytes]:
        """Feed one datagram; returns the datagrams to send. :class:`DtlsError` on failure."""
        self._ssl.bio_write(datagram)
        self._step()
        return self._pending()

    def timeout(self) -> float | None:
        """Seconds until :meth:`handle_timeout` is due (``None``: no timer running)."""
        if self.handshake_done:
            return None
        value = self._ssl.DTLSv1_get_timeout()
        return None if value is None else float(value)

    def handle_timeout(self) -> list[bytes]:
        """Retransmit the last flight if OpenSSL's timer expired."""
        try:
            self._ssl.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            raise DtlsError(f"DTLS timeout handling: {exc}") from None
        return self._pending()

    def peer_fingerprint_matches(self, fingerprints: tuple[tuple[str, str], ...]) -> bool:
        cert = self._ssl.get_peer_certificate(as_cryptography=True)
        if cert is None:
            return False
        for algorithm, expected in fingerprints:
            hash_cls = _HASHES.get(algorithm)
            if hash_cls is None:
                continue
            digest = cert.fingerprint(hash_cls())
            if ":".join(f"{b:02X}" for b in digest) == expected.upper():
                return True
        return False

    def srtp_keys(self) -> SrtpKeys:
        selected = self._ssl.get_selected_srtp_profile()
        for profile in _PROFILES:
            if profile.openssl_name == selected:
                break
        else:
            raise DtlsError(f"DTLS: no SRTP profile agreed ({selected!r})")
        klen, slen = profile.key_length, profile.salt_length
        material = self._ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (klen + slen))
        client_key = material[:klen]
        server_key = material[klen : 2 * klen]
        client_salt = material[2 * klen : 2 * klen + slen]
        server_salt = material[2 * klen + slen :]
        client, server = client_key + client_salt, server_key + server_salt
        tx, rx = (server, client) if self.role == "server" else (client, server)
        return SrtpKeys(profile.libsrtp, profile.openssl_name.decode(), tx, rx)

    def close(self) -> list[bytes]:
        """A close_notify alert to send (best effort)."""
        if not self.handshake_done:
            return []
        try:
            self._ssl.shutdown()
        except SSL.Error:
            pass
        return self._pending()
