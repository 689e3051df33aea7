"""X.509 identities: a development certificate authority and SPIFFE X.509-SVID checks.

Two halves live here:

* :class:`DevCertificateAuthority` mints a self-signed P-256 root and short-lived
  leaf certificates shaped as SPIFFE X.509-SVIDs (X509-SVID.md s2, s4) for
  development and tests. Production deployments bring their own CA (SPIRE, a
  corporate PKI...) and only use the second half.
* :func:`peer_identity` is the application-layer check run on a peer's chain
  after the TLS stack has already validated it. It stands on its own: it
  enforces the X.509-SVID leaf profile itself, then has ``cryptography``'s path
  validator (RFC 5280 s6, with CA/B Forum "webpki" extension rules) check the
  chain against :class:`TrustAnchors` at an injected ``now``. Every failure is a
  :class:`~keys.errors.CertificateRejected`; no ``cryptography`` exception
  escapes.

The SPIFFE ID is checked here only structurally (scheme, non-empty trust
domain, no user info, port, query or fragment). Its full syntax and Baton's
meaning of the path are checked by ``protocol/identity.py``.

Threats covered: M02 (wrong CA, self-signed leaf), M03 (expired or not yet
valid), M05 (leaf ``CA:true``, no ``clientAuth``, more than one URI SAN); M07
relies on :func:`x5t_s256` (RFC 8705 s3.1).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from keys.b64 import b64url_encode
from keys.errors import CertificateRejected, InvalidKey, MalformedInput

__all__ = [
    "CLOCK_SKEW",
    "MAX_CHAIN_BYTES",
    "MAX_CHAIN_CERTS",
    "DevCertificateAuthority",
    "IssuedCertificate",
    "PeerCertificate",
    "TrustAnchors",
    "peer_identity",
    "pem_chain_to_der",
    "x5t_s256",
]

_ExtT = TypeVar("_ExtT", bound=x509.ExtensionType)

Usage = Literal["client", "server"]
IssueUsage = Literal["client", "server", "both"]

#: Most certificates a peer may present (leaf first), checked before parsing.
MAX_CHAIN_CERTS: Final = 4
#: Most DER bytes a peer's whole chain may take, checked before parsing.
MAX_CHAIN_BYTES: Final = 16 * 1024
#: Issued certificates start this long before ``now`` to absorb clock skew.
CLOCK_SKEW: Final = timedelta(minutes=5)

_MAX_ANCHOR_PEM: Final = 1 << 20
_MAX_SPIFFE_ID: Final = 2048  # SPIFFE-ID.md s2.3: URIs up to 2048 bytes
_MAX_COMMON_NAME: Final = 64  # RFC 5280 appendix A: ub-common-name
_SPIFFE_SCHEME: Final = "spiffe://"
_CA_NAME_PREFIX: Final = "Baton dev CA "
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}\Z")  # SPIFFE-ID.md s2.1
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+\Z")  # SPIFFE-ID.md s2.2
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+\Z")
_DNS_NAME = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\Z",
    re.IGNORECASE,
)

_REQUIRED_EKU: Final = {
    "client": ExtendedKeyUsageOID.CLIENT_AUTH,
    "server": ExtendedKeyUsageOID.SERVER_AUTH,
}
_ISSUED_EKUS: Final = {
    "client": (ExtendedKeyUsageOID.CLIENT_AUTH,),
    "server": (ExtendedKeyUsageOID.SERVER_AUTH,),
    "both": (ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH),
}
# Parsing errors ``cryptography`` raises for malformed certificates or extensions.
_PARSE_ERRORS: Final = (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


def x5t_s256(cert_der: bytes) -> str:
    """RFC 8705 s3.1 certificate thumbprint: base64url(SHA-256(DER)), unpadded."""
    return b64url_encode(hashlib.sha256(cert_der).digest())


# --------------------------------------------------------------------------- helpers


def _utc(now: datetime) -> datetime:
    """``now`` converted to UTC; a naive datetime is a programming error."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(UTC)


