"""RFC 7520 cookbook (plus its RFC 7797 and CFRG curve25519 additions) through ``keys/``.

Every example's key goes through our key import and every published
serialization (``compact``, ``json``, ``json_flat``) through the facade:
``verify_compact``/``verify_general`` for JWS, ``decrypt`` for JWE.

No example uses our profile (JWS ``Ed25519``/``ES256``, JWE
``ECDH-ES+A256KW`` + ``A256GCM``): the cookbook signs with RSA, PSS,
``ES512``/P-521, HMAC and ``EdDSA``, and encrypts with RSA, AES-KW, PBES2,
``dir`` and ECDH-ES with other content encryptions. So every serialization
must be refused, and each refusal is pinned to the specific ``keys.errors``
class that names its cause (:data:`JWS_EXPECTED`, :data:`JWE_EXPECTED`).
Should an in-profile example ever be added, :func:`_in_profile` makes the
test require that it verifies/decrypts to the input payload instead.

Keys outside the profile are refused at import, so the serializations are
run against an in-profile *stand-in* key registered under the example's own
``kid`` (JWS) or our P-256 recipient key (JWE). The two example keys inside
the profile's key types (the CFRG Ed25519 key and the 5.5 P-256 key, which
imports as an ``ECDH-ES+A256KW`` key because it says ``use: enc``) are used
themselves.

``rfc7797/hmac-sha2_b64_false.json`` has inconsistent intermediate values
(``KNOWN_ISSUES.json``); like every file here, only ``input`` and ``output``
are read, never ``signing``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from keys import jose
from keys.b64 import b64url_decode
from keys.errors import (
    AlgorithmMismatch,
    AlgorithmNotAllowed,
    CompressionNotAllowed,
    InvalidEnvelope,
    InvalidKey,
    KeysError,
    MalformedJws,
    UnknownKeyId,
    UnsupportedCrit,
    UnsupportedHeader,
)
from keys.keyset import KeySet
from keys.material import PrivateKey, PublicKey
from tests.conftest import vectors_root
from tests.vectors._util import (
    MISSING,
    RFC8037_ED25519,
    STANDIN_P256_ENC,
    Outcome,
    attempt,
    load,
    public_part,
    vectors_path,
    without_kid,
)

pytestmark = pytest.mark.vectors

COOKBOOK = "rfc7520_cookbook"

#: JWS refusal per example and serialization. ``json_flat`` is always
#: :class:`MalformedJws`: the facade takes compact and general JSON only.
JWS_EXPECTED: Mapping[str, Mapping[str, type[KeysError]]] = {
    # A registered algorithm that is not the key's pinned one (J04).
    "jws/4_1.rsa_v15_signature.json": {"compact": AlgorithmMismatch, "json": AlgorithmMismatch},
    "jws/4_2.rsa-pss_signature.json": {"compact": AlgorithmMismatch, "json": AlgorithmMismatch},
    "jws/4_3.ecdsa_signature.json": {"compact": AlgorithmMismatch, "json": AlgorithmMismatch},
    # HMAC is never a signature algorithm here (J03).
    "jws/4_4.hmac-sha2_integrity_protection.json": {
        "compact": AlgorithmNotAllowed,
        "json": AlgorithmNotAllowed,
    },
    # Detached content: compact fails on alg; general JSON has no 'payload'.
    "jws/4_5.signature_with_detached_content.json": {
        "compact": AlgorithmNotAllowed,
        "json": MalformedJws,
    },
    # Unprotected headers (J16).
    "jws/4_6.protecting_specific_header_fields.json": {"json": UnsupportedHeader},
    "jws/4_7.protecting_content_only.json": {"json": UnsupportedHeader},
    "jws/4_8.multiple_signatures.json": {"json": UnsupportedHeader},
    # b64:false (J11): 'crit' in compact; in JSON the unencoded payload is not
    # base64url, and verify_general decodes the payload before any header.
    "rfc7797/hmac-sha2_b64_false.json": {"compact": UnsupportedCrit, "json": MalformedJws},
    "rfc7797/4.2.hmac-sha2_b64_false.json": {"json": MalformedJws},
    # No 'kid' in the header: nothing to look the key up by (the EdDSA name
    # itself is covered in test_rfc8037.py).
    "curve25519/jws.json": {"compact": UnknownKeyId, "json": UnknownKeyId},
    "6.nesting_signatures_and_encryption.json#sign": {"compact": UnknownKeyId},
}

#: JWE refusal: the one generic error for everything (E01-E04, E06-E08), except
#: compression, which has its own code whenever the header is reached (E05).
JWE_EXPECTED: Mapping[str, Mapping[str, type[KeysError]]] = {
    "jwe/5_9.compressed_content.json": {
        "compact": CompressionNotAllowed,
        "json": CompressionNotAllowed,
    },
}

#: Example keys inside our key types; every other key must be refused (InvalidKey).
IMPORTABLE_KEYS = {
    "curve25519/jws.json#0",  # Ed25519 (its token is still refused: alg "EdDSA")
    "jwe/5_5.key_agreement_using_ecdh-es_with_aes-cbc-hmac-sha2.json#0",  # P-256, use enc
}


@dataclass(frozen=True)
class Example:
    label: str
    kind: str  # "jws" or "jwe"
    input: Mapping[str, Any]
    output: Mapping[str, Any]

    @property
    def keys(self) -> list[Mapping[str, Any]]:
        key = self.input.get("key")
        if key is None:  # 5.3 uses a password
            return []
        return list(key) if isinstance(key, list) else [key]

    @property
    def expected_value(self) -> bytes:
        field = "payload" if self.kind == "jws" else "plaintext"
        return str(self.input[field]).encode("utf-8")


def _relative_files() -> list[str]:
    root = vectors_path(COOKBOOK)
    assert root is not None
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.json"))


def _document(relative: str) -> Any:
    return load(str(Path(COOKBOOK) / relative))


@cache
def examples() -> dict[str, Example]:
    found: dict[str, Example] = {}
    for relative in _relative_files():
        doc = _document(relative)
        parts = [("sign", doc["sign"]), ("encrypt", doc["encrypt"])] if "sign" in doc else []
        if "input" in doc:
            parts = [("", doc)]
        for suffix, part in parts:
            label = f"{relative}#{suffix}" if suffix else relative
            kind = "jws" if "payload" in part["input"] else "jwe"
            found[label] = Example(label, kind, part["input"], part["output"])
    return found


def jwk_files() -> list[str]:
    return [r for r in _relative_files() if "input" not in _document(r) and "sign" not in r]


def _in_profile(example: Example) -> bool:
    alg, enc = example.input.get("alg"), example.input.get("enc")
    if example.kind == "jws":
        return alg in ("Ed25519", "ES256")
    return (alg, enc) == ("ECDH-ES+A256KW", "A256GCM")


# --------------------------------------------------------------------------- keys


def _import_example_key(example: Example, jwk: Mapping[str, Any]) -> Outcome:
    if example.kind == "jws":
        # A verifier holds the public half; RSA/oct members are refused anyway.
        return attempt(
            "import",
            lambda: PublicKey.from_jwk(public_part(jwk), require_thumbprint_kid=False),
        )
    return attempt("import", lambda: PrivateKey.from_jwk(without_kid(jwk)))


def _key_items() -> Iterator[tuple[str, Example, Mapping[str, Any]]]:
    for example in examples().values():
        for index, jwk in enumerate(example.keys):
            yield f"{example.label}#{index}".replace("##", "#"), example, jwk


def _key_params() -> list[Any]:
    if vectors_root() is None:
        return [MISSING]
    return [pytest.param(item_id, id=item_id) for item_id, _, _ in _key_items()]


@pytest.mark.parametrize("item_id", _key_params())
def test_example_key_import(vectors_dir: object, item_id: str) -> None:
    _, example, jwk = next(item for item in _key_items() if item[0] == item_id)
    result = _import_example_key(example, jwk)
    if item_id in IMPORTABLE_KEYS:
        assert result.accepted, result.describe()
    else:
        assert isinstance(result.error, InvalidKey), result.describe()


def _jwk_params() -> list[Any]:
    return [MISSING] if vectors_root() is None else [pytest.param(r, id=r) for r in jwk_files()]


@pytest.mark.parametrize("relative", _jwk_params())
def test_section3_jwk_refused(vectors_dir: object, relative: str) -> None:
    """RFC 7520 s3: P-521, RSA and symmetric keys, public and private."""
    jwk = _document(relative)
    with pytest.raises(InvalidKey):
        if {"d", "k"} & set(jwk):
            PrivateKey.from_jwk(without_kid(jwk))
        else:
            PublicKey.from_jwk(jwk, require_thumbprint_kid=False)


# --------------------------------------------------------------------------- serializations


def _verifier(example: Example) -> KeySet | PrivateKey:
    """The example's own key when it imports, else an in-profile stand-in."""
    for jwk in example.keys:
        imported = _import_example_key(example, jwk)
        if imported.accepted:
            key = imported.value
            return KeySet([key]) if example.kind == "jws" else key
    if example.kind == "jwe":
        return PrivateKey.from_jwk(STANDIN_P256_ENC)
    kid = example.keys[0].get("kid", "stand-in") if example.keys else "stand-in"
    standin = {**public_part(RFC8037_ED25519), "alg": "Ed25519", "kid": kid}
    return KeySet([PublicKey.from_jwk(standin, require_thumbprint_kid=False)])


