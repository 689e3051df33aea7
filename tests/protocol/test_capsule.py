"""protocol/capsule.py: sign-then-encrypt context capsules (E01-E10)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import example, given, settings

from keys import strictjson
from keys.b64 import b64url_decode, b64url_encode
from keys.jose import encrypt_general, sign_compact
from keys.keyset import KeySet, PrivateKeySet
from keys.material import PrivateKey
from protocol.capsule import (
    CAPSULE_JWE_TYP,
    CAPSULE_JWS_TYP,
    CapsuleClaims,
    open_capsule_at,
    seal_capsule_at,
)
from protocol.directory import KeyDirectory
from protocol.errors import (
    BindingMismatch,
    IdentityMismatch,
    InvalidArtifact,
    InvalidEnvelope,
    NotRecipient,
    NotYetValid,
    TokenExpired,
    UnknownKeyId,
    WrongType,
)
from tests.protocol._support import (
    ALPHA,
    BETA,
    CONVERSATION,
    DETERMINISTIC,
    MALLORY,
    NOW,
    PAYMENTS,
    flip_b64,
    json_values,
    raises_exactly,
)

PAYLOAD = {"order": "A-77", "customer": {"email": "ada@example.com"}, "amount": 900}
NONCE = "capsule-nonce-0000000001"


@pytest.fixture(scope="module")
def senders(alpha_sig: PrivateKey, beta_sig: PrivateKey) -> KeyDirectory:
    return KeyDirectory({ALPHA: KeySet([alpha_sig.public]), BETA: KeySet([beta_sig.public])})


@pytest.fixture(scope="module")
def recipients(beta_enc: PrivateKeySet, payments_enc: PrivateKeySet) -> dict[str, KeySet]:
    """BETA publishes both its keys (rotated); PAYMENTS one."""
    return {BETA: beta_enc.public(), PAYMENTS: payments_enc.public()}


@pytest.fixture(scope="module")
def capsule(alpha_sig: PrivateKey, recipients: dict[str, KeySet]) -> dict[str, Any]:
    return seal_capsule_at(
        PAYLOAD,
        sender=ALPHA,
        signing_key=alpha_sig,
        recipients=recipients,
        conversation=CONVERSATION,
        now=NOW,
        nonce=NONCE,
        cty="application/json",
    )


def _open(
    capsule: dict[str, Any] | str | bytes,
    me: str,
    keys: PrivateKeySet,
    senders: KeyDirectory,
    **kwargs: Any,
) -> Any:
    kwargs.setdefault("now", NOW)
    kwargs.setdefault("conversation", CONVERSATION)
    return open_capsule_at(capsule, me=me, my_keys=keys, senders=senders, **kwargs)


# --------------------------------------------------------------------------- round trip


def test_every_recipient_opens_with_its_own_key(
    capsule: dict[str, Any],
    senders: KeyDirectory,
    beta_enc: PrivateKeySet,
    payments_enc: PrivateKeySet,
    alpha_sig: PrivateKey,
) -> None:
    for me, keys in ((BETA, beta_enc), (PAYMENTS, payments_enc)):
        opened = _open(capsule, me, keys, senders, delivered_by=ALPHA)
        assert opened.payload == PAYLOAD
        assert opened.sender_kid == alpha_sig.kid
        claims = opened.claims
        assert claims.iss == ALPHA
        assert claims.aud == (BETA, PAYMENTS)
        assert claims.conv == CONVERSATION
        assert claims.nonce == NONCE
        assert (claims.iat, claims.exp) == (NOW, NOW + 300)
        assert claims.cty == "application/json"


def test_one_recipient_entry_per_key_and_nothing_readable(
    capsule: dict[str, Any], recipients: dict[str, KeySet]
) -> None:
    kids = [entry["header"]["kid"] for entry in capsule["recipients"]]
    assert kids == [key.kid for keyset in recipients.values() for key in keyset]
    assert len(kids) == 3
    protected = strictjson.loads(b64url_decode(capsule["protected"]))
    assert protected == {"enc": "A256GCM", "typ": CAPSULE_JWE_TYP, "cty": CAPSULE_JWS_TYP}
    text = json.dumps(capsule)
    assert "ada@example.com" not in text
    assert ALPHA not in text, "the gateway sees recipient kids, not the sender"


def test_a_retired_key_still_opens(
    capsule: dict[str, Any], senders: KeyDirectory, beta_enc: PrivateKeySet
) -> None:
    """Sealed to both of BETA's keys; BETA holding only the retired one can open it."""
    retired_only = PrivateKeySet(beta_enc.retired)
    assert _open(capsule, BETA, retired_only, senders).payload == PAYLOAD


