"""RFC 9421 Appendix B conformance for ``keys/httpsig.py``.

Data: ``$BATON_VECTORS/rfc9421_appendix_b.json`` (keys, HTTP/1.1 message
texts, per-case signature bases and signatures) with the erratum listed in
``KNOWN_ISSUES.json``: the ``test-response`` message carries a wrong
``Content-Digest``; B.2.4 is checked against ``test-response-corrected-digest``.

For every case whose algorithm we support (``ed25519``, ``ecdsa-p256-sha256``)
our signature base must equal the vector's byte for byte and the signature
must verify under a policy that requires exactly what the case covers; B.4.5
and B.4.6 (covered components changed) must fail. RSA-PSS and HMAC keys must
be refused at import. Appendix B timestamps (2021) are not checked for
freshness here: ``verify`` reads no clock.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from keys import httpsig, sfv
from keys.b64 import b64url_encode
from keys.errors import BadSignature, DigestMismatch, InvalidKey, MalformedSignatureHeader
from keys.httpsig import HttpRequest, HttpResponse, SignaturePolicy
from keys.keyset import KeySet
from keys.material import PrivateKey, PublicKey

pytestmark = pytest.mark.vectors

SUPPORTED = {"ed25519": "Ed25519", "ecdsa-p256-sha256": "ES256"}
EXPECTED_INVALID = {"B.4.5", "B.4.6"}
CORRECTED_RESPONSE = "test-response-corrected-digest"


@pytest.fixture(scope="module")
def appendix_b(vectors_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((vectors_dir / "rfc9421_appendix_b.json").read_text())
    known: dict[str, Any] = json.loads((vectors_dir / "KNOWN_ISSUES.json").read_text())
    issues = known.get("rfc9421_appendix_b.json", [])
    assert any(CORRECTED_RESPONSE in issue["reason"] for issue in issues), issues
    assert CORRECTED_RESPONSE in data["messages"]
    assert any("erratum" in note.lower() for note in data["notes"])
    return data


def parse_http1(text: str) -> tuple[HttpRequest | HttpResponse, bytes]:
    """An HTTP/1.1 message text -> (message, body). Requests get target URI
    ``https://`` + Host + request-target (RFC 9112 s3.3)."""
    head, _, body = text.partition("\n\n")
    start, *lines = head.split("\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name, value.strip(" \t")))
    if start.startswith("HTTP/"):
        return HttpResponse(int(start.split(" ")[1]), headers), body.encode()
    method, target, _version = start.split(" ")
    host = next(value for name, value in headers if name.lower() == "host")
    return HttpRequest(method, f"https://{host}{target}", headers), body.encode()


def message_of(data: dict[str, Any], case: dict[str, Any]) -> tuple[Any, bytes]:
    """The case's message, with its signature fields (B.2 cases carry them separately)."""
    if "message_text" in case:
        return parse_http1(case["message_text"])
    name = CORRECTED_RESPONSE if case["message"] == "test-response" else case["message"]
    message, body = parse_http1(data["messages"][name])
    lines = [("Signature-Input", case["signature_input"]), ("Signature", case["signature"])]
    if isinstance(message, HttpResponse):
        return HttpResponse(message.status, [*message.headers, *lines]), body
    return HttpRequest(message.method, message.target_uri, [*message.headers, *lines]), body


def label_and_params(case: dict[str, Any]) -> tuple[str, str, list[str]]:
    label, _, params_value = case["signature_input"].partition("=")
    inner = sfv.parse_inner_list(params_value)
    components = []
    for item in inner.items:
        assert isinstance(item.value, str)
        components.append(item.value + sfv.serialize_params(item.params))
    return label, params_value, components


def jwk_for(data: dict[str, Any], keyid: str, *, private: bool) -> dict[str, Any]:
    entry = data["keys"][keyid]
    if "secret_b64" in entry:
        return {"kty": "oct", "k": b64url_encode(base64.b64decode(entry["secret_b64"]))}
    jwk = dict(entry["jwk"])
    if jwk["kty"] == "EC":
        jwk["alg"] = "ES256"  # our import requires P-256 keys to state their use
    if private:
        jwk.pop("kid", None)  # vector kids are not RFC 7638 thumbprints
    else:
        jwk.pop("d", None)
    return jwk


def key_set(data: dict[str, Any]) -> KeySet:
    return KeySet(
        PublicKey.from_jwk(jwk_for(data, keyid, private=False), require_thumbprint_kid=False)
        for keyid in ("test-key-ed25519", "test-key-ecc-p256")
    )


def policy_for(case: dict[str, Any]) -> SignaturePolicy:
    label, _, components = label_and_params(case)
    return SignaturePolicy(
        label=label,
        required_components=frozenset(components),
        required_params=frozenset({"created", "keyid"}),
        require_digest_with_body="content-digest" in components,
    )


def body_to_check(message: Any, body: bytes) -> bytes | None:
    """The content is only verifiable through a Content-Digest; B.3 and B.4 carry
    none and their signatures do not cover the content, so only headers are verified."""
    has_digest = any(name.lower() == "content-digest" for name, _ in message.headers)
    return body if has_digest else None


def test_signature_bases_match(appendix_b: dict[str, Any]) -> None:
    """Every vector base whose components we support is reproduced byte for byte."""
    compared = unsupported = 0
    for case in appendix_b["cases"]:
        if "signature_base" not in case:
            continue
        message, _ = message_of(appendix_b, case)
        _, params_value, components = label_and_params(case)
        if any(c.startswith("@query-param") for c in components):
            with pytest.raises(MalformedSignatureHeader):  # outside our profile
                httpsig.signature_base(message, components, params_value)
            unsupported += 1
            continue
        base = httpsig.signature_base(message, components, params_value)
        assert base == case["signature_base"].encode("ascii"), case["id"]
        compared += 1
    assert (compared, unsupported) == (7, 1)


def test_cases_verify_or_are_refused(appendix_b: dict[str, Any]) -> None:
    keys = key_set(appendix_b)
    verified, refused, rejected = [], [], []
    for case in appendix_b["cases"]:
        if case["alg"] not in SUPPORTED:
            jwk = jwk_for(appendix_b, case["keyid"], private=False)
            with pytest.raises(InvalidKey):
                PublicKey.from_jwk(jwk, require_thumbprint_kid=False)
            with pytest.raises(InvalidKey):
                PrivateKey.from_jwk(jwk_for(appendix_b, case["keyid"], private=True))
            refused.append(case["id"])
            continue
        message, body = message_of(appendix_b, case)
        policy = policy_for(case)
        if case["expected"] == "invalid":
            assert case["id"] in EXPECTED_INVALID
            with pytest.raises(BadSignature):
                httpsig.verify(message, keys, policy, body=body_to_check(message, body))
            rejected.append(case["id"])
            continue
        result = httpsig.verify(message, keys, policy, body=body_to_check(message, body))
        assert result.alg == case["alg"]
        _, params_value, _ = label_and_params(case)
        assert result.keyid == sfv.parse_inner_list(params_value).params["keyid"]
        assert result.label == policy.label
        assert result.created == 1618884473
        verified.append(case["id"])
    print(
        f"\nRFC 9421 Appendix B: verified {len(verified)} {verified}; "
        f"refused {len(refused)} {refused}; rejected-invalid {len(rejected)} {rejected}"
    )
    assert len(verified) == 7
    assert len(refused) == 4
    assert sorted(rejected) == sorted(EXPECTED_INVALID)


@pytest.mark.parametrize("case_id", ["B.2.6", "B.4.1"])
def test_ed25519_signature_reproduced(appendix_b: dict[str, Any], case_id: str) -> None:
    """Ed25519 is deterministic: our sign() gives the vector's fields exactly."""
    case = next(c for c in appendix_b["cases"] if c["id"] == case_id)
    key = PrivateKey.from_jwk(jwk_for(appendix_b, "test-key-ed25519", private=True))
    message, _ = message_of(appendix_b, case)
    label, _, components = label_and_params(case)
    sig_input, signature = httpsig.sign(
        message,
        key,
        components=components,
        created=1618884473,
        nonce=None,
        keyid="test-key-ed25519",
        label=label,
        include_alg=False,
    )
    assert sig_input == case["signature_input"]
    assert signature == case["signature"]


def test_ecdsa_private_key_signs_verifiable_signatures(appendix_b: dict[str, Any]) -> None:
    """ECDSA is randomised: sign B.2.4 again with the vector key and verify it."""
    case = next(c for c in appendix_b["cases"] if c["id"] == "B.2.4")
    key = PrivateKey.from_jwk(jwk_for(appendix_b, "test-key-ecc-p256", private=True))
    message, body = parse_http1(appendix_b["messages"][CORRECTED_RESPONSE])
    label, _, components = label_and_params(case)
    sig_input, signature = httpsig.sign(
        message,
        key,
        components=components,
        created=1618884473,
        nonce=None,
        keyid="test-key-ecc-p256",
        label=label,
        include_alg=False,
    )
    assert sig_input == case["signature_input"]
    assert signature != case["signature"]
    assert isinstance(message, HttpResponse)
    resigned = HttpResponse(
        message.status,
        [*message.headers, ("Signature-Input", sig_input), ("Signature", signature)],
    )
    result = httpsig.verify(resigned, key_set(appendix_b), policy_for(case), body=body)
    assert result.alg == "ecdsa-p256-sha256"


def test_erratum_response_digest(appendix_b: dict[str, Any]) -> None:
    """The uncorrected test-response (KNOWN_ISSUES.json) fails: its digest does not
    match the body, and since B.2.4 covers content-digest the signature fails too."""
    case = next(c for c in appendix_b["cases"] if c["id"] == "B.2.4")
    message, body = parse_http1(appendix_b["messages"]["test-response"])
    digest = next(v for n, v in message.headers if n.lower() == "content-digest")
    with pytest.raises(DigestMismatch):
        httpsig.check_content_digest(digest, body)
    assert isinstance(message, HttpResponse)
    signed_message = HttpResponse(
        message.status,
        [
            *message.headers,
            ("Signature-Input", case["signature_input"]),
            ("Signature", case["signature"]),
        ],
    )
    with pytest.raises(BadSignature):
        httpsig.verify(signed_message, key_set(appendix_b), policy_for(case), body=body)


@pytest.mark.parametrize("case_id", ["B.2.6", "B.4.1"])
def test_freshness_with_injected_clock_and_real_clock(
    appendix_b: dict[str, Any], case_id: str
) -> None:
    """R07: the Appendix B signatures (created 2021-04-20) are fresh only under an
    injected clock set to their creation time; under the real clock they are stale."""
    import time

    from protocol.errors import Stale
    from protocol.replay import FreshnessPolicy, check_freshness

    case = next(c for c in appendix_b["cases"] if c["id"] == case_id)
    message, body = message_of(appendix_b, case)
    verified = httpsig.verify(
        message, key_set(appendix_b), policy_for(case), body=body_to_check(message, body)
    )
    assert verified.created == 1618884473
    policy = FreshnessPolicy()
    check_freshness(verified.created, verified.expires, now=1618884473, policy=policy)
    check_freshness(verified.created, verified.expires, now=1618884473 + 60, policy=policy)
    with pytest.raises(Stale):
        check_freshness(verified.created, verified.expires, now=1618884473 + 61, policy=policy)
    with pytest.raises(Stale):
        check_freshness(verified.created, verified.expires, now=time.time(), policy=policy)
