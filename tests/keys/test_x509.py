"""keys/x509.py: the dev CA, trust anchors and SPIFFE X.509-SVID peer checks.

Threats: M01 (no client certificate), M02 (wrong CA, self-signed), M03 (expired,
not yet valid), M05 (leaf CA:true, no clientAuth, not exactly one URI SAN).
Everything runs at a fixed ``NOW`` except the TLS handshake tests, where
OpenSSL checks validity against the real clock.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keys.errors import CertificateRejected, InvalidKey, MalformedInput
from keys.files import write_private_file, write_public_file
from keys.x509 import (
    CLOCK_SKEW,
    MAX_CHAIN_BYTES,
    MAX_CHAIN_CERTS,
    DevCertificateAuthority,
    IssuedCertificate,
    PeerCertificate,
    TrustAnchors,
    peer_identity,
    x5t_s256,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TD = "baton.local"
AGENT = "spiffe://baton.local/agent/alice"
GATEWAY = "spiffe://baton.local/gateway/gw1"
_TIMEOUT = 10.0

Usage = Literal["client", "server"]

#: The PEM armour of an unencrypted PKCS#8 key (RFC 7468 s10), split so that
#: secret scanners do not mistake this assertion for committed key material.
PKCS8_PEM_LABEL = b"-----BEGIN " + b"PRIVATE KEY-----\n"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def ca() -> DevCertificateAuthority:
    return DevCertificateAuthority.create(TD, now=NOW)


@pytest.fixture(scope="module")
def anchors(ca: DevCertificateAuthority) -> TrustAnchors:
    return TrustAnchors.from_pem(ca.cert_pem)


@pytest.fixture(scope="module")
def agent(ca: DevCertificateAuthority) -> IssuedCertificate:
    return ca.issue(AGENT, usage="client", now=NOW)


def ders(pem: bytes) -> list[bytes]:
    return [
        cert.public_bytes(serialization.Encoding.DER)
        for cert in x509.load_pem_x509_certificates(pem)
    ]


def leaf_der(issued: IssuedCertificate) -> bytes:
    return ders(issued.cert_pem)[0]


def key_usage(**bits: bool) -> x509.KeyUsage:
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{name: bits.get(name, False) for name in names})


def forge(
    issuer: DevCertificateAuthority | None,
    *,
    sans: Sequence[x509.GeneralName] = (x509.UniformResourceIdentifier(AGENT),),
    ca_flag: bool | None = False,
    usage: x509.KeyUsage | None = None,
    ekus: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    common_name: str = "alice",
) -> bytes:
    """A leaf built directly with ``cryptography``, one property at a time.

    With the defaults it is a valid client X.509-SVID for ``AGENT`` signed by
    ``issuer`` (self-signed when ``issuer`` is ``None``).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a 65+ character CN warns
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name, _validate=False)])
    if issuer is None:
        signer: ec.EllipticCurvePrivateKey = key
        issuer_name = subject
        issuer_public = key.public_key()
    else:
        loaded = serialization.load_pem_private_key(issuer.key_pem, password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        signer = loaded
        issuer_cert = x509.load_pem_x509_certificate(issuer.cert_pem)
        issuer_name = issuer_cert.subject
        issuer_public = loaded.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), False)
    )
    if ca_flag is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca_flag, None), critical=True)
    usage = usage if usage is not None else key_usage(digital_signature=True)
    builder = builder.add_extension(usage, critical=True)
    if ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def rejected(
    chain: Sequence[bytes],
    anchors: TrustAnchors,
    *,
    now: datetime = NOW,
    usage: Usage = "client",
    trust_domain: str | None = None,
) -> str:
    """Run ``peer_identity`` expecting a rejection; return the internal detail."""
    with pytest.raises(CertificateRejected) as info:
        peer_identity(chain, anchors, now=now, usage=usage, trust_domain=trust_domain)
    assert info.value.code == "certificate_rejected"
    return info.value.detail


# --------------------------------------------------------------------------- round trips


def test_client_certificate_round_trip(agent: IssuedCertificate, anchors: TrustAnchors) -> None:
    peer = peer_identity([leaf_der(agent)], anchors, now=NOW, usage="client", trust_domain=TD)
    assert peer == PeerCertificate(
        spiffe_id=AGENT,
        x5t_s256=agent.x5t_s256,
        not_after=NOW + timedelta(days=30),
    )