def _issue_time(now: datetime) -> datetime:
    """``now`` in UTC, whole seconds: X.509 times have none (RFC 5280 s4.1.2.5)."""
    return _utc(now).replace(microsecond=0)


def _key_usage(*, digital_signature: bool = False, cert_sign: bool = False) -> x509.KeyUsage:
    """RFC 5280 s4.2.1.3 key usage with only the bits Baton uses."""
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _extension(extensions: x509.Extensions, kind: type[_ExtT]) -> _ExtT | None:
    """The value of the extension of type ``kind``, or ``None`` when absent."""
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _spiffe_trust_domain(uri: str) -> str:
    """Return the trust domain of ``uri`` after the structural X509-SVID checks.

    SPIFFE-ID.md s2: scheme ``spiffe``, a non-empty trust domain (the URI
    authority) with no user info or port, and neither query nor fragment. The
    path's syntax is ``protocol/identity.py``'s job.
    """
    if len(uri) > _MAX_SPIFFE_ID:
        raise CertificateRejected(f"URI SAN longer than {_MAX_SPIFFE_ID} characters")
    if not _VISIBLE_ASCII.match(uri):
        raise CertificateRejected("URI SAN has non-ASCII, space or control characters")
    if not uri.startswith(_SPIFFE_SCHEME):
        raise CertificateRejected("URI SAN is not a spiffe:// URI")
    if "?" in uri:
        raise CertificateRejected("SPIFFE ID has a query")
    if "#" in uri:
        raise CertificateRejected("SPIFFE ID has a fragment")
    authority = uri[len(_SPIFFE_SCHEME) :].partition("/")[0]
    if "@" in authority:
        raise CertificateRejected("SPIFFE ID has user info")
    if ":" in authority:
        raise CertificateRejected("SPIFFE ID has a port")
    if not authority:
        raise CertificateRejected("SPIFFE ID has an empty trust domain")
    return authority


