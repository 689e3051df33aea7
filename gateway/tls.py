"""TLS contexts for the listener and for upstream connections.

Both sides are TLS 1.3 only (threat M11), with certificates from the
configured CA:

* :func:`server_context` requires a client certificate by default; the
  handshake itself refuses a missing certificate (``certificate_required``),
  an unknown CA (``unknown_ca``) or an expired one (``certificate_expired``)
  before any HTTP is read (M01-M03). The SPIFFE profile (one URI SAN,
  ``CA:false``, ``clientAuth``) is then checked per connection by
  :class:`PeerIdentityCache` (M05).
* :func:`upstream_context` verifies the upstream's certificate against the CA
  and the host name, and then, inside the handshake, that its SPIFFE ID is the
  one configured for that upstream (:class:`_PinnedIdentitySSLObject`), so a
  request is never written to a server that merely holds *some* certificate
  from the CA. The gateway presents its own client certificate: inbound
  credentials never go upstream.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Final

from keys.errors import KeysError
from keys.files import read_private_file
from keys.x509 import PeerCertificate, TrustAnchors, peer_identity
from protocol.errors import CertificateRejected

__all__ = ["PeerIdentityCache", "operator_context", "server_context", "upstream_context"]

_CACHE_SIZE: Final = 4096


def _load_chain(context: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
    read_private_file(key_file)  # refuses a key file that group or others can read
    context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))


def server_context(
    *, cert_file: Path, key_file: Path, ca_file: Path, require_client_cert: bool = True
) -> ssl.SSLContext:
    """The listener's context: TLS 1.3, client certificates from ``ca_file``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    context.load_verify_locations(cafile=str(ca_file))
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    _load_chain(context, cert_file, key_file)
    return context


def operator_context(*, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The operator listener's context: TLS 1.3 with the gateway's certificate
    and no client certificate (people sign each command with their own key)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # No client certificate is asked for, deliberately: the verify mode is left
    # at the server context's default, which requests none (pinned by
    # tests/gateway/test_tls_contexts.py). People hold no fleet certificate and
    # a browser would prompt for one; the server still proves itself with the
    # gateway's certificate. Each request is authenticated above TLS instead:
    # by the operator's signed command (protocol/operator.py: signature,
    # audience, freshness, single-use nonce) and, for the web inbox, also by
    # its login session (gateway/web/sessions.py).
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    _load_chain(context, cert_file, key_file)
    return context


class _PinnedIdentitySSLObject(ssl.SSLObject):
    """An SSLObject that, once the handshake completes, requires a SPIFFE ID.

    Subclasses set ``expected``, ``anchors`` and ``clock``. A mismatch raises
    :class:`ssl.SSLCertVerificationError` inside the handshake, so the
    connection fails before a single request byte is written.
    """

    expected: str
    anchors: TrustAnchors
    clock: Callable[[], dt.datetime]

    def do_handshake(self) -> None:
        super().do_handshake()
        leaf = self.getpeercert(binary_form=True)
        if leaf is None:
            raise ssl.SSLCertVerificationError("upstream presented no certificate")
        try:
            peer = peer_identity([leaf], self.anchors, now=self.clock(), usage="server")
        except (KeysError, CertificateRejected) as exc:
            raise ssl.SSLCertVerificationError(f"upstream certificate refused: {exc}") from exc
        if peer.spiffe_id != self.expected:
            raise ssl.SSLCertVerificationError(
                f"upstream identity {peer.spiffe_id} is not the pinned {self.expected}"
            )


def upstream_context(
    *,
    expected_identity: str,
    cert_file: Path,
    key_file: Path,
    ca_file: Path,
    clock: Callable[[], dt.datetime] | None = None,
) -> ssl.SSLContext:
    """A client context that presents the gateway's certificate and pins the upstream's ID."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_COMPRESSION
    _load_chain(context, cert_file, key_file)
    pinned = type(
        "PinnedSSLObject",
        (_PinnedIdentitySSLObject,),
        {
            "expected": expected_identity,
            "anchors": TrustAnchors.from_pem(ca_file.read_bytes()),
            "clock": staticmethod(clock or (lambda: dt.datetime.now(dt.UTC))),
        },
    )
    context.sslobject_class = pinned
    return context


class PeerIdentityCache:
    """SPIFFE identity of a client certificate, validated once per certificate.

    The handshake already verified the chain; this adds the SVID profile and
    trust-domain checks of :func:`keys.x509.peer_identity` and remembers the
    result (bounded LRU keyed by the leaf's DER) so the hot path does not
    parse certificates per request. An entry is used only while the
    certificate is valid at ``now``.
    """

    def __init__(self, anchors: TrustAnchors, trust_domain: str, max_size: int = _CACHE_SIZE):
        self._anchors = anchors
        self._trust_domain = trust_domain
        self._max = max_size
        self._cache: OrderedDict[bytes, PeerCertificate] = OrderedDict()

    def identify(self, leaf_der: bytes, now: dt.datetime) -> PeerCertificate:
        """Raise :class:`CertificateRejected` unless ``leaf_der`` is a valid agent SVID."""
        cached = self._cache.get(leaf_der)
        if cached is not None and now < cached.not_after:
            self._cache.move_to_end(leaf_der)
            return cached
        try:
            peer = peer_identity(
                [leaf_der],
                self._anchors,
                now=now,
                usage="client",
                trust_domain=self._trust_domain,
            )
        except KeysError as exc:
            raise CertificateRejected(str(exc)) from exc
        self._cache[leaf_der] = peer
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return peer