def test_full_chain_with_the_ca_also_validates(
    agent: IssuedCertificate, anchors: TrustAnchors
) -> None:
    chain = ders(agent.chain_pem)
    assert len(chain) == 2
    assert peer_identity(chain, anchors, now=NOW, usage="client").spiffe_id == AGENT


def test_server_certificate_with_dns_and_ip_sans(
    ca: DevCertificateAuthority, anchors: TrustAnchors
) -> None:
    server = ca.issue(
        GATEWAY,
        usage="server",
        now=NOW,
        dns_names=["gw1.baton.local", "Localhost"],
        ip_addresses=["127.0.0.1", "::1"],
    )
    der = leaf_der(server)
    peer = peer_identity([der], anchors, now=NOW, usage="server", trust_domain=TD)
    assert peer.spiffe_id == GATEWAY
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["gw1.baton.local", "localhost"]
    assert [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1",
        "::1",
    ]
    assert "serverAuth" in rejected(
        [leaf_der(ca.issue(AGENT, usage="client", now=NOW))], anchors, usage="server"
    )


def test_both_usage_validates_on_either_side(
    ca: DevCertificateAuthority, anchors: TrustAnchors
) -> None:
    der = leaf_der(ca.issue(GATEWAY, usage="both", now=NOW))
    usages: tuple[Usage, ...] = ("client", "server")
    for usage in usages:
        assert peer_identity([der], anchors, now=NOW, usage=usage).spiffe_id == GATEWAY


def test_forged_baseline_is_valid(ca: DevCertificateAuthority, anchors: TrustAnchors) -> None:
    """The ``forge`` defaults pass, so each rejection below is due to one property."""
    assert peer_identity([forge(ca)], anchors, now=NOW, usage="client").spiffe_id == AGENT


def test_aware_now_in_another_zone_is_converted(
    agent: IssuedCertificate, anchors: TrustAnchors
) -> None:
    tokyo = NOW.astimezone(timezone(timedelta(hours=9)))
    assert peer_identity([leaf_der(agent)], anchors, now=tokyo, usage="client").spiffe_id == AGENT