@cache
def serialization_outcome(label: str, form: str) -> Outcome:
    example = examples()[label]
    value = example.output[form]
    verifier = _verifier(example)
    if isinstance(verifier, PrivateKey):
        return attempt("decrypt", lambda: jose.decrypt(value, verifier, typ=None).plaintext)
    if form == "compact":
        return attempt("verify", lambda: jose.verify_compact(value, verifier, typ=None).payload)
    # verify_general is annotated ``typ: str`` but, like verify_compact, skips
    # the check for None; the cookbook's headers carry no typ of ours.
    return attempt(
        "verify",
        lambda: jose.verify_general(value, verifier, typ=None)[0].payload,
    )


def expected_error(label: str, form: str) -> type[KeysError]:
    example = examples()[label]
    if example.kind == "jws":
        return MalformedJws if form == "json_flat" else JWS_EXPECTED[label][form]
    return JWE_EXPECTED.get(label, {}).get(form, InvalidEnvelope)


def _serializations() -> list[tuple[str, str]]:
    return [(label, form) for label, ex in examples().items() for form in ex.output]


def _serialization_params() -> list[Any]:
    if vectors_root() is None:
        return [MISSING]
    return [
        pytest.param(f"{label}:{form}", id=f"{label}:{form}") for label, form in _serializations()
    ]


