"""Catalogue 1.4, mutual authentication (M01-M11), against the real running gateway.

TLS-level refusals (M01-M03, M11) never reach HTTP: the handshake fails
(asyncio drops OpenSSL's alert, ADR 0011, so the client sees an SSL error or
a closed connection, not the alert's name), no audit event, the store
unchanged (``invariants.assert_refused_at_tls``). A certificate the TLS stack
accepts but the SVID profile refuses (M05) is ``401 certificate_rejected``
with the usual reject invariants. Token binding (M06, M07) is
``401 identity_mismatch``.

Not tested, with reasons for threats.yaml: M04 (revocation): Baton has no CRL
or OCSP; agent SVIDs are short-lived (30 days by default, re-issued by
``baton keys``) and the trust anchor is the deployment's own CA. M10 (DPoP
nonces): Baton does not use DPoP; tokens are sender-constrained by mTLS
(RFC 8705), and a DPoP-bound token is refused (M09 below).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import socket
import ssl
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.devdata import DataFolder
from keys.x509 import DevCertificateAuthority, pem_chain_to_der, x5t_s256
from tests.gateway._harness import TRUST_DOMAIN, client_context, rpc
from tests.security.conftest import (
    BEARER_ISSUER,
    BILLING,
    SUPPORT,
    SecGateway,
    idp_files,
    launch,
    shutdown,
)
from tests.security.invariants import (
    Result,
    assert_refused_at_tls,
    assert_rejected,
    tls_outcome,
)

PATH = "/u/billing/mcp"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def forge(
    folder: DataFolder | None,
    *,
    sans: Sequence[str] = (SUPPORT,),
    ca_flag: bool = False,
    ekus: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a leaf built one property at a time,
    signed by the data folder's dev CA (self-signed when ``folder`` is None).
    With the defaults it is a valid client SVID for ``support``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "support")])
    if folder is None:
        signer, issuer_name, issuer_public = key, subject, key.public_key()
    else:
        loaded = serialization.load_pem_private_key(folder.ca_key.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        signer = loaded
        issuer_name = x509.load_pem_x509_certificate(folder.ca_cert.read_bytes()).subject
        issuer_public = loaded.public_key()
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=1))
        .not_valid_after(not_after or now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), False)
        .add_extension(x509.BasicConstraints(ca_flag, None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca_flag,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(s) for s in sans]),
            critical=False,
        )
    )
    if ekus is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    cert = builder.sign(signer, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _context(gw: SecGateway, cert_key: tuple[bytes, bytes] | None) -> ssl.SSLContext:
    if cert_key is None:
        return client_context(gw.folder, None, None, gw.scratch)
    return client_context(gw.folder, *cert_key, gw.scratch)


# ------------------------------------------------------------------ M01-M03
@pytest.mark.threat("M01")
async def test_the_tls_probe_tells_accepted_from_refused(gw: SecGateway) -> None:
    """Baseline for the probes below: the agent's own certificate reaches HTTP
    (an unsigned request answered 401), a forged-but-valid one too."""
    outcome = await tls_outcome(gw, gw.context("support"))
    assert isinstance(outcome, bytes) and outcome.startswith(b"HTTP/1.1 401"), outcome
    status, _, body = await gw.send(
        "support", PATH, rpc("tools/list"), context=_context(gw, forge(gw.folder))
    )
    assert status == 200, body


@pytest.mark.threat("M01")
async def test_no_client_certificate(gw: SecGateway) -> None:
    await assert_refused_at_tls(gw, _context(gw, None))


@pytest.mark.threat("M02")
async def test_certificate_from_another_ca(gw: SecGateway) -> None:
    rogue = DevCertificateAuthority.create(TRUST_DOMAIN, now=_now()).issue(
        SUPPORT, usage="client", now=_now()
    )
    await assert_refused_at_tls(gw, _context(gw, (rogue.chain_pem, rogue.key_pem)))


@pytest.mark.threat("M02")
async def test_self_signed_certificate(gw: SecGateway) -> None:
    await assert_refused_at_tls(gw, _context(gw, forge(None)))


@pytest.mark.threat("M03")
async def test_expired_certificate(gw: SecGateway) -> None:
    now = _now()
    expired = forge(
        gw.folder,
        not_before=now - dt.timedelta(minutes=4),
        not_after=now - dt.timedelta(minutes=2),
    )
    await assert_refused_at_tls(gw, _context(gw, expired))


@pytest.mark.threat("M03")
async def test_not_yet_valid_certificate(gw: SecGateway) -> None:
    now = _now()
    future = forge(
        gw.folder,
        not_before=now + dt.timedelta(minutes=3),
        not_after=now + dt.timedelta(hours=1),
    )
    await assert_refused_at_tls(gw, _context(gw, future))


# ----------------------------------------------------------------------- M05
async def _profile_refused(gw: SecGateway, cert_key: tuple[bytes, bytes]) -> None:
    """Refused by OpenSSL in the handshake, or by the SVID profile with a 401."""
    context = _context(gw, cert_key)
    outcome = await tls_outcome(gw, context)
    if not isinstance(outcome, bytes) or not outcome:
        await assert_refused_at_tls(gw, context)
        return
    await assert_rejected(
        gw,
        gw.send("support", PATH, rpc("tools/list"), context=context),
        status=401,
        code="certificate_rejected",
    )


@pytest.mark.threat("M05")
async def test_leaf_with_ca_true(gw: SecGateway) -> None:
    await _profile_refused(gw, forge(gw.folder, ca_flag=True))


@pytest.mark.threat("M05")
async def test_leaf_without_client_auth(gw: SecGateway) -> None:
    await _profile_refused(gw, forge(gw.folder, ekus=[ExtendedKeyUsageOID.SERVER_AUTH]))
    await _profile_refused(gw, forge(gw.folder, ekus=None))


@pytest.mark.threat("M05")
async def test_leaf_with_two_uri_sans(gw: SecGateway) -> None:
    await _profile_refused(gw, forge(gw.folder, sans=(SUPPORT, BILLING)))


@pytest.mark.threat("M05")
async def test_leaf_from_another_trust_domain_or_unknown_agent(gw: SecGateway) -> None:
    await _profile_refused(gw, forge(gw.folder, sans=("spiffe://evil.example/agent/support",)))
    await _profile_refused(gw, forge(gw.folder, sans=("spiffe://baton.local/agent/nobody",)))


# ------------------------------------------------------------------ M06-M07
def _bearer(
    gw: SecGateway, token: str, context: ssl.SSLContext | None = None
) -> Coroutine[Any, Any, Result]:
    return gw.send(
        "support",
        PATH,
        rpc("tools/list"),
        context=context,
        extra=[("authorization", f"Bearer {token}")],
    )


@pytest.mark.threat("M06")
async def test_certificate_of_one_agent_token_of_another(gw_bearer: SecGateway) -> None:
    gw = gw_bearer
    token = gw.token(BILLING)  # bound to support's certificate, but names billing
    await assert_rejected(
        gw, _bearer(gw, token), status=401, code="identity_mismatch", secrets=[token]
    )


@pytest.mark.threat("M07")
async def test_token_bound_to_another_certificate_of_the_same_subject(
    gw_bearer: SecGateway,
) -> None:
    gw = gw_bearer
    other = gw.folder.load_ca().issue(SUPPORT, usage="client", now=_now())
    context = _context(gw, (other.chain_pem, other.key_pem))
    token = gw.token()  # bound to support's usual certificate
    await assert_rejected(
        gw, _bearer(gw, token, context), status=401, code="identity_mismatch", secrets=[token]
    )
    # The same token is good over the certificate it is bound to...
    status, _, body = await _bearer(gw, token)
    assert status == 200, body
    # ...and one bound to the second certificate is good over that one only.
    leaf = pem_chain_to_der(other.chain_pem)[0]
    rebound = gw.token(cnf={"x5t#S256": x5t_s256(leaf)})
    status, _, body = await _bearer(gw, rebound, context)
    assert status == 200, body


@pytest.mark.threat("M07")
async def test_unbound_token_over_mtls(gw_bearer: SecGateway) -> None:
    gw = gw_bearer
    token = gw.token(bound=False)
    await assert_rejected(
        gw, _bearer(gw, token), status=401, code="identity_mismatch", secrets=[token]
    )


# ----------------------------------------------------------------------- M08
@pytest.mark.threat("M08")
async def test_client_sent_certificate_headers_are_stripped_and_ignored(gw: SecGateway) -> None:
    billing_cert = gw.agent("billing").cert_pem.decode().replace("\n", "")
    spoof = [
        ("x-forwarded-client-cert", f"By={SUPPORT};URI={BILLING}"),
        ("client-cert", ":" + billing_cert[27:90] + ":"),
        ("client-cert-chain", ":" + billing_cert[27:90] + ":"),
        ("x-client-cert", billing_cert[27:90]),
    ]
    status, _, body = await gw.send("support", PATH, rpc("tools/list"), extra=spoof)
    assert status == 200, body
    [received] = gw.upstream.received
    headers = {k.lower(): v for k, v in received.headers.items()}
    assert headers["baton-caller"] == SUPPORT, "the identity is the TLS peer's, not a header's"
    for name in ("x-forwarded-client-cert", "client-cert", "client-cert-chain"):
        assert name not in headers, f"{name} was forwarded"
    [event] = await gw.audit_events()
    assert event.peer == SUPPORT


@pytest.mark.threat("M08")
async def test_certificate_header_does_not_stand_in_for_a_certificate(tmp_path: Path) -> None:
    """With ``client_auth = "optional"`` (bearer-only agents), a request with
    no TLS certificate but a ``Client-Cert`` header is still unauthenticated."""
    idp, files = idp_files()
    extra = BEARER_ISSUER + '\n[[agents]]\nname = "robot"\nbearer = "required"\n'
    gw = await launch(
        tmp_path,
        extra=extra,
        support_bearer="optional",
        files=files,
        idp=idp,
        gateway_settings='client_auth = "optional"',
        agents=("robot",),
    )
    try:
        cert = gw.agent("support").cert_pem.decode()
        der = pem_chain_to_der(cert.encode())[0]
        headers = [
            ("content-type", "application/json"),
            ("client-cert", f":{base64.b64encode(der).decode()}:"),
            ("x-forwarded-client-cert", f"URI={SUPPORT}"),
        ]
        await assert_rejected(
            gw,
            gw.send(
                "support", PATH, rpc("tools/list"), headers=headers, context=_context(gw, None)
            ),
            status=401,
            code="unauthenticated",
        )
    finally:
        await shutdown(gw)


# ----------------------------------------------------------------------- M09
@pytest.mark.threat("M09")
async def test_dpop_bound_token_is_refused_not_downgraded(gw_bearer: SecGateway) -> None:
    """Baton does not implement DPoP. A token whose ``cnf`` names a DPoP key
    (``jkt``) is refused, never accepted as a plain bearer token, whatever
    ``DPoP`` proof header comes with it; the header is never forwarded."""
    gw = gw_bearer
    token = gw.token(cnf={"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"})
    request = gw.send(
        "support",
        PATH,
        rpc("tools/list"),
        extra=[("authorization", f"Bearer {token}"), ("dpop", "eyJhbGciOiJub25lIn0.e30.")],
    )
    await assert_rejected(gw, request, status=401, code="identity_mismatch", secrets=[token])
    both = gw.token(cnf={"x5t#S256": gw.thumbprint("support"), "jkt": "x" * 43})
    await assert_rejected(
        gw, _bearer(gw, both), status=401, code="identity_mismatch", secrets=[both]
    )


# ----------------------------------------------------------------------- M11
@pytest.mark.threat("M11")
async def test_tls_1_2_and_weak_suites_are_refused(gw: SecGateway) -> None:
    agent = gw.agent("support")
    old = client_context(gw.folder, agent.cert_pem, agent.key_pem, gw.scratch)
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    await assert_refused_at_tls(gw, old)
    weak = client_context(gw.folder, agent.cert_pem, agent.key_pem, gw.scratch)
    weak.minimum_version = ssl.TLSVersion.TLSv1_2
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("AES128-SHA:DES-CBC3-SHA:@SECLEVEL=0")
    await assert_refused_at_tls(gw, weak)


@pytest.mark.threat("M11")
async def test_negotiated_protocol_is_tls_1_3(gw: SecGateway) -> None:
    def version() -> str | None:
        with (
            socket.create_connection(("127.0.0.1", gw.port), timeout=5) as raw,
            gw.context("support").wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            return tls.version()

    assert await asyncio.to_thread(version) == "TLSv1.3"
