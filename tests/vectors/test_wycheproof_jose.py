"""Wycheproof JOSE vectors through the public ``keys/`` facade.

Files: ``json_web_signature``, ``json_web_encryption``, ``json_web_key`` and
``json_web_crypto`` (security.md s2, threats J01-J21 and E01-E10).

Policy. Baton's JOSE layer accepts only its profile: JWS ``Ed25519``/``ES256``
(alg pinned to the key, kid from the caller's key set) and JWE
``ECDH-ES+A256KW`` + ``A256GCM``. For every case:

* the verifier's key (the group's ``public`` JWK or key set, else its
  ``private`` one; for JWE the ``private`` key without its free-text ``kid``)
  goes through our key import first; a refusal there is a refusal of the case;
* invalid cases (after ``KNOWN_ISSUES.json``) must raise a ``keys.errors``
  error: **no invalid case may ever be accepted**;
* valid cases inside the profile (decided from the JWK and header by
  :func:`jws_in_profile` / :func:`jwe_in_profile`, not by running our code)
  must be accepted with the right payload/plaintext; valid cases outside the
  profile must be refused.

Most keys in these files are HMAC or RSA, which our import refuses before the
token is looked at. So every case whose key is refused is run a second time
with an in-profile **stand-in** key under the token's own ``kid``: the facade
must still refuse it (``alg`` pinning, J01/J03/J04) and, for JWE, with the
single generic :class:`InvalidEnvelope` (E01-E04).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import pytest

from keys import jose
from keys.errors import (
    AlgorithmMismatch,
    AlgorithmNotAllowed,
    BadSignature,
    InvalidEnvelope,
    InvalidKey,
    KeysError,
    MalformedJws,
    UnknownKeyId,
    UnsupportedHeader,
    UntrustedKey,
)
from keys.keyset import KeySet
from keys.material import PrivateKey, PublicKey, validate_p256_point
from tests.vectors._util import (
    RFC8037_ED25519,
    STANDIN_P256_ENC,
    Outcome,
    Tally,
    WycheproofCase,
    attempt,
    check_manifest,
    error_histogram,
    known_issues,
    public_part,
    without_kid,
    wycheproof_cases,
    wycheproof_params,
)

pytestmark = pytest.mark.vectors

SIG = "wycheproof_json_web_signature_test.json"
ENC = "wycheproof_json_web_encryption_test.json"
KEY = "wycheproof_json_web_key_test.json"
CRYPTO = "wycheproof_json_web_crypto_test.json"

_PROFILE_SIGNING_KEYS = {("OKP", "Ed25519", "Ed25519"), ("EC", "P-256", "ES256")}
_PROFILE_JWS_HEADER = {"alg", "kid", "typ", "cty"}
_PROFILE_JWE_HEADER = {"alg", "enc", "epk", "kid", "typ", "cty"}


# --------------------------------------------------------------------------- profile


def _lenient_json_segment(segment: object) -> Any:
    """Decode a base64url JSON segment leniently (profile classification only)."""
    if not isinstance(segment, str):
        return None
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError):
        return None


def _is_json_serialization(value: str | Mapping[str, Any]) -> bool:
    return isinstance(value, Mapping) or value.startswith("{")


def _as_object(value: str | Mapping[str, Any]) -> Mapping[str, Any]:
    """A JSON serialization as a mapping; ``{}`` if it does not parse (tc17 of
    the signature file is cut short upstream: its closing ``]}`` is missing)."""
    if isinstance(value, Mapping):
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, Mapping) else {}


def _jws_headers(jws: str | Mapping[str, Any]) -> list[Any] | None:
    """Protected headers of a JWS; ``None`` if any header is unprotected."""
    if not _is_json_serialization(jws):
        assert isinstance(jws, str)
        return [_lenient_json_segment(jws.split(".")[0])]
    obj = _as_object(jws)
    headers = []
    for member in obj.get("signatures", []):
        if "header" in member:
            return None
        headers.append(_lenient_json_segment(member.get("protected")))
    return headers or None


def _verification_jwk(case: WycheproofCase) -> Mapping[str, Any]:
    jwk: Mapping[str, Any] = case.group.get("public", case.group["private"])
    return jwk


def _profile_signing_key(jwk: Mapping[str, Any]) -> bool:
    return (
        (jwk.get("kty"), jwk.get("crv"), jwk.get("alg")) in _PROFILE_SIGNING_KEYS
        and jwk.get("use", "sig") == "sig"
        and set(jwk.get("key_ops", ["verify"])) <= {"sign", "verify"}
        and not {"d", "k"} & set(jwk)
    )


def jws_in_profile(case: WycheproofCase) -> bool:
    """Every key of the verifier's set is an Ed25519/ES256 public key, every
    header is protected, uses only profile parameters, and names by ``kid`` a
    key whose pinned ``alg`` is the header's."""
    jwk = _verification_jwk(case)
    keys = jwk.get("keys", [jwk])
    if not all(_profile_signing_key(key) for key in keys):
        return False
    by_kid = {key.get("kid"): key for key in keys}
    headers = _jws_headers(case.test["jws"])
    if headers is None:
        return False
    for header in headers:
        if not isinstance(header, dict) or not set(header) <= _PROFILE_JWS_HEADER:
            return False
        key = by_kid.get(header.get("kid"))
        if key is None or key["alg"] != header.get("alg"):
            return False
    return True