def test_naive_now_is_a_programming_error(
    ca: DevCertificateAuthority, agent: IssuedCertificate, anchors: TrustAnchors
) -> None:
    naive = NOW.replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        peer_identity([leaf_der(agent)], anchors, now=naive, usage="client")
    with pytest.raises(ValueError, match="timezone-aware"):
        ca.issue(AGENT, usage="client", now=naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        DevCertificateAuthority.create(TD, now=naive)


# --------------------------------------------------------------------------- validity (M03)


def test_expired_certificate(agent: IssuedCertificate, anchors: TrustAnchors) -> None:
    not_after = NOW + timedelta(days=30)
    der = leaf_der(agent)
    assert peer_identity([der], anchors, now=not_after, usage="client").spiffe_id == AGENT
    detail = rejected([der], anchors, now=not_after + timedelta(seconds=1))
    assert "not valid at validation time" in detail


def test_not_yet_valid_certificate(agent: IssuedCertificate, anchors: TrustAnchors) -> None:
    not_before = NOW - CLOCK_SKEW
    der = leaf_der(agent)
    assert peer_identity([der], anchors, now=not_before, usage="client").spiffe_id == AGENT
    detail = rejected([der], anchors, now=not_before - timedelta(seconds=1))
    assert "not valid at validation time" in detail


def test_expired_ca_rejects_its_leaves(anchors: TrustAnchors) -> None:
    short = DevCertificateAuthority.create(TD, now=NOW, validity=timedelta(days=2))
    leaf = short.issue(AGENT, usage="client", now=NOW)
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    ca_cert = x509.load_pem_x509_certificate(short.cert_pem)
    assert cert.not_valid_after_utc == ca_cert.not_valid_after_utc  # capped at the CA's notAfter
    short_anchors = TrustAnchors.from_pem(short.cert_pem)
    rejected([leaf_der(leaf)], short_anchors, now=NOW + timedelta(days=3))
    with pytest.raises(CertificateRejected, match="not valid"):
        short.issue(AGENT, usage="client", now=NOW + timedelta(days=3))


# --------------------------------------------------------------------------- anchors (M02)


def test_certificate_from_another_ca(anchors: TrustAnchors) -> None:
    other = DevCertificateAuthority.create(TD, now=NOW)
    der = leaf_der(other.issue(AGENT, usage="client", now=NOW))
    assert "chain does not validate" in rejected([der], anchors)
    # Presenting the other CA as an intermediate does not help.
    assert "chain does not validate" in rejected([der, ders(other.cert_pem)[0]], anchors)


def test_self_signed_leaf(anchors: TrustAnchors) -> None:
    assert "chain does not validate" in rejected([forge(None)], anchors)


def test_ca_certificate_presented_as_leaf(
    ca: DevCertificateAuthority, anchors: TrustAnchors
) -> None:
    assert "CA certificate" in rejected(ders(ca.cert_pem), anchors)


def test_trust_domain_mismatch(ca: DevCertificateAuthority, agent: IssuedCertificate) -> None:
    other = DevCertificateAuthority.create("other.example", now=NOW)
    both = TrustAnchors.from_pem(ca.cert_pem + other.cert_pem)
    foreign = leaf_der(other.issue("spiffe://other.example/agent/alice", usage="client", now=NOW))
    # Both anchors are trusted, so only the trust-domain check tells them apart.
    assert peer_identity([foreign], both, now=NOW, usage="client").spiffe_id.startswith(
        "spiffe://other.example/"
    )
    assert "trust domain" in rejected([foreign], both, trust_domain=TD)
    assert "trust domain" in rejected([leaf_der(agent)], both, trust_domain="baton.local.")
    assert "trust domain" in rejected([leaf_der(agent)], both, trust_domain="BATON.LOCAL")


# --------------------------------------------------------------------------- leaf profile (M05)


def test_leaf_with_ca_true(ca: DevCertificateAuthority, anchors: TrustAnchors) -> None:
    assert "basicConstraints cA true" in rejected([forge(ca, ca_flag=True)], anchors)


def test_leaf_without_basic_constraints(ca: DevCertificateAuthority, anchors: TrustAnchors) -> None:
    assert "no basicConstraints" in rejected([forge(ca, ca_flag=None)], anchors)


@pytest.mark.parametrize(
    ("bits", "expected"),
    [
        ({"key_agreement": True}, "lacks digitalSignature"),
        ({"digital_signature": True, "key_cert_sign": True}, "keyCertSign or cRLSign"),
        ({"digital_signature": True, "crl_sign": True}, "keyCertSign or cRLSign"),
    ],
)
def test_leaf_key_usage(
    ca: DevCertificateAuthority, anchors: TrustAnchors, bits: dict[str, bool], expected: str
) -> None:
    assert expected in rejected([forge(ca, usage=key_usage(**bits))], anchors)


def test_missing_client_auth_eku(ca: DevCertificateAuthority, anchors: TrustAnchors) -> None:
    server_only = leaf_der(ca.issue(GATEWAY, usage="server", now=NOW))
    assert "lacks clientAuth" in rejected([server_only], anchors, usage="client")
    any_eku = forge(ca, ekus=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
    assert "lacks clientAuth" in rejected([any_eku], anchors)
    assert "no extendedKeyUsage" in rejected([forge(ca, ekus=None)], anchors)


def test_two_uri_sans(ca: DevCertificateAuthority, anchors: TrustAnchors) -> None:
    sans = [
        x509.UniformResourceIdentifier(AGENT),
        x509.UniformResourceIdentifier("spiffe://baton.local/agent/bob"),
    ]
    assert "2 URI SANs" in rejected([forge(ca, sans=sans)], anchors)


def test_zero_uri_sans(ca: DevCertificateAuthority, anchors: TrustAnchors) -> None:
    dns_only = forge(ca, sans=[x509.DNSName("alice.baton.local")])
    assert "0 URI SANs" in rejected([dns_only], anchors)
    assert "0 URI SANs" in rejected([forge(ca, sans=())], anchors)


def test_other_san_types_next_to_one_uri_are_allowed(
    ca: DevCertificateAuthority, anchors: TrustAnchors
) -> None:
    sans = [
        x509.DNSName("alice.baton.local"),
        x509.UniformResourceIdentifier(AGENT),
        x509.RFC822Name("alice@example.com"),
    ]
    assert peer_identity([forge(ca, sans=sans)], anchors, now=NOW, usage="client").spiffe_id == (
        AGENT
    )


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("https://baton.local/agent/alice", "not a spiffe:// URI"),
        ("SPIFFE://baton.local/agent/alice", "not a spiffe:// URI"),
        ("spiffe:/baton.local/agent/alice", "not a spiffe:// URI"),
        ("spiffe://baton.local:8443/agent/alice", "port"),
        ("spiffe://baton.local/agent/alice?x=1", "query"),
        ("spiffe://alice@baton.local/agent/alice", "user info"),
        ("spiffe://baton.local/agent/alice#top", "fragment"),
        ("spiffe:///agent/alice", "empty trust domain"),
        ("spiffe://", "empty trust domain"),
        ("spiffe://baton.local/agent/al ice", "space or control"),
    ],
)
def test_uri_san_is_not_a_plain_spiffe_id(
    ca: DevCertificateAuthority, anchors: TrustAnchors, uri: str, expected: str
) -> None:
    der = forge(ca, sans=[x509.UniformResourceIdentifier(uri)])
    assert expected in rejected([der], anchors)