def _require_ca_certificate(cert: x509.Certificate, what: str) -> None:
    """RFC 5280 s4.2.1.9 and s4.2.1.3: ``cA`` true and ``keyCertSign`` asserted."""
    try:
        extensions = cert.extensions
    except _PARSE_ERRORS as exc:
        raise CertificateRejected(f"{what}: malformed extensions") from exc
    constraints = _extension(extensions, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise CertificateRejected(f"{what}: not a CA certificate (basicConstraints cA is not true)")
    usage = _extension(extensions, x509.KeyUsage)
    if usage is None or not usage.key_cert_sign:
        raise CertificateRejected(f"{what}: CA certificate without keyUsage keyCertSign")


# --------------------------------------------------------------------------- issuing


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A leaf certificate and its private key, as :meth:`DevCertificateAuthority.issue` made it."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    chain_pem: bytes
    spiffe_id: str
    x5t_s256: str


class DevCertificateAuthority:
    """A self-signed P-256 root that issues SPIFFE X.509-SVIDs for one trust domain.

    For development and tests only: the key lives in a file, there is no
    revocation, and the root signs leaves directly (``pathLenConstraint`` 0).
    ``key_pem`` is secret; callers write it to a 0600 file.
    """

    __slots__ = ("_cert", "_cert_pem", "_key", "_key_id", "_key_pem", "_trust_domain")

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, trust_domain: str):
        """Use :meth:`create` or :meth:`load`."""
        key_id = _extension(cert.extensions, x509.SubjectKeyIdentifier)
        if key_id is None:
            raise CertificateRejected("dev CA: no subjectKeyIdentifier")
        self._cert = cert
        self._key = key
        self._key_id = key_id
        self._trust_domain = trust_domain
        self._cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        self._key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def trust_domain(self) -> str:
        return self._trust_domain

    @property
    def cert_pem(self) -> bytes:
        """The root certificate, PEM: what relying parties configure as a trust anchor."""
        return self._cert_pem

    @property
    def key_pem(self) -> bytes:
        """The root's PKCS#8 PEM private key. Secret: write it only to a 0600 file."""
        return self._key_pem

    def __repr__(self) -> str:
        return f"DevCertificateAuthority(trust_domain={self.trust_domain!r})"

    @classmethod
    def create(
        cls, trust_domain: str, *, now: datetime, validity: timedelta = timedelta(days=3650)
    ) -> DevCertificateAuthority:
        """A new root for ``trust_domain``, valid from ``now - CLOCK_SKEW`` to ``now + validity``.

        Profile (RFC 5280 s4.2.1): CN ``Baton dev CA <trust domain>``;
        basicConstraints ``cA`` true, ``pathLenConstraint`` 0, critical
        (s4.2.1.9); keyUsage keyCertSign and cRLSign, critical (s4.2.1.3);
        subject and authority key identifiers (s4.2.1.2, s4.2.1.1).
        """
        _check_trust_domain(trust_domain)
        if len(_CA_NAME_PREFIX + trust_domain) > _MAX_COMMON_NAME:
            raise MalformedInput("trust domain too long for the dev CA's common name")
        if validity <= timedelta(0):
            raise ValueError("validity must be positive")
        start = _issue_time(now)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _CA_NAME_PREFIX + trust_domain)])
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - CLOCK_SKEW)
            .not_valid_after(start + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key, trust_domain)

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes) -> DevCertificateAuthority:
        """Load a CA written from :attr:`cert_pem` and :attr:`key_pem`.

        Raises :class:`CertificateRejected` for a certificate that is not a
        Baton dev CA and :class:`InvalidKey` for a key that is not the
        certificate's P-256 private key.
        """
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise CertificateRejected("dev CA: not a PEM certificate") from exc
        _require_ca_certificate(cert, "dev CA")
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise InvalidKey("dev CA: not an unencrypted PEM private key") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise InvalidKey("dev CA: key is not a P-256 private key")
        if key.public_key() != cert.public_key():
            raise InvalidKey("dev CA: key does not match the certificate")
        return cls(cert, key, _trust_domain_of_ca(cert))

    def issue(
        self,
        spiffe_id: str,
        *,
        usage: IssueUsage,
        now: datetime,
        validity: timedelta = timedelta(days=30),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
    ) -> IssuedCertificate:
        """Issue a leaf X.509-SVID for ``spiffe_id`` with a fresh P-256 key.

        Profile (X509-SVID.md s4, RFC 5280 s4.2.1): CN the last path segment;
        exactly one URI SAN, ``spiffe_id``, plus any ``dns_names`` and
        ``ip_addresses`` (X509-SVID.md s2 allows other SAN types);
        basicConstraints ``cA`` false, critical; keyUsage digitalSignature only,
        critical (TLS 1.3 keys only sign); extendedKeyUsage per ``usage``;
        subject and authority key identifiers; a random 159-bit serial
        (RFC 5280 s4.1.2.2 allows at most 20 octets). Validity runs from
        ``now - CLOCK_SKEW`` to ``now + validity``, cut at the CA's notAfter.
        """
        if usage not in _ISSUED_EKUS:
            raise ValueError(f"usage must be 'client', 'server' or 'both', not {usage!r}")
        common_name = self._check_issuable(spiffe_id)
        sans = [x509.UniformResourceIdentifier(spiffe_id), *_extra_sans(dns_names, ip_addresses)]
        not_before, not_after = self._leaf_validity(_issue_time(now), validity)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(_ISSUED_EKUS[usage])), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._key_id),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        return IssuedCertificate(
            cert_pem=cert_pem,
            key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            chain_pem=cert_pem + self.cert_pem,
            spiffe_id=spiffe_id,
            x5t_s256=x5t_s256(cert.public_bytes(serialization.Encoding.DER)),
        )

    def _check_issuable(self, spiffe_id: str) -> str:
        """Refuse IDs this CA must not sign; return the leaf's common name.

        The ID must pass the X509-SVID structural checks, belong to this CA's
        trust domain, and have a non-empty path of SPIFFE-ID.md s2.2 segments.
        """
        try:
            trust_domain = _spiffe_trust_domain(spiffe_id)
        except CertificateRejected as exc:
            raise MalformedInput(f"cannot issue: {exc.detail}") from None
        if trust_domain != self.trust_domain:
            raise CertificateRejected(
                f"cannot issue for trust domain {trust_domain!r}: "
                f"this CA serves {self.trust_domain!r}"
            )
        path = spiffe_id[len(_SPIFFE_SCHEME) + len(trust_domain) :]
        segments = path.split("/")[1:]
        if not path or any(not _PATH_SEGMENT.match(s) or s in (".", "..") for s in segments):
            raise MalformedInput("cannot issue: SPIFFE ID path missing or malformed")
        if len(segments[-1]) > _MAX_COMMON_NAME:
            raise MalformedInput("cannot issue: last path segment longer than 64 characters")
        return segments[-1]

    def _leaf_validity(self, now: datetime, validity: timedelta) -> tuple[datetime, datetime]:
        """``(notBefore, notAfter)`` for a leaf issued at ``now`` (RFC 5280 s4.1.2.5)."""
        if validity <= timedelta(0):
            raise ValueError("validity must be positive")
        ca_start, ca_end = self._cert.not_valid_before_utc, self._cert.not_valid_after_utc
        if not ca_start <= now <= ca_end:
            raise CertificateRejected("cannot issue: the dev CA is not valid at 'now'")
        return now - CLOCK_SKEW, min(now + validity, ca_end)