def jwe_in_profile(case: WycheproofCase) -> bool:
    """A compact JWE with ``ECDH-ES+A256KW`` + ``A256GCM`` and only profile
    header parameters, to a P-256 ``ECDH-ES+A256KW`` key. (The few JSON
    serialised JWE vectors use other algorithms and unprotected headers.)"""
    jwk = case.group["private"]
    if (jwk.get("kty"), jwk.get("crv"), jwk.get("alg")) != ("EC", "P-256", "ECDH-ES+A256KW"):
        return False
    jwe = case.test["jwe"]
    if not isinstance(jwe, str) or jwe.startswith("{"):
        return False
    header = _lenient_json_segment(jwe.split(".")[0])
    return (
        isinstance(header, dict)
        and set(header) <= _PROFILE_JWE_HEADER
        and header.get("alg") == "ECDH-ES+A256KW"
        and header.get("enc") == "A256GCM"
    )


def in_profile(case: WycheproofCase) -> bool:
    return jws_in_profile(case) if "jws" in case.test else jwe_in_profile(case)


# --------------------------------------------------------------------------- running


def _import_keyset(jwk: Mapping[str, Any]) -> KeySet:
    if "keys" in jwk:
        return KeySet.from_jwks(jwk, require_thumbprint_kid=False)
    return KeySet([PublicKey.from_jwk(jwk, require_thumbprint_kid=False)])


def _verify(jws: str | Mapping[str, Any], keys: KeySet) -> bytes:
    if isinstance(jws, Mapping) or jws.startswith("{"):
        # verify_general is annotated ``typ: str`` but handles ``None`` like
        # verify_compact (skip the typ check); vectors carry no typ.
        results = jose.verify_general(jws, keys, typ=None)
        return results[0].payload
    return jose.verify_compact(jws, keys, typ=None).payload


def _run_jws(case: WycheproofCase) -> Outcome:
    imported = attempt("import", lambda: _import_keyset(_verification_jwk(case)))
    if not imported.accepted:
        return imported
    return attempt("verify", lambda: _verify(case.test["jws"], imported.value))


def _run_jwe(case: WycheproofCase) -> Outcome:
    jwk = case.group["private"]
    assert "keys" not in jwk, "JWE vectors use single keys"
    imported = attempt("import", lambda: PrivateKey.from_jwk(without_kid(jwk)))
    if not imported.accepted:
        return imported
    return attempt(
        "decrypt", lambda: jose.decrypt(case.test["jwe"], imported.value, typ=None).plaintext
    )


@cache
def outcome(name: str, tc_id: int) -> Outcome:
    case = wycheproof_cases(name)[tc_id]
    return _run_jws(case) if "jws" in case.test else _run_jwe(case)


def _header_kid(jws: str | Mapping[str, Any]) -> str:
    """The token's own ``kid`` (first header), so that the stand-in key is found."""
    headers = _jws_headers(jws)
    header = headers[0] if headers else None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) and 0 < len(kid) <= 128 else "stand-in"


@cache
def standin_outcome(name: str, tc_id: int) -> Outcome | None:
    """Re-run a case whose key our import refused, with an in-profile stand-in
    key: an Ed25519 key registered under the token's ``kid``, or a P-256
    ``ECDH-ES+A256KW`` recipient key. ``None`` when the real key imported."""
    if outcome(name, tc_id).stage != "import":
        return None
    case = wycheproof_cases(name)[tc_id]
    if "jws" in case.test:
        standin = PublicKey.from_jwk(
            {
                **public_part(RFC8037_ED25519),
                "alg": "Ed25519",
                "kid": _header_kid(case.test["jws"]),
            },
            require_thumbprint_kid=False,
        )
        return attempt("verify", lambda: _verify(case.test["jws"], KeySet([standin])))
    key = PrivateKey.from_jwk(STANDIN_P256_ENC)
    return attempt("decrypt", lambda: jose.decrypt(case.test["jwe"], key, typ=None).plaintext)


# --------------------------------------------------------------------------- checks