# --------------------------------------------------------------------------- chain shape


def test_chain_too_long_is_refused_before_parsing(anchors: TrustAnchors) -> None:
    detail = rejected([b"not DER"] * (MAX_CHAIN_CERTS + 1), anchors)
    assert detail == f"chain of {MAX_CHAIN_CERTS + 1} certificates (at most {MAX_CHAIN_CERTS})"


def test_chain_too_large_is_refused_before_parsing(anchors: TrustAnchors) -> None:
    detail = rejected([b"\x30" * (MAX_CHAIN_BYTES + 1)], anchors)
    assert detail == f"chain of {MAX_CHAIN_BYTES + 1} DER bytes (at most {MAX_CHAIN_BYTES})"


def test_chain_at_the_caps_is_accepted(
    agent: IssuedCertificate, ca: DevCertificateAuthority, anchors: TrustAnchors
) -> None:
    ca_der = ders(ca.cert_pem)[0]
    chain = [leaf_der(agent)] + [ca_der] * (MAX_CHAIN_CERTS - 1)
    assert peer_identity(chain, anchors, now=NOW, usage="client").spiffe_id == AGENT


def test_empty_chain(anchors: TrustAnchors) -> None:
    assert rejected([], anchors) == "empty certificate chain"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda der: b"",
        lambda der: b"garbage",
        lambda der: der[:-1],
        lambda der: der + b"\x00",
        lambda der: der[:100],
    ],
)
def test_malformed_der_never_leaks_a_cryptography_error(
    agent: IssuedCertificate, anchors: TrustAnchors, mangle: Callable[[bytes], bytes]
) -> None:
    assert "not a DER certificate" in rejected([mangle(leaf_der(agent))], anchors)


def test_tampered_signature(agent: IssuedCertificate, anchors: TrustAnchors) -> None:
    der = bytearray(leaf_der(agent))
    der[-5] ^= 0x01  # inside the ECDSA signature's s value
    rejected([bytes(der)], anchors)


def test_leaf_with_overlong_name_is_rejected_cleanly(
    ca: DevCertificateAuthority, anchors: TrustAnchors
) -> None:
    """The verifier's message for an expired leaf reprs it; with a 100-character
    CN ``cryptography`` warns while doing so, and under ``-W error`` (as here)
    that warning is raised from ``verify``. It must still be a CertificateRejected."""
    der = forge(ca, common_name="a" * 100)
    with pytest.raises(CertificateRejected) as info:
        peer_identity([der], anchors, now=NOW + timedelta(days=2), usage="client")
    assert isinstance(info.value.__cause__, UserWarning)


# --------------------------------------------------------------------------- the CA


def test_ca_profile(ca: DevCertificateAuthority) -> None:
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ext = cert.extensions
    assert cert.subject.rfc4514_string() == "CN=Baton dev CA baton.local"
    assert cert.issuer == cert.subject
    assert cert.not_valid_before_utc == NOW - CLOCK_SKEW
    assert cert.not_valid_after_utc == NOW + timedelta(days=3650)
    constraints = ext.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value == key_usage(key_cert_sign=True, crl_sign=True)
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    with pytest.raises(x509.ExtensionNotFound):
        ext.get_extension_for_class(x509.SubjectAlternativeName)
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)
    cert.verify_directly_issued_by(cert)
    assert ca.key_pem.startswith(PKCS8_PEM_LABEL)
    assert "PRIVATE" not in repr(ca)