def _check_trust_domain(trust_domain: str) -> None:
    if not _TRUST_DOMAIN.match(trust_domain):
        raise MalformedInput("trust domain must be 1-255 characters of [a-z0-9._-]")


def _trust_domain_of_ca(cert: x509.Certificate) -> str:
    """The trust domain from a dev CA's common name ``Baton dev CA <trust domain>``."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if len(names) == 1 else None
    if not isinstance(value, str) or not value.startswith(_CA_NAME_PREFIX):
        raise CertificateRejected("dev CA: common name is not 'Baton dev CA <trust domain>'")
    trust_domain = value[len(_CA_NAME_PREFIX) :]
    try:
        _check_trust_domain(trust_domain)
    except MalformedInput as exc:
        raise CertificateRejected(f"dev CA: {exc.detail}") from None
    return trust_domain


def _extra_sans(dns_names: Sequence[str], ip_addresses: Sequence[str]) -> list[x509.GeneralName]:
    """DNS (RFC 1123 host names, no wildcards) and IP SANs for server certificates."""
    sans: list[x509.GeneralName] = []
    for name in dns_names:
        if not _DNS_NAME.match(name):
            raise MalformedInput(f"cannot issue: {name!r} is not a DNS host name")
        sans.append(x509.DNSName(name.lower()))
    for address in ip_addresses:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            raise MalformedInput(f"cannot issue: {address!r} is not an IP address") from None
    return sans


# --------------------------------------------------------------------------- validating


def _eku_validator(
    usage: Usage,
) -> Callable[[Policy, x509.Certificate, x509.ExtendedKeyUsage], None]:
    required = _REQUIRED_EKU[usage]

    def validate(_policy: Policy, _cert: x509.Certificate, eku: x509.ExtendedKeyUsage) -> None:
        if required not in eku:
            raise ValueError(f"extendedKeyUsage lacks {required.dotted_string}")

    return validate


def _ee_policy(usage: Usage) -> ExtensionPolicy:
    """The webpki end-entity rules, with the EKU rule replaced by ours.

    ``build_client_verifier`` otherwise checks for ``clientAuth`` only, and only
    when the extension is present; X509-SVID.md s4.4 also lets EKU be critical.
    """
    return ExtensionPolicy.webpki_defaults_ee().require_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _eku_validator(usage)
    )


_EE_POLICIES: Final = {usage: _ee_policy(usage) for usage in ("client", "server")}
_CA_POLICY: Final = ExtensionPolicy.webpki_defaults_ca()


@dataclass(frozen=True, slots=True)
class TrustAnchors:
    """CA certificates a peer's chain must lead to. Build once at start-up.

    Every certificate must be a CA (RFC 5280 s4.2.1.9 ``cA`` true and s4.2.1.3
    keyCertSign): a leaf configured as a trust anchor would let whoever holds
    its key impersonate any identity (threat M02).
    """

    certificates: tuple[x509.Certificate, ...]
    _store: Store = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.certificates:
            raise CertificateRejected("trust anchors: no certificate")
        for index, cert in enumerate(self.certificates):
            _require_ca_certificate(cert, f"trust anchor #{index}")
        object.__setattr__(self, "_store", Store(list(self.certificates)))

    @classmethod
    def from_pem(cls, pem: bytes) -> TrustAnchors:
        """Parse one or more PEM CA certificates; refuse anything else in the file."""
        if len(pem) > _MAX_ANCHOR_PEM:
            raise CertificateRejected("trust anchors: PEM larger than 1 MiB")
        if b"PRIVATE KEY-----" in pem:
            raise CertificateRejected("trust anchors: PEM contains a private key")
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except ValueError as exc:
            raise CertificateRejected("trust anchors: no valid PEM certificate") from exc
        return cls(tuple(certs))


def pem_chain_to_der(pem: bytes) -> list[bytes]:
    """DER of each certificate in a PEM chain, in order (leaf first)."""
    if len(pem) > _MAX_ANCHOR_PEM:
        raise CertificateRejected("PEM chain larger than 1 MiB")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertificateRejected("no valid PEM certificate") from exc
    return [cert.public_bytes(serialization.Encoding.DER) for cert in certs]


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The identity a validated peer chain proves."""

    spiffe_id: str
    x5t_s256: str
    not_after: datetime