def _expected_value(case: WycheproofCase) -> bytes:
    if "jwe" in case.test:
        return bytes.fromhex(case.test["pt"])
    jws = case.test["jws"]
    payload = _as_object(jws)["payload"] if _is_json_serialization(jws) else jws.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))


def check_case(name: str, tc_id: int) -> None:
    case = wycheproof_cases(name)[tc_id]
    if case.expected == "skip":
        pytest.skip(f"KNOWN_ISSUES.json: {known_issues(name)[tc_id][1]}")
    result = outcome(name, tc_id)
    if case.expected == "invalid":
        assert not result.accepted, f"{case.label} is invalid but was ACCEPTED"
    elif in_profile(case):
        assert result.accepted, (
            f"{case.label}: valid and inside our profile, but {result.describe()}"
        )
        assert result.value == _expected_value(case)
    else:
        assert not result.accepted, f"{case.label}: valid but outside our profile, yet accepted"
    standin = standin_outcome(name, tc_id)
    if standin is not None:
        assert not standin.accepted, f"{case.label} accepted under an in-profile stand-in key"
        if "jwe" in case.test:
            assert isinstance(standin.error, InvalidEnvelope), standin.describe()


def tally(name: str) -> Tally:
    counts = Tally(name.removesuffix("_test.json"))
    for tc_id, case in wycheproof_cases(name).items():
        if case.expected == "skip":
            counts.add(case.label, "skip", False, Outcome())
            continue
        counts.add(case.label, case.expected, in_profile(case), outcome(name, tc_id))
    return counts


def summarise(name: str) -> Tally:
    """Print the summary line(s) and assert what must hold for every file."""
    check_manifest(name)
    counts = tally(name)
    standins = [
        s for tc_id in wycheproof_cases(name) if (s := standin_outcome(name, tc_id)) is not None
    ]
    print()
    print(counts.line())
    print(
        f"  {len(standins)} cases whose key our import refused, re-run under an in-profile "
        f"stand-in key: {error_histogram(iter(standins))}"
    )
    assert counts.invalid_accepted == [], counts.invalid_accepted
    assert counts.outside_profile_accepted == [], counts.outside_profile_accepted
    in_profile_valid = [
        case.label
        for case in wycheproof_cases(name).values()
        if case.expected == "valid" and in_profile(case)
    ]
    not_accepted = sorted(set(in_profile_valid) - set(counts.accepted))
    assert not_accepted == [], f"valid in-profile cases not accepted: {not_accepted}"
    assert all(not s.accepted for s in standins)
    return counts


def _effective(name: str, tc_id: int) -> Outcome:
    """The outcome that exercised the token: the real key's, or the stand-in's."""
    standin = standin_outcome(name, tc_id)
    return standin if standin is not None else outcome(name, tc_id)


def _by_comment(name: str, comment: str) -> list[int]:
    ids = [tc for tc, case in wycheproof_cases(name).items() if case.test["comment"] == comment]
    assert ids, f"no case {comment!r} in {name}"
    return ids


def _assert_reason(name: str, comment: str, error: type[KeysError]) -> None:
    for tc_id in _by_comment(name, comment):
        result = _effective(name, tc_id)
        assert isinstance(result.error, error), f"tc{tc_id} {comment}: {result.describe()}"


# --------------------------------------------------------------------------- JWS


@pytest.mark.parametrize("tc_id", wycheproof_params(SIG))
def test_json_web_signature(vectors_dir: object, tc_id: int) -> None:
    check_case(SIG, tc_id)


def test_json_web_signature_summary(vectors_dir: object) -> None:
    counts = summarise(SIG)
    # ES256 (tc18, SpecialCaseEs256 tc378) is the only in-profile signing key here.
    assert len(counts.accepted) == 2, counts.accepted


def test_json_web_signature_reasons(vectors_dir: object) -> None:
    """The named attacks are refused for their own reason, not by accident."""
    for tc_id, case in wycheproof_cases(SIG).items():
        if "AlgIsNone" in case.test["flags"]:  # J01
            assert isinstance(_effective(SIG, tc_id).error, AlgorithmNotAllowed), case.label
        if "WrongPrimitive" in case.test["flags"]:  # J04: a registered alg, not ours
            assert isinstance(_effective(SIG, tc_id).error, AlgorithmMismatch), case.label
    _assert_reason(
        SIG, "rejectsSymmetryConfusionAttacks_aesKeyFromEcVerificationKeyBytes", AlgorithmNotAllowed
    )  # J03
    _assert_reason(SIG, "rejectsAttackerProvidedEmbeddedJwk", UntrustedKey)  # J09
    for tc_id in _by_comment(SIG, "rejectsModifiedHeader"):  # kid "Xid-..." on the ES256 key
        if standin_outcome(SIG, tc_id) is None:
            assert isinstance(outcome(SIG, tc_id).error, UnknownKeyId), f"tc{tc_id}"
    # Here the JSON serialisation (tc17) is cut short upstream, so it fails to
    # parse; the unprotected-header rule (J16) is checked on the intact copy in
    # the json_web_crypto file.
    _assert_reason(SIG, "rejectsValidJsonSerialization", MalformedJws)
    # J19: ECDSA special values on the in-profile key reach the signature check.
    for tc_id, case in wycheproof_cases(SIG).items():
        if case.group["comment"] == "SpecialCaseEs256" and case.expected == "invalid":
            error = outcome(SIG, tc_id).error
            assert isinstance(error, BadSignature | MalformedJws), f"{case.label}: {error!r}"