def test_accepts_serialised_forms(
    capsule: dict[str, Any], senders: KeyDirectory, payments_enc: PrivateKeySet
) -> None:
    text = json.dumps(capsule)
    assert _open(text, PAYMENTS, payments_enc, senders).payload == PAYLOAD
    assert _open(text.encode(), PAYMENTS, payments_enc, senders).payload == PAYLOAD


def test_default_nonce_is_random(
    alpha_sig: PrivateKey, payments_enc: PrivateKeySet, senders: KeyDirectory
) -> None:
    nonces = set()
    for _ in range(2):
        sealed = seal_capsule_at(
            "x",
            sender=ALPHA,
            signing_key=alpha_sig,
            recipients={PAYMENTS: payments_enc.public()},
            conversation=CONVERSATION,
            now=NOW,
        )
        nonces.add(_open(sealed, PAYMENTS, payments_enc, senders).claims.nonce)
    assert len(nonces) == 2
    assert all(len(n) >= 22 for n in nonces), "128 bits, base64url"


# --------------------------------------------------------------------------- who may open


def test_a_non_recipient_cannot_open(
    capsule: dict[str, Any], senders: KeyDirectory, mallory_enc: PrivateKeySet
) -> None:
    with raises_exactly(InvalidEnvelope) as info:
        _open(capsule, MALLORY, mallory_enc, senders)
    assert info.value.public() == {
        "code": "invalid_envelope",
        "message": "invalid envelope",
        "retryable": False,
    }


def test_a_recipient_claiming_another_entry_cannot_open(
    capsule: dict[str, Any], senders: KeyDirectory, mallory_enc: PrivateKeySet
) -> None:
    """Mallory relabels PAYMENTS' recipient entry with her kid: the unwrap fails."""
    forged = copy.deepcopy(capsule)
    forged["recipients"][-1]["header"]["kid"] = mallory_enc.active.kid
    with raises_exactly(InvalidEnvelope):
        _open(forged, MALLORY, mallory_enc, senders)


def test_audience_must_name_the_opener(
    alpha_sig: PrivateKey,
    senders: KeyDirectory,
    mallory_enc: PrivateKeySet,
) -> None:
    """Encrypted to MALLORY's key, but signed for PAYMENTS: MALLORY decrypts, the aud refuses."""
    sealed = seal_capsule_at(
        PAYLOAD,
        sender=ALPHA,
        signing_key=alpha_sig,
        recipients={PAYMENTS: mallory_enc.public()},
        conversation=CONVERSATION,
        now=NOW,
    )
    with raises_exactly(NotRecipient) as info:
        _open(sealed, MALLORY, mallory_enc, senders)
    assert info.value.http_status == 403


def test_wrong_conversation(
    capsule: dict[str, Any], senders: KeyDirectory, payments_enc: PrivateKeySet
) -> None:
    with raises_exactly(BindingMismatch):
        _open(capsule, PAYMENTS, payments_enc, senders, conversation="ctx-other")
    assert _open(capsule, PAYMENTS, payments_enc, senders, conversation=None).payload == PAYLOAD


def test_delivered_by_someone_else(
    capsule: dict[str, Any], senders: KeyDirectory, payments_enc: PrivateKeySet
) -> None:
    """E09: BETA forwards ALPHA's capsule as if it were its own (422, security.md §1.2)."""
    with raises_exactly(BindingMismatch) as info:
        _open(capsule, PAYMENTS, payments_enc, senders, delivered_by=BETA)
    assert info.value.http_status == 422