def test_leaf_profile(ca: DevCertificateAuthority, agent: IssuedCertificate) -> None:
    cert = x509.load_pem_x509_certificate(agent.cert_pem)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ext = cert.extensions
    assert cert.subject.rfc4514_string() == "CN=alice"
    assert cert.issuer == ca_cert.subject
    assert 0 < cert.serial_number < 2**159
    assert cert.not_valid_before_utc == NOW - timedelta(minutes=5)
    assert cert.not_valid_after_utc == NOW + timedelta(days=30)
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"
    cert.verify_directly_issued_by(ca_cert)
    constraints = ext.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    usage = ext.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value == key_usage(digital_signature=True)
    eku = ext.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(AGENT)]
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    ext.get_extension_for_class(x509.SubjectKeyIdentifier)
    key = serialization.load_pem_private_key(agent.key_pem, password=None)
    assert agent.key_pem.startswith(PKCS8_PEM_LABEL)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == cert.public_key()
    assert agent.chain_pem == agent.cert_pem + ca.cert_pem
    assert agent.spiffe_id == AGENT
    assert "PRIVATE" not in repr(agent)


def test_issue_is_deterministic_given_now(ca: DevCertificateAuthority) -> None:
    first = ca.issue(AGENT, usage="both", now=NOW + timedelta(microseconds=654321))
    second = ca.issue(AGENT, usage="both", now=NOW)
    a, b = (x509.load_pem_x509_certificate(i.cert_pem) for i in (first, second))
    assert a.not_valid_before_utc == b.not_valid_before_utc == NOW - CLOCK_SKEW
    assert a.not_valid_after_utc == b.not_valid_after_utc
    assert [e.oid for e in a.extensions] == [e.oid for e in b.extensions]
    assert a.serial_number != b.serial_number
    assert a.public_key() != b.public_key()


def test_issue_refuses_a_foreign_trust_domain(ca: DevCertificateAuthority) -> None:
    with pytest.raises(CertificateRejected, match=r"other\.example"):
        ca.issue("spiffe://other.example/agent/alice", usage="client", now=NOW)
    with pytest.raises(CertificateRejected):
        ca.issue("spiffe://baton.local.evil/agent/alice", usage="client", now=NOW)


@pytest.mark.parametrize(
    "spiffe_id",
    [
        "spiffe://baton.local",
        "spiffe://baton.local/",
        "spiffe://baton.local/agent/",
        "spiffe://baton.local/agent//alice",
        "spiffe://baton.local/agent/..",
        "spiffe://baton.local/agent/%61lice",
        "spiffe://baton.local/agent/" + "a" * 65,
        "https://baton.local/agent/alice",
        "spiffe://baton.local:8443/agent/alice",
        "spiffe://baton.local/agent/alice?x",
    ],
)
def test_issue_refuses_malformed_ids(ca: DevCertificateAuthority, spiffe_id: str) -> None:
    with pytest.raises(MalformedInput):
        ca.issue(spiffe_id, usage="client", now=NOW)