# --------------------------------------------------------------------------- JWE


@pytest.mark.parametrize("tc_id", wycheproof_params(ENC))
def test_json_web_encryption(vectors_dir: object, tc_id: int) -> None:
    check_case(ENC, tc_id)


def test_json_web_encryption_summary(vectors_dir: object) -> None:
    counts = summarise(ENC)
    assert len(counts.accepted) == 1, counts.accepted  # ECDH-ES+A256KW + A256GCM, tc66
    # Every failure of the facade is the one generic JWE error (E04).
    for tc_id in wycheproof_cases(ENC):
        result = outcome(ENC, tc_id)
        if result.stage == "decrypt":
            assert isinstance(result.error, InvalidEnvelope), result.describe()


def test_json_web_encryption_invalid_curve_epk(vectors_dir: object) -> None:
    """E01: the invalid-curve ``epk`` never gets near ECDH. Its recipient key
    (``ECDH-ES+A128KW``) is outside our profile, so check the point itself and
    the facade with our stand-in recipient."""
    for name in (ENC, CRYPTO):
        for tc_id in _by_comment(name, "rejectsInvalidCurvePoint"):
            header = _lenient_json_segment(wycheproof_cases(name)[tc_id].test["jwe"].split(".")[0])
            with pytest.raises(InvalidKey):
                validate_p256_point(header["epk"])
            assert isinstance(_effective(name, tc_id).error, InvalidEnvelope)


# --------------------------------------------------------------------------- JWK sets


@pytest.mark.parametrize("tc_id", wycheproof_params(KEY))
def test_json_web_key(vectors_dir: object, tc_id: int) -> None:
    check_case(KEY, tc_id)


def test_json_web_key_summary(vectors_dir: object) -> None:
    """J21: every key set here is outside our profile (HMAC, RSA) or defective
    (mixed secret/public, duplicate kid, ROCA, short keys, wrong alg/use/curve/
    point/kty), so every case must stop at key import with InvalidKey."""
    summarise(KEY)
    late = {
        f"tc{tc_id}": outcome(KEY, tc_id).describe()
        for tc_id in wycheproof_cases(KEY)
        if not isinstance(outcome(KEY, tc_id).error, InvalidKey)
        or outcome(KEY, tc_id).stage != "import"
    }
    assert late == {}


# --------------------------------------------------------------------------- crypto


@pytest.mark.parametrize("tc_id", wycheproof_params(CRYPTO))
def test_json_web_crypto(vectors_dir: object, tc_id: int) -> None:
    check_case(CRYPTO, tc_id)


def test_json_web_crypto_summary(vectors_dir: object) -> None:
    counts = summarise(CRYPTO)
    assert len(counts.accepted) == 1, counts.accepted  # the ES256 group's acceptsValid


def test_json_web_crypto_reasons(vectors_dir: object) -> None:
    structural: Sequence[tuple[str, type[KeysError]]] = (
        ("rejectsNoneAlgorithmAndMissingSignature", AlgorithmNotAllowed),  # J01
        ("rejectsSymmetryConfusionAttacks_aesKeyFromEcVerificationKeyBytes", AlgorithmNotAllowed),
        ("rejectsAttackerProvidedEmbeddedJwk", UntrustedKey),  # J09
        ("rejectsExtraComponent", MalformedJws),  # J02
        ("rejectsExtraEmptyComponent", MalformedJws),
        ("rejectsMissingSignatureAndSeparator", MalformedJws),
        ("rejectsEmptyString", MalformedJws),
        ("rejectsInvalidCurvePoint", InvalidEnvelope),  # E01
    )
    for comment, error in structural:
        _assert_reason(CRYPTO, comment, error)
    # The JSON serialisations: unprotected JWS header (J16) / JWE members.
    for tc_id in _by_comment(CRYPTO, "rejectsValidJsonSerialization"):
        case = wycheproof_cases(CRYPTO)[tc_id]
        expected = UnsupportedHeader if "jws" in case.test else InvalidEnvelope
        assert isinstance(_effective(CRYPTO, tc_id).error, expected), case.label