def test_signer_must_be_the_issuer(
    beta_sig: PrivateKey, senders: KeyDirectory, payments_enc: PrivateKeySet
) -> None:
    """BETA signs with its own (known) key but writes iss = ALPHA."""
    sealed = seal_capsule_at(
        PAYLOAD,
        sender=ALPHA,
        signing_key=beta_sig,
        recipients={PAYMENTS: payments_enc.public()},
        conversation=CONVERSATION,
        now=NOW,
    )
    with raises_exactly(IdentityMismatch):
        _open(sealed, PAYMENTS, payments_enc, senders)


def test_signer_outside_the_directory(
    rogue_key: PrivateKey, senders: KeyDirectory, payments_enc: PrivateKeySet
) -> None:
    sealed = seal_capsule_at(
        PAYLOAD,
        sender=ALPHA,
        signing_key=rogue_key,
        recipients={PAYMENTS: payments_enc.public()},
        conversation=CONVERSATION,
        now=NOW,
    )
    with raises_exactly(UnknownKeyId):
        _open(sealed, PAYMENTS, payments_enc, senders)


# --------------------------------------------------------------------------- time


def test_validity_edges(
    capsule: dict[str, Any], senders: KeyDirectory, payments_enc: PrivateKeySet
) -> None:
    assert _open(capsule, PAYMENTS, payments_enc, senders, now=NOW + 299.9).payload == PAYLOAD
    with raises_exactly(TokenExpired):
        _open(capsule, PAYMENTS, payments_enc, senders, now=NOW + 300)
    with raises_exactly(TokenExpired):
        _open(capsule, PAYMENTS, payments_enc, senders, now=NOW + 86_400)
    assert _open(capsule, PAYMENTS, payments_enc, senders, now=NOW - 5).payload == PAYLOAD
    with raises_exactly(NotYetValid):
        _open(capsule, PAYMENTS, payments_enc, senders, now=NOW - 6)
    with raises_exactly(NotYetValid):
        _open(capsule, PAYMENTS, payments_enc, senders, now=NOW - 6, skew_s=0)
    assert _open(capsule, PAYMENTS, payments_enc, senders, now=NOW - 60, skew_s=60)


# --------------------------------------------------------------------------- tampering


def _tampered(capsule: dict[str, Any], member: str) -> dict[str, Any]:
    forged = copy.deepcopy(capsule)
    if member == "encrypted_key":
        entry = forged["recipients"][-1]
        entry["encrypted_key"] = flip_b64(entry["encrypted_key"], 3)
    elif member == "protected":
        header = strictjson.loads(b64url_decode(forged["protected"]))
        header["cty"] = "baton-capsule+jwx"
        forged["protected"] = b64url_encode(json.dumps(header).encode())
    elif member == "epk":
        entry = forged["recipients"][-1]
        entry["header"]["epk"]["x"] = flip_b64(entry["header"]["epk"]["x"], 31)
    else:
        forged[member] = flip_b64(forged[member], 5)
    return forged


@pytest.mark.parametrize("member", ["ciphertext", "tag", "iv", "protected", "encrypted_key", "epk"])
def test_tampering_gives_one_generic_error(
    capsule: dict[str, Any], senders: KeyDirectory, payments_enc: PrivateKeySet, member: str
) -> None:
    with raises_exactly(InvalidEnvelope) as info:
        _open(_tampered(capsule, member), PAYMENTS, payments_enc, senders)
    assert info.value.public() == {
        "code": "invalid_envelope",
        "message": "invalid envelope",
        "retryable": False,
    }
    assert info.value.http_status == 400