def test_issue_refuses_bad_extra_sans_and_arguments(ca: DevCertificateAuthority) -> None:
    with pytest.raises(MalformedInput, match="DNS"):
        ca.issue(GATEWAY, usage="server", now=NOW, dns_names=["*.baton.local"])
    with pytest.raises(MalformedInput, match="DNS"):
        ca.issue(GATEWAY, usage="server", now=NOW, dns_names=["bad_name.local"])
    with pytest.raises(MalformedInput, match="IP"):
        ca.issue(GATEWAY, usage="server", now=NOW, ip_addresses=["localhost"])
    with pytest.raises(ValueError, match="validity"):
        ca.issue(AGENT, usage="client", now=NOW, validity=timedelta(0))
    with pytest.raises(ValueError, match="usage"):
        ca.issue(AGENT, usage="peer", now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("trust_domain", ["", "Baton.local", "baton.local/x", "a" * 52, "bät.on"])
def test_create_refuses_bad_trust_domains(trust_domain: str) -> None:
    with pytest.raises(MalformedInput):
        DevCertificateAuthority.create(trust_domain, now=NOW)


def test_load_round_trip(ca: DevCertificateAuthority, anchors: TrustAnchors) -> None:
    loaded = DevCertificateAuthority.load(ca.cert_pem, ca.key_pem)
    assert loaded.trust_domain == TD
    assert loaded.cert_pem == ca.cert_pem
    assert loaded.key_pem == ca.key_pem
    der = leaf_der(loaded.issue(AGENT, usage="client", now=NOW))
    assert peer_identity([der], anchors, now=NOW, usage="client").spiffe_id == AGENT


def test_load_refuses_mismatched_or_foreign_material(
    ca: DevCertificateAuthority, agent: IssuedCertificate
) -> None:
    other = DevCertificateAuthority.create(TD, now=NOW)
    with pytest.raises(InvalidKey, match="does not match"):
        DevCertificateAuthority.load(ca.cert_pem, other.key_pem)
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(InvalidKey, match="P-256"):
        DevCertificateAuthority.load(ca.cert_pem, p384)
    with pytest.raises(InvalidKey):
        DevCertificateAuthority.load(ca.cert_pem, b"not a key")
    with pytest.raises(CertificateRejected, match="not a CA"):
        DevCertificateAuthority.load(agent.cert_pem, agent.key_pem)
    with pytest.raises(CertificateRejected):
        DevCertificateAuthority.load(b"not a certificate", ca.key_pem)


# --------------------------------------------------------------------------- trust anchors


def test_trust_anchors_refuse_non_ca_certificates(
    ca: DevCertificateAuthority, agent: IssuedCertificate
) -> None:
    with pytest.raises(CertificateRejected, match="not a CA"):
        TrustAnchors.from_pem(agent.cert_pem)
    with pytest.raises(CertificateRejected, match="#1"):
        TrustAnchors.from_pem(ca.cert_pem + agent.cert_pem)
    with pytest.raises(CertificateRejected, match="not a CA"):
        TrustAnchors(tuple(x509.load_pem_x509_certificates(agent.cert_pem)))


def test_trust_anchors_refuse_junk(ca: DevCertificateAuthority) -> None:
    for pem in (b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        with pytest.raises(CertificateRejected):
            TrustAnchors.from_pem(pem)
    with pytest.raises(CertificateRejected, match="private key"):
        TrustAnchors.from_pem(ca.cert_pem + ca.key_pem)
    with pytest.raises(CertificateRejected, match="no certificate"):
        TrustAnchors(())


def test_trust_anchors_keep_every_certificate(ca: DevCertificateAuthority) -> None:
    other = DevCertificateAuthority.create("other.example", now=NOW)
    both = TrustAnchors.from_pem(ca.cert_pem + b"\n" + other.cert_pem)
    assert [c.subject.rfc4514_string() for c in both.certificates] == [
        "CN=Baton dev CA baton.local",
        "CN=Baton dev CA other.example",
    ]


# --------------------------------------------------------------------------- thumbprint


def test_x5t_s256_matches_a_manual_sha256(agent: IssuedCertificate) -> None:
    der = leaf_der(agent)
    manual = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    assert x5t_s256(der) == manual == agent.x5t_s256
    assert len(manual) == 43
    assert "=" not in manual


# --------------------------------------------------------------------------- real TLS 1.3


def _write_identity(directory: Path, issued: IssuedCertificate) -> tuple[Path, Path]:
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    write_public_file(cert_file, issued.chain_pem)
    write_private_file(key_file, issued.key_pem)
    return cert_file, key_file


def _context(
    purpose: ssl.Purpose, ca_pem: bytes, identity: tuple[Path, Path] | None
) -> ssl.SSLContext:
    side = (
        ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    )
    context = ssl.SSLContext(side)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=ca_pem.decode("ascii"))
    if identity is not None:
        context.load_cert_chain(*identity)
    return context


Outcome = tuple[bytes, bytes] | BaseException


def _handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> tuple[bytes | BaseException, Outcome]:
    """Run a TLS server (in a thread) and a client against each other over a socket pair.

    Returns the server's outcome (the client's leaf DER, or the exception) and
    the client's (the server's leaf DER and the first bytes the server sent,
    or the exception). Every blocking call is bounded by ``_TIMEOUT``.
    """
    server_sock, client_sock = socket.socketpair()
    for sock in (server_sock, client_sock):
        sock.settimeout(_TIMEOUT)

    def serve() -> bytes:
        with server_sock, server_ctx.wrap_socket(server_sock, server_side=True) as tls:
            assert tls.version() == "TLSv1.3"
            peer = tls.getpeercert(binary_form=True)
            assert peer is not None
            tls.sendall(b"ok")
            return peer

    def connect() -> tuple[bytes, bytes]:
        with client_sock, client_ctx.wrap_socket(client_sock, server_hostname="127.0.0.1") as tls:
            peer = tls.getpeercert(binary_form=True)
            assert peer is not None
            # TLS 1.3: the server judges the client certificate after the
            # client's handshake is done, so a rejection shows up at recv().
            return peer, tls.recv(2)

    with ThreadPoolExecutor(max_workers=1) as pool:
        server = pool.submit(serve)
        client: Outcome
        try:
            client = connect()
        except OSError as exc:  # ssl.SSLError is an OSError
            client = exc
        server_outcome = server.exception(timeout=_TIMEOUT) or server.result()
    return server_outcome, client


@pytest.fixture
def live_ca(tmp_path: Path) -> tuple[DevCertificateAuthority, ssl.SSLContext, datetime]:
    """A CA and a gateway server context valid on the real clock (OpenSSL uses it)."""
    now = datetime.now(UTC)
    live = DevCertificateAuthority.create(TD, now=now)
    gateway = live.issue(GATEWAY, usage="server", now=now, ip_addresses=["127.0.0.1"])
    (tmp_path / "gw").mkdir()
    server_ctx = _context(
        ssl.Purpose.CLIENT_AUTH, live.cert_pem, _write_identity(tmp_path / "gw", gateway)
    )
    return live, server_ctx, now


def test_tls13_mutual_authentication_yields_the_agent_id(
    live_ca: tuple[DevCertificateAuthority, ssl.SSLContext, datetime], tmp_path: Path
) -> None:
    live, server_ctx, now = live_ca
    agent = live.issue(AGENT, usage="client", now=now)
    (tmp_path / "agent").mkdir()
    client_ctx = _context(
        ssl.Purpose.SERVER_AUTH, live.cert_pem, _write_identity(tmp_path / "agent", agent)
    )
    client_leaf, client_outcome = _handshake(server_ctx, client_ctx)
    assert isinstance(client_leaf, bytes), client_leaf
    assert not isinstance(client_outcome, BaseException), client_outcome
    anchors = TrustAnchors.from_pem(live.cert_pem)
    seen_by_server = peer_identity([client_leaf], anchors, now=now, usage="client", trust_domain=TD)
    assert seen_by_server.spiffe_id == AGENT
    assert seen_by_server.x5t_s256 == agent.x5t_s256
    server_leaf, greeting = client_outcome
    assert greeting == b"ok"
    seen_by_client = peer_identity([server_leaf], anchors, now=now, usage="server", trust_domain=TD)
    assert seen_by_client.spiffe_id == GATEWAY


@pytest.mark.parametrize(
    ("client", "alert"),
    [
        ("other CA", "TLSV1_ALERT_UNKNOWN_CA"),
        ("no certificate", "TLSV13_ALERT_CERTIFICATE_REQUIRED"),
    ],
)
def test_tls13_handshake_fails_without_a_trusted_client_certificate(
    live_ca: tuple[DevCertificateAuthority, ssl.SSLContext, datetime],
    tmp_path: Path,
    client: str,
    alert: str,
) -> None:
    """M02 (another CA: alert unknown_ca) and M01 (no certificate: certificate_required)."""
    live, server_ctx, now = live_ca
    identity = None
    if client == "other CA":
        stranger = DevCertificateAuthority.create(TD, now=now)
        (tmp_path / "stranger").mkdir()
        identity = _write_identity(
            tmp_path / "stranger", stranger.issue(AGENT, usage="client", now=now)
        )
    client_ctx = _context(ssl.Purpose.SERVER_AUTH, live.cert_pem, identity)
    server_outcome, client_outcome = _handshake(server_ctx, client_ctx)
    assert isinstance(server_outcome, ssl.SSLError), server_outcome
    # The client sees the server's alert (or, at worst, a closed connection).
    if isinstance(client_outcome, ssl.SSLError):
        assert client_outcome.reason == alert
    else:
        assert not isinstance(client_outcome, BaseException), client_outcome
        assert client_outcome[1] == b""