def _parse_chain(chain_der: Sequence[bytes]) -> list[x509.Certificate]:
    """Size caps first (count, then total bytes), then strict DER parsing."""
    if not chain_der:
        raise CertificateRejected("empty certificate chain")
    if len(chain_der) > MAX_CHAIN_CERTS:
        raise CertificateRejected(
            f"chain of {len(chain_der)} certificates (at most {MAX_CHAIN_CERTS})"
        )
    total = sum(len(der) for der in chain_der)
    if total > MAX_CHAIN_BYTES:
        raise CertificateRejected(f"chain of {total} DER bytes (at most {MAX_CHAIN_BYTES})")
    certs = []
    for index, der in enumerate(chain_der):
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except _PARSE_ERRORS as exc:
            raise CertificateRejected(f"chain[{index}] is not a DER certificate") from exc
    return certs


def _check_leaf_constraints(extensions: x509.Extensions) -> None:
    """X509-SVID.md s4.1 and RFC 5280 s4.2.1.9: basicConstraints present, ``cA`` false."""
    constraints = _extension(extensions, x509.BasicConstraints)
    if constraints is None:
        raise CertificateRejected("leaf has no basicConstraints")
    if constraints.ca:
        raise CertificateRejected("leaf is a CA certificate (basicConstraints cA true)")


def _check_leaf_key_usage(extensions: x509.Extensions) -> None:
    """X509-SVID.md s4.3: digitalSignature set; keyCertSign and cRLSign not set."""
    usage = _extension(extensions, x509.KeyUsage)
    if usage is None:
        raise CertificateRejected("leaf has no keyUsage")
    if not usage.digital_signature:
        raise CertificateRejected("leaf keyUsage lacks digitalSignature")
    if usage.key_cert_sign or usage.crl_sign:
        raise CertificateRejected("leaf keyUsage asserts keyCertSign or cRLSign")


def _check_leaf_eku(extensions: x509.Extensions, usage: Usage) -> None:
    """X509-SVID.md s4.4 and RFC 5280 s4.2.1.12: the EKU for this side of TLS."""
    ekus = _extension(extensions, x509.ExtendedKeyUsage)
    if ekus is None:
        raise CertificateRejected("leaf has no extendedKeyUsage")
    if _REQUIRED_EKU[usage] not in ekus:
        auth = "clientAuth" if usage == "client" else "serverAuth"
        raise CertificateRejected(f"leaf extendedKeyUsage lacks {auth}")