def test_every_envelope_failure_looks_the_same(
    capsule: dict[str, Any],
    senders: KeyDirectory,
    payments_enc: PrivateKeySet,
    mallory_enc: PrivateKeySet,
) -> None:
    """E01-E04: the caller cannot tell which check failed (no decryption oracle)."""
    bodies = []
    for member in ("ciphertext", "tag", "iv", "protected", "encrypted_key", "epk"):
        with pytest.raises(InvalidEnvelope) as info:
            _open(_tampered(capsule, member), PAYMENTS, payments_enc, senders)
        bodies.append(json.dumps(info.value.public(), sort_keys=True))
    with pytest.raises(InvalidEnvelope) as info:
        _open(capsule, MALLORY, mallory_enc, senders)
    bodies.append(json.dumps(info.value.public(), sort_keys=True))
    assert len(bodies) == 7
    assert len(set(bodies)) == 1


@pytest.mark.parametrize(
    "value",
    [
        "{}",
        '{"recipients": "x"}',
        '{"recipients": [{"header": 1}]}',
        '{"recipients": [], "ciphertext": "AA"}',
        "{not json",
        "[]",
        '"a string"',
        '{"a": 1, "a": 2}',
    ],
)
def test_malformed_envelopes_are_invalid_envelopes(
    senders: KeyDirectory, payments_enc: PrivateKeySet, value: str
) -> None:
    """security.md §1: "Malformed or undecryptable envelope: 400 invalid_envelope.
    The body is identical for every JWE failure."

    BUG for the last four: ``open_capsule_at`` parses the JSON itself, outside
    ``keys.jose.decrypt`` (which maps every failure to InvalidEnvelope), so a
    capsule that is not a JSON object answers ``malformed_input`` instead.
    """
    with raises_exactly(InvalidEnvelope) as info:
        _open(value, PAYMENTS, payments_enc, senders)
    assert info.value.public()["code"] == "invalid_envelope"


def test_jwe_of_another_type_is_refused(
    alpha_sig: PrivateKey, senders: KeyDirectory, payments_enc: PrivateKeySet
) -> None:
    claims = CapsuleClaims(
        iss=ALPHA,
        aud=(PAYMENTS,),
        conv=CONVERSATION,
        nonce=NONCE,
        iat=NOW,
        exp=NOW + 60,
        payload=PAYLOAD,
    )
    inner = sign_compact(claims.canonical(), alpha_sig, typ=CAPSULE_JWS_TYP)
    wrong_outer = encrypt_general(
        inner.encode(), payments_enc.public(), typ="baton-handoff+jwe", cty=CAPSULE_JWS_TYP
    )
    with raises_exactly(InvalidEnvelope):
        _open(wrong_outer, PAYMENTS, payments_enc, senders)
    right = encrypt_general(
        inner.encode(), payments_enc.public(), typ=CAPSULE_JWE_TYP, cty=CAPSULE_JWS_TYP
    )
    assert _open(right, PAYMENTS, payments_enc, senders).payload == PAYLOAD


def test_inner_jws_of_another_type_is_refused(
    alpha_sig: PrivateKey, senders: KeyDirectory, payments_enc: PrivateKeySet
) -> None:
    """A decision or event signed by the same key cannot be passed off as a capsule."""
    claims = CapsuleClaims(
        iss=ALPHA,
        aud=(PAYMENTS,),
        conv=CONVERSATION,
        nonce=NONCE,
        iat=NOW,
        exp=NOW + 60,
        payload=PAYLOAD,
    )
    inner = sign_compact(claims.canonical(), alpha_sig, typ="baton-decision+jws")
    sealed = encrypt_general(
        inner.encode(), payments_enc.public(), typ=CAPSULE_JWE_TYP, cty=CAPSULE_JWS_TYP
    )
    with raises_exactly(WrongType):
        _open(sealed, PAYMENTS, payments_enc, senders)