@pytest.mark.parametrize("item", _serialization_params())
def test_serialization(vectors_dir: object, item: str) -> None:
    label, form = item.rsplit(":", 1)
    example = examples()[label]
    result = serialization_outcome(label, form)
    if _in_profile(example):
        assert result.accepted, f"{item}: in our profile, but {result.describe()}"
        assert result.value == example.expected_value
        return
    expected = expected_error(label, form)
    assert type(result.error) is expected, (
        f"{item}: expected {expected.__name__}, got {result.describe()}"
    )


def test_every_example_has_an_expectation(vectors_dir: object) -> None:
    """The tables name exactly the files present (a new or renamed file must be
    classified by hand, not refused by default)."""
    jws_labels = {label for label, ex in examples().items() if ex.kind == "jws"}
    assert jws_labels == set(JWS_EXPECTED)
    for label, forms in JWS_EXPECTED.items():
        assert set(forms) == set(examples()[label].output) - {"json_flat"}, label
    assert set(JWE_EXPECTED) <= set(examples())
    assert f"{COOKBOOK}/rfc7797/hmac-sha2_b64_false.json" in load("KNOWN_ISSUES.json")


def test_positive_controls(vectors_dir: object) -> None:
    """The refusals are about names and modes, not broken crypto: the CFRG
    Ed25519 signature verifies with the raw primitive, and 5.5's P-256 key
    is a usable ``ECDH-ES+A256KW`` recipient key."""
    cfrg = examples()["curve25519/jws.json"]
    key = PublicKey.from_jwk(public_part(cfrg.keys[0]))
    head, body, signature = cfrg.output["compact"].split(".")
    assert key.verify(b64url_decode(signature), f"{head}.{body}".encode("ascii"))
    assert b64url_decode(body) == cfrg.expected_value
    ecdh = examples()["jwe/5_5.key_agreement_using_ecdh-es_with_aes-cbc-hmac-sha2.json"]
    assert PrivateKey.from_jwk(without_kid(ecdh.keys[0])).alg == "ECDH-ES+A256KW"


def test_summary(vectors_dir: object) -> None:
    items = _serializations()
    outcomes = {item: serialization_outcome(*item) for item in items}
    accepted = [f"{label}:{form}" for (label, form), o in outcomes.items() if o.accepted]
    in_profile = [label for label, ex in examples().items() if _in_profile(ex)]
    keys = [(item_id, _import_example_key(ex, jwk)) for item_id, ex, jwk in _key_items()]
    imported = [item_id for item_id, o in keys if o.accepted]
    jwks = jwk_files()
    print()
    print(
        f"rfc7520_cookbook: {len(_relative_files())} files, {len(examples())} examples "
        f"({len(in_profile)} in profile), {len(items)} serializations: "
        f"{len(accepted)} accepted / {len(items) - len(accepted)} refused; "
        f"{len(keys) + len(jwks)} keys: {len(imported)} imported / "
        f"{len(keys) + len(jwks) - len(imported)} refused"
    )
    assert sorted(accepted) == sorted(
        f"{label}:{form}" for label, form in items if label in in_profile
    )
    assert set(imported) == IMPORTABLE_KEYS