def _leaf_spiffe_id(extensions: x509.Extensions) -> str:
    """X509-SVID.md s2: exactly one URI SAN; other SAN types may be present."""
    san = _extension(extensions, x509.SubjectAlternativeName)
    uris = san.get_values_for_type(x509.UniformResourceIdentifier) if san else []
    if len(uris) != 1:
        raise CertificateRejected(f"leaf has {len(uris)} URI SANs (exactly one required)")
    return uris[0]


def _check_leaf(leaf: x509.Certificate, usage: Usage) -> str:
    """The X509-SVID leaf profile (s2, s4, s5); returns the URI SAN."""
    try:
        extensions = leaf.extensions
    except _PARSE_ERRORS as exc:
        raise CertificateRejected("leaf has malformed or duplicate extensions") from exc
    _check_leaf_constraints(extensions)
    _check_leaf_key_usage(extensions)
    _check_leaf_eku(extensions, usage)
    return _leaf_spiffe_id(extensions)


def _verify_path(
    certs: list[x509.Certificate], anchors: TrustAnchors, now: datetime, usage: Usage
) -> None:
    """RFC 5280 s6 path validation by ``cryptography`` at ``now``."""
    verifier = (
        PolicyBuilder()
        .store(anchors._store)
        .time(now)
        .max_chain_depth(MAX_CHAIN_CERTS - 1)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICIES[usage])
        .build_client_verifier()
    )
    try:
        verifier.verify(certs[0], certs[1:])
    except (VerificationError, UserWarning, *_PARSE_ERRORS) as exc:
        # UserWarning: formatting the error message reprs the failing
        # certificate, and ``cryptography`` warns about an out-of-range name
        # attribute (e.g. a 65-character CN); under ``-W error`` that warning
        # is raised instead of the VerificationError.
        raise CertificateRejected(f"chain does not validate: {_log_safe(str(exc))}") from exc


def _log_safe(text: str, limit: int = 300) -> str:
    """``text`` with non-printable characters replaced, cut to ``limit`` characters.

    Verifier messages quote peer-controlled names; keep them to one log line.
    """
    cleaned = "".join(c if " " <= c <= "~" else "?" for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def peer_identity(
    chain_der: Sequence[bytes],
    anchors: TrustAnchors,
    *,
    now: datetime,
    usage: Usage,
    trust_domain: str | None = None,
) -> PeerCertificate:
    """Validate a peer's chain (leaf first, DER) and return the SPIFFE ID it proves.

    In order, each failure raising :class:`CertificateRejected`:

    1. at most :data:`MAX_CHAIN_CERTS` certificates and :data:`MAX_CHAIN_BYTES`
       bytes, before anything is parsed;
    2. the leaf profile (X509-SVID.md s4, s5): basicConstraints ``cA`` false,
       keyUsage digitalSignature without keyCertSign/cRLSign, EKU
       ``clientAuth`` or ``serverAuth`` for ``usage``, exactly one URI SAN;
    3. the URI is structurally a SPIFFE ID, in ``trust_domain`` if given;
    4. the chain validates to ``anchors`` at ``now`` (RFC 5280 s6).

    ``usage`` is the role the *peer* plays: ``"client"`` on a server checking
    an agent, ``"server"`` on a client checking a gateway.
    """
    if usage not in _REQUIRED_EKU:
        raise ValueError(f"usage must be 'client' or 'server', not {usage!r}")
    at = _utc(now)
    certs = _parse_chain(chain_der)
    spiffe_id = _check_leaf(certs[0], usage)
    peer_domain = _spiffe_trust_domain(spiffe_id)
    if trust_domain is not None and peer_domain != trust_domain:
        raise CertificateRejected(f"SPIFFE ID trust domain {peer_domain!r} is not {trust_domain!r}")
    _verify_path(certs, anchors, at, usage)
    return PeerCertificate(
        spiffe_id=spiffe_id,
        x5t_s256=x5t_s256(chain_der[0]),
        not_after=certs[0].not_valid_after_utc,
    )