@pytest.mark.parametrize(
    "change",
    [
        {"aud": [PAYMENTS, PAYMENTS]},
        {"aud": []},
        {"exp": NOW},
        {"exp": NOW + 7 * 24 * 3600 + 1},
        {"nonce": "short"},
        {"extra": 1},
        {"iat": "1750000000"},
    ],
    ids=[
        "duplicate aud",
        "empty aud",
        "exp=iat",
        "ttl over a week",
        "short nonce",
        "unknown member",
        "iat as string",
    ],
)
def test_signed_claims_must_be_valid(
    alpha_sig: PrivateKey,
    senders: KeyDirectory,
    payments_enc: PrivateKeySet,
    change: dict[str, Any],
) -> None:
    claims = {
        "iss": ALPHA,
        "aud": [PAYMENTS],
        "conv": CONVERSATION,
        "nonce": NONCE,
        "iat": NOW,
        "exp": NOW + 60,
        "cty": None,
        "payload": PAYLOAD,
        **change,
    }
    inner = sign_compact(json.dumps(claims).encode(), alpha_sig, typ=CAPSULE_JWS_TYP)
    sealed = encrypt_general(
        inner.encode(), payments_enc.public(), typ=CAPSULE_JWE_TYP, cty=CAPSULE_JWS_TYP
    )
    with raises_exactly(InvalidArtifact):
        _open(sealed, PAYMENTS, payments_enc, senders)


def test_signed_claims_with_a_malformed_issuer(
    alpha_sig: PrivateKey, senders: KeyDirectory, payments_enc: PrivateKeySet
) -> None:
    claims = {
        "iss": "agent:alpha",
        "aud": [PAYMENTS],
        "conv": CONVERSATION,
        "nonce": NONCE,
        "iat": NOW,
        "exp": NOW + 60,
        "cty": None,
        "payload": PAYLOAD,
    }
    inner = sign_compact(json.dumps(claims).encode(), alpha_sig, typ=CAPSULE_JWS_TYP)
    sealed = encrypt_general(
        inner.encode(), payments_enc.public(), typ=CAPSULE_JWE_TYP, cty=CAPSULE_JWS_TYP
    )
    with raises_exactly(InvalidArtifact):
        _open(sealed, PAYMENTS, payments_enc, senders)


# --------------------------------------------------------------------------- property


@settings(DETERMINISTIC, max_examples=60)
@given(payload=json_values)
@example(payload={"nested": [1.5, "\U0001f600", None, {"": False}]})
@example(payload=2.0**53 - 1)
def test_any_json_payload_round_trips(
    payload: Any,
    alpha_sig: PrivateKey,
    senders: KeyDirectory,
    payments_enc: PrivateKeySet,
) -> None:
    sealed = seal_capsule_at(
        payload,
        sender=ALPHA,
        signing_key=alpha_sig,
        recipients={PAYMENTS: payments_enc.public()},
        conversation=CONVERSATION,
        now=NOW,
        nonce=NONCE,
    )
    opened = _open(sealed, PAYMENTS, payments_enc, senders, delivered_by=ALPHA)
    assert opened.payload == payload


@pytest.mark.parametrize(
    "payload",
    [{1: "a"}, {"a": {None: 1}}, (1, 2), {"s": {1, 2}}, float("nan"), 7.196287793040597e16],
    ids=["int key", "null key", "tuple", "set", "NaN", "integral double beyond 2**53"],
)
def test_payload_must_be_plain_json(
    payload: Any, alpha_sig: PrivateKey, payments_enc: PrivateKeySet
) -> None:
    """Python-built payloads are checked before signing: what the recipient parses
    must be what the sender meant (ADR 0004)."""
    with raises_exactly(InvalidArtifact):
        seal_capsule_at(
            payload,
            sender=ALPHA,
            signing_key=alpha_sig,
            recipients={PAYMENTS: payments_enc.public()},
            conversation=CONVERSATION,
            now=NOW,
        )


def test_sender_side_misuse_is_a_baton_error(alpha_sig: PrivateKey) -> None:
    """Building an invalid capsule in code raises InvalidArtifact, not pydantic's error."""
    from protocol.capsule import seal_capsule_at

    with raises_exactly(InvalidArtifact):
        seal_capsule_at(
            {"x": 1},
            sender=ALPHA,
            signing_key=alpha_sig,
            recipients={},
            conversation=CONVERSATION,
            now=NOW,
        )
    with raises_exactly(InvalidArtifact):
        seal_capsule_at(
            {1: "non-string key"},
            sender=ALPHA,
            signing_key=alpha_sig,
            recipients={},
            conversation=CONVERSATION,
            now=NOW,
        )
