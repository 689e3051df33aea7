"""adapters/agent_card.py: Agent Card parsing, rewriting, signing, verification (A2A §8.4).

The reference SDK (a2a-sdk) is the oracle: its canonical form must equal ours
on arbitrary cards, its signatures must verify here, and ours with its verifier.
"""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from a2a.types import AgentCard, a2a_pb2
from a2a.utils.signing import (
    InvalidSignaturesError,
    _canonicalize_agent_card,
    create_agent_card_signer,
    create_signature_verifier,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict, ParseDict
from hypothesis import given
from hypothesis import strategies as st
from jwt.api_jwk import PyJWK

from adapters.agent_card import (
    AGENT_CARD_SCHEMA,
    CARD_JWS_TYP,
    CardField,
    FieldKind,
    VerifiedCard,
    _proto_name,
    card_signing_input,
    parse_card,
    rewrite_card,
    sign_card,
    verify_card,
)
from keys.b64 import b64url_decode, b64url_encode
from keys.keyset import KeySet
from keys.material import PrivateKey, PublicKey
from protocol.errors import (
    AlgorithmMismatch,
    AlgorithmNotAllowed,
    BadSignature,
    BatonError,
    InvalidArtifact,
    MalformedInput,
    MalformedJws,
    PayloadTooLarge,
    SignatureMissing,
    TooDeep,
    UnknownKeyId,
    UnsupportedCrit,
    UnsupportedHeader,
    UntrustedKey,
    WrongType,
)
from tests.protocol._support import DETERMINISTIC, json_text, json_values, raises_exactly

GATEWAY_INTERFACES = [
    {
        "url": "https://gw.baton.local/a2a/echo",
        "protocolBinding": "JSONRPC",
        "protocolVersion": "1.0",
    }
]
GATEWAY_SCHEMES = {
    "mtls": {"mtlsSecurityScheme": {"description": "client certificate from baton.local"}},
    "bearer": {
        "httpAuthSecurityScheme": {
            "scheme": "Bearer",
            "bearerFormat": "JWT",
            "description": "JWT bound to the client certificate (RFC 8705)",
        }
    },
}
GATEWAY_REQUIREMENTS = [{"schemes": {"mtls": {"list": []}, "bearer": {"list": ["a2a"]}}}]


def upstream_card() -> dict[str, Any]:
    """A v1.0 card as an upstream would publish it, exercising most of the schema."""
    return {
        "name": "Echo",
        "description": "Echoes what it is told",
        "version": "1.2.0",
        "supportedInterfaces": [
            {
                "url": "https://echo.internal:9000/a2a",
                "protocolBinding": "JSONRPC",
                "protocolVersion": "1.0",
            },
            {
                "url": "https://echo.internal:9000/rest",
                "protocolBinding": "HTTP+JSON",
                "protocolVersion": "1.0",
                "tenant": "",
            },
        ],
        "provider": {"url": "https://example.com", "organization": "Example Ltd"},
        "documentationUrl": "https://example.com/docs/echo",
        "iconUrl": "",
        "capabilities": {
            "streaming": True,
            "pushNotifications": False,
            "extensions": [
                {
                    "uri": "https://example.com/ext/trace",
                    "description": "tracing",
                    "required": False,
                    "params": {"level": 2, "ratio": 0.25, "tags": ["a", "", None], "on": False},
                }
            ],
        },
        "securitySchemes": {
            "oidc": {"openIdConnectSecurityScheme": {"openIdConnectUrl": "https://id.example.com"}},
            "oauth": {
                "oauth2SecurityScheme": {
                    "flows": {
                        "authorizationCode": {
                            "authorizationUrl": "https://id.example.com/authorize",
                            "tokenUrl": "https://id.example.com/token",
                            "scopes": {"echo": "use echo", "empty": ""},
                            "pkceRequired": True,
                        }
                    }
                }
            },
        },
        "securityRequirements": [{"schemes": {"oidc": {"list": ["openid"]}}}],
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain", "application/json"],
        "skills": [
            {
                "id": "echo",
                "name": "Echo",
                "description": "Echo the message back",
                "tags": ["echo", "test"],
                "examples": ["hello"],
                "securityRequirements": [{"schemes": {"oauth": {"list": ["echo"]}}}],
            }
        ],
    }


@pytest.fixture(scope="module")
def es_key() -> PrivateKey:
    return PrivateKey.generate("ES256")


@pytest.fixture(scope="module")
def ed_key() -> PrivateKey:
    return PrivateKey.generate("Ed25519")


@pytest.fixture(scope="module")
def unpinned_key() -> PrivateKey:
    return PrivateKey.generate("ES256")


@pytest.fixture(scope="module")
def pinned(es_key: PrivateKey, ed_key: PrivateKey) -> KeySet:
    return KeySet([es_key.public, ed_key.public])


# --------------------------------------------------------------------------- SDK helpers


def sdk_canonical(card: dict[str, Any]) -> bytes:
    proto = ParseDict(card, AgentCard(), ignore_unknown_fields=True)
    return _canonicalize_agent_card(proto).encode("utf-8")


def sdk_sign(
    card: dict[str, Any],
    key: PrivateKey,
    *,
    header: dict[str, Any] | None = None,
    unprotected: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The card signed by the SDK's signer, as the SDK serves it (ProtoJSON)."""
    protected = header or {"alg": key.alg, "kid": key.kid, "typ": "JOSE"}
    signer = create_agent_card_signer(key.crypto_key, protected, unprotected)  # type: ignore[arg-type]
    signed: dict[str, Any] = MessageToDict(signer(ParseDict(card, AgentCard())))
    return signed


def sdk_verify(card: dict[str, Any], key: PublicKey) -> None:
    """Raises unless the SDK's verifier accepts ``card`` under ``key``."""
    proto = ParseDict(card, AgentCard(), ignore_unknown_fields=True)
    verifier = create_signature_verifier(lambda kid, jku: PyJWK(key.to_jwk()), [key.alg])
    verifier(proto)


def wire(card: dict[str, Any]) -> bytes:
    """What travels: the card as JSON bytes."""
    return json.dumps(card).encode("utf-8")


def forge_signature(
    header: dict[str, Any], card: dict[str, Any], sign: Callable[[bytes], bytes]
) -> dict[str, str]:
    """An AgentCardSignature with an arbitrary protected header."""
    protected = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    payload = b64url_encode(card_signing_input(card))
    signature = sign(f"{protected}.{payload}".encode("ascii"))
    return {"protected": protected, "signature": b64url_encode(signature)}


# --------------------------------------------------------------------------- canonical form


def test_signing_input_matches_the_sdk_on_a_full_card() -> None:
    card = {**upstream_card(), "unknownMember": {"x": 1}, "url": "https://bypass.example"}
    ours = card_signing_input(card)
    assert ours == sdk_canonical(card)
    # Defaults and members outside the schema are not signed; explicit-presence false is.
    text = ours.decode()
    assert '"tenant"' not in text and '"iconUrl"' not in text and '"required"' not in text
    assert '"pushNotifications":false' in text
    assert "bypass" not in text and "unknownMember" not in text
    assert '"tags":["a"]' in text  # "" and null removed inside a Struct as well


def test_signing_input_ignores_existing_signatures(es_key: PrivateKey) -> None:
    card = upstream_card()
    assert card_signing_input(sign_card(card, es_key)) == card_signing_input(card)


def test_empty_schemes_and_scopeless_requirements_are_not_covered() -> None:
    """The §8.4.1 quirk the module docstring warns about, pinned to the SDK's behaviour."""
    card = upstream_card()
    bare = {**card, "securitySchemes": {"mtls": {"mtlsSecurityScheme": {}}}}
    bare["securityRequirements"] = [{"schemes": {"mtls": {}}}]
    stripped = {
        k: v for k, v in bare.items() if k not in ("securitySchemes", "securityRequirements")
    }
    assert card_signing_input(bare) == card_signing_input(stripped) == sdk_canonical(bare)


def test_proto_names_are_read_like_protojson_parsers() -> None:
    card = upstream_card()
    card["supported_interfaces"] = card.pop("supportedInterfaces")
    card["default_input_modes"] = card.pop("defaultInputModes")
    assert card_signing_input(card) == card_signing_input(upstream_card()) == sdk_canonical(card)


def _kind_of(field: FieldDescriptor) -> CardField:
    message = field.message_type
    oneof = field.containing_oneof
    real_oneof = oneof.name if oneof is not None and not oneof.name.startswith("_") else None
    if message is not None and message.GetOptions().map_entry:
        value = message.fields_by_name["value"]
        if value.message_type is None:
            return CardField(FieldKind.STRING_MAP)
        return CardField(FieldKind.MESSAGE_MAP, value.message_type.name)
    if message is not None:
        if message.full_name == "google.protobuf.Struct":
            return CardField(FieldKind.STRUCT)
        kind = FieldKind.MESSAGES if field.is_repeated else FieldKind.MESSAGE
        return CardField(kind, message.name, real_oneof)
    if field.type == FieldDescriptor.TYPE_STRING:
        return CardField(FieldKind.STRINGS if field.is_repeated else FieldKind.STRING)
    assert field.type == FieldDescriptor.TYPE_BOOL, field.full_name
    return CardField(FieldKind.BOOL if field.has_presence else FieldKind.IMPLICIT_BOOL)


def _sdk_messages(descriptor: Descriptor) -> Iterator[Descriptor]:
    seen: set[str] = set()
    stack = [descriptor]
    while stack:
        message = stack.pop()
        if message.full_name in seen:
            continue
        seen.add(message.full_name)
        yield message
        for field in message.fields:
            child = field.message_type
            if child is None or child.full_name.startswith("google.protobuf"):
                continue
            if child.GetOptions().map_entry:
                child = child.fields_by_name["value"].message_type
            if child is not None:
                stack.append(child)


def test_schema_table_matches_the_sdk_descriptors() -> None:
    sdk = {message.name: message for message in _sdk_messages(a2a_pb2.AgentCard.DESCRIPTOR)}
    assert set(sdk) == set(AGENT_CARD_SCHEMA)
    for name, message in sdk.items():
        expected = {field.json_name: _kind_of(field) for field in message.fields}
        assert dict(AGENT_CARD_SCHEMA[name]) == expected, name
        for field in message.fields:
            assert _proto_name(field.json_name) == field.name


# A card generator driven by the schema; the SDK parses it with its own descriptors,
# so a wrong table entry shows up as a parse error or a different canonical form.
_UNKNOWN_NAMES = st.sampled_from(
    ["url", "protocolVersion", "preferredTransport", "xVendor", "Name"]
)
_STRINGS = st.just("") | json_text


def _value(spec: CardField) -> st.SearchStrategy[Any]:
    kind = spec.kind
    if kind is FieldKind.STRING:
        return _STRINGS
    if kind in (FieldKind.BOOL, FieldKind.IMPLICIT_BOOL):
        return st.booleans()
    if kind is FieldKind.STRUCT:
        return st.dictionaries(json_text, json_values, max_size=3)
    if kind is FieldKind.STRINGS:
        return st.lists(_STRINGS, max_size=3)
    if kind is FieldKind.STRING_MAP:
        return st.dictionaries(json_text, _STRINGS, max_size=2)
    assert spec.message is not None
    inner = st.deferred(lambda: _message(spec.message or ""))
    if kind is FieldKind.MESSAGE:
        return inner
    if kind is FieldKind.MESSAGES:
        return st.lists(inner, max_size=2)
    return st.dictionaries(json_text, inner, max_size=2)


@st.composite
def _message(draw: st.DrawFn, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    oneofs: set[str] = set()
    for field, spec in AGENT_CARD_SCHEMA[name].items():
        if field == "signatures" or not draw(st.booleans()):
            continue
        if spec.oneof is not None:
            if spec.oneof in oneofs:
                continue
            oneofs.add(spec.oneof)
        member = _proto_name(field) if draw(st.integers(0, 7)) == 0 else field
        out[member] = draw(st.none() | _value(spec))
    if name == "AgentCard" and draw(st.booleans()):
        out[draw(_UNKNOWN_NAMES)] = draw(json_values)
    return out


@DETERMINISTIC
@given(_message("AgentCard"))
def test_signing_input_equals_the_sdk_canonical_form(card: dict[str, Any]) -> None:
    assert card_signing_input(card) == sdk_canonical(card)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("alg", ["ES256", "Ed25519"])
def test_round_trip(alg: str, es_key: PrivateKey, ed_key: PrivateKey, pinned: KeySet) -> None:
    key = es_key if alg == "ES256" else ed_key
    card = upstream_card()
    signed = sign_card(card, key)
    assert card == upstream_card()  # input untouched
    assert len(signed["signatures"]) == 1
    verified = verify_card(parse_card(wire(signed)), pinned)
    assert isinstance(verified, VerifiedCard)
    assert verified.kid == key.kid
    assert verified.key == key.public
    assert verified.header == {"alg": alg, "kid": key.kid, "typ": CARD_JWS_TYP}
    assert verified.card == card


def test_sdk_signed_card_verifies_here(es_key: PrivateKey, pinned: KeySet) -> None:
    signed = sdk_sign(upstream_card(), es_key)
    verified = verify_card(parse_card(wire(signed)), pinned)
    assert verified.kid == es_key.kid
    assert card_signing_input(verified.card) == card_signing_input(upstream_card())


def test_our_card_verifies_with_the_sdk(es_key: PrivateKey) -> None:
    signed = sign_card(upstream_card(), es_key)
    sdk_verify(json.loads(wire(signed)), es_key.public)
    signed["description"] = "tampered"
    with pytest.raises(InvalidSignaturesError):
        sdk_verify(signed, es_key.public)


def test_sdk_ed25519_signatures_use_eddsa_which_is_refused(
    ed_key: PrivateKey, pinned: KeySet
) -> None:
    """PyJWT signs Ed25519 as the deprecated ``EdDSA`` (RFC 9864); keys/jose pins
    ``Ed25519``, so such a card is an alg mismatch. Pin ES256 keys for SDK peers."""
    header = {"alg": "EdDSA", "kid": ed_key.kid, "typ": "JOSE"}
    signed = sdk_sign(upstream_card(), ed_key, header=header)
    with raises_exactly(AlgorithmMismatch):
        verify_card(signed, pinned)


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c.__setitem__("description", "Exfiltrates what it is told"),
        lambda c: c["supportedInterfaces"][0].__setitem__("url", "https://evil.example/a2a"),
        lambda c: c["skills"][0]["tags"].append("admin"),
        lambda c: c["capabilities"].__setitem__("pushNotifications", True),
        lambda c: c["capabilities"]["extensions"][0].__setitem__("required", True),
        lambda c: c["capabilities"]["extensions"][0]["params"].__setitem__("level", 3),
        lambda c: c["securitySchemes"].pop("oidc"),
        lambda c: c.__setitem__("iconUrl", "https://evil.example/i.png"),
    ],
)
def test_a_tampered_field_fails(
    tamper: Callable[[dict[str, Any]], None], es_key: PrivateKey, pinned: KeySet
) -> None:
    signed = sign_card(upstream_card(), es_key)
    tamper(signed)
    with raises_exactly(BadSignature):
        verify_card(signed, pinned)


def test_members_added_after_signing_are_not_handed_back(
    es_key: PrivateKey, pinned: KeySet
) -> None:
    signed = {**sign_card(upstream_card(), es_key), "url": "https://bypass.example", "tenant": "x"}
    verified = verify_card(signed, pinned)
    assert "url" not in verified.card and "tenant" not in verified.card


def test_unpinned_key_fails(unpinned_key: PrivateKey, pinned: KeySet) -> None:
    with raises_exactly(UnknownKeyId):
        verify_card(sign_card(upstream_card(), unpinned_key), pinned)
    with raises_exactly(UnknownKeyId):
        verify_card(sdk_sign(upstream_card(), unpinned_key), pinned)


@pytest.fixture
def no_egress(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records any attempt to open a connection or resolve a name."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"jku": "https://attacker.example/jwks.json"}, UntrustedKey),
        ({"x5u": "https://attacker.example/cert.pem"}, UntrustedKey),
        ({"jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}}, UntrustedKey),
        ({"x5c": ["MIIB"]}, UntrustedKey),
        ({"crit": ["exp"], "exp": 1}, UnsupportedCrit),
        ({"b64": False}, UnsupportedCrit),
        ({"nonce": "x"}, UnsupportedHeader),
    ],
)
def test_key_sources_and_extensions_in_the_header_fail_without_fetching(
    extra: dict[str, Any],
    error: type[BatonError],
    es_key: PrivateKey,
    pinned: KeySet,
    no_egress: list[object],
) -> None:
    """Signed by a *pinned* key: only the header makes it fail (threat J07)."""
    header = {"alg": "ES256", "kid": es_key.kid, "typ": "JOSE", **extra}
    card = upstream_card()
    signed = {**card, "signatures": [forge_signature(header, card, es_key.sign)]}
    with raises_exactly(error):
        verify_card(signed, pinned)
    assert no_egress == []


def test_sdk_jku_signature_fails_without_fetching(
    es_key: PrivateKey, pinned: KeySet, no_egress: list[object]
) -> None:
    header = {"alg": "ES256", "kid": es_key.kid, "typ": "JOSE", "jku": "https://attacker.example/j"}
    with raises_exactly(UntrustedKey):
        verify_card(sdk_sign(upstream_card(), es_key, header=header), pinned)
    assert no_egress == []


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ({"alg": "ES256", "typ": "JWT"}, WrongType),
        ({"alg": "ES256"}, WrongType),
        ({"alg": "Ed25519", "typ": "JOSE"}, AlgorithmMismatch),  # the key is pinned to ES256
        ({"alg": "none", "typ": "JOSE"}, AlgorithmNotAllowed),
        ({"alg": "HS256", "typ": "JOSE"}, AlgorithmNotAllowed),
        ({"typ": "JOSE"}, AlgorithmNotAllowed),
    ],
)
def test_algorithm_and_type_come_from_the_pin(
    header: dict[str, Any], error: type[BatonError], es_key: PrivateKey, pinned: KeySet
) -> None:
    card = upstream_card()
    forged = forge_signature({**header, "kid": es_key.kid}, card, es_key.sign)
    with raises_exactly(error):
        verify_card({**card, "signatures": [forged]}, pinned)


def test_missing_kid_is_unknown(es_key: PrivateKey, pinned: KeySet) -> None:
    card = upstream_card()
    forged = forge_signature({"alg": "ES256", "typ": "JOSE"}, card, es_key.sign)
    with raises_exactly(UnknownKeyId):
        verify_card({**card, "signatures": [forged]}, pinned)


def test_unprotected_header_with_content_fails(es_key: PrivateKey, pinned: KeySet) -> None:
    signed = sdk_sign(upstream_card(), es_key, unprotected={"kid": "other"})
    assert signed["signatures"][0]["header"] == {"kid": "other"}
    with raises_exactly(UnsupportedHeader):
        verify_card(signed, pinned)
    signed["signatures"][0]["header"] = {}
    assert verify_card(signed, pinned).kid == es_key.kid


def test_one_good_signature_among_others_suffices(
    es_key: PrivateKey, unpinned_key: PrivateKey, pinned: KeySet
) -> None:
    card = upstream_card()
    jku = forge_signature(
        {"alg": "ES256", "kid": unpinned_key.kid, "typ": "JOSE", "jku": "https://a.example/j"},
        card,
        unpinned_key.sign,
    )
    signed = sign_card(sign_card({**card, "signatures": [jku]}, unpinned_key), es_key)
    assert len(signed["signatures"]) == 3
    assert verify_card(signed, pinned).kid == es_key.kid


def test_the_most_telling_failure_is_raised(
    es_key: PrivateKey, unpinned_key: PrivateKey, pinned: KeySet
) -> None:
    signed = sign_card(sign_card(upstream_card(), unpinned_key), es_key)
    signed["name"] = "Other"
    with raises_exactly(BadSignature) as info:
        verify_card(signed, pinned)
    assert "unknown_kid" in info.value.detail and "bad_signature" in info.value.detail


def test_unsigned_card_is_signature_missing(pinned: KeySet) -> None:
    with raises_exactly(SignatureMissing):
        verify_card(upstream_card(), pinned)
    with raises_exactly(SignatureMissing):
        verify_card({**upstream_card(), "signatures": []}, pinned)


@pytest.mark.parametrize(
    "signatures",
    [
        "abc",
        {"protected": "a", "signature": "b"},
        ["not an object"],
        [{"protected": "a"}],
        [{"protected": 1, "signature": "b"}],
        [{"protected": "a", "signature": "b", "payload": "c"}],
        [{"protected": "a.b", "signature": "c"}],
        [{"protected": "eyJ", "signature": "c"}],
        [{"protected": b64url_encode(b"[]"), "signature": "c"}],
    ],
)
def test_malformed_signatures(signatures: object, pinned: KeySet) -> None:
    with raises_exactly(MalformedJws):
        verify_card({**upstream_card(), "signatures": signatures}, pinned)


def test_too_many_signatures(es_key: PrivateKey, pinned: KeySet) -> None:
    signature = sign_card(upstream_card(), es_key)["signatures"][0]
    with raises_exactly(MalformedJws):
        verify_card({**upstream_card(), "signatures": [signature] * 9}, pinned)


def test_flipped_signature_bit_fails(es_key: PrivateKey, pinned: KeySet) -> None:
    signed = sign_card(upstream_card(), es_key)
    raw = bytearray(b64url_decode(signed["signatures"][0]["signature"]))
    raw[5] ^= 1
    signed["signatures"][0]["signature"] = b64url_encode(bytes(raw))
    with raises_exactly(BadSignature):
        verify_card(signed, pinned)


@DETERMINISTIC
@given(signatures=st.lists(json_values, min_size=1, max_size=3))
def test_arbitrary_signature_members_only_raise_baton_errors(
    signatures: list[Any], pinned: KeySet
) -> None:
    with pytest.raises(BatonError):
        verify_card({**upstream_card(), "signatures": signatures}, pinned)


# --------------------------------------------------------------------------- signing


def test_sign_appends_and_replaces_nothing(es_key: PrivateKey, ed_key: PrivateKey) -> None:
    once = sign_card(upstream_card(), es_key)
    twice = sign_card(once, ed_key)
    assert twice["signatures"][0] == once["signatures"][0]
    assert len(twice["signatures"]) == 2
    for key in (es_key, ed_key):
        assert verify_card(twice, KeySet([key.public])).kid == key.kid


@pytest.mark.parametrize(
    "stray",
    [
        {"url": "https://echo.internal"},
        {"default_input_modes": ["text/plain"]},
    ],
)
def test_sign_refuses_members_no_signature_covers(
    stray: dict[str, Any], es_key: PrivateKey
) -> None:
    card = upstream_card()
    card.pop("defaultInputModes")
    with raises_exactly(InvalidArtifact):
        sign_card({**card, **stray}, es_key)


def test_sign_refuses_a_nested_stray(es_key: PrivateKey) -> None:
    card = upstream_card()
    card["skills"][0]["inputSchema"] = {}
    with raises_exactly(InvalidArtifact):
        sign_card(card, es_key)


def test_sign_refuses_an_encryption_key() -> None:
    with pytest.raises(BatonError):
        sign_card(upstream_card(), PrivateKey.generate("ECDH-ES+A256KW"))


# --------------------------------------------------------------------------- rewriting


def _rewrite(card: dict[str, Any]) -> dict[str, Any]:
    return rewrite_card(
        card,
        interfaces=GATEWAY_INTERFACES,
        security_schemes=GATEWAY_SCHEMES,
        security_requirements=GATEWAY_REQUIREMENTS,
    )


def test_rewrite_replaces_gateway_members_and_keeps_the_rest(es_key: PrivateKey) -> None:
    card = sdk_sign(upstream_card(), es_key)
    before = copy.deepcopy(card)
    rewritten = _rewrite(card)
    assert card == before  # input untouched
    assert rewritten["supportedInterfaces"] == GATEWAY_INTERFACES
    assert rewritten["securitySchemes"] == GATEWAY_SCHEMES
    assert rewritten["securityRequirements"] == GATEWAY_REQUIREMENTS
    assert "signatures" not in rewritten
    replaced = {
        "supportedInterfaces",
        "securitySchemes",
        "securityRequirements",
        "signatures",
        "skills",
    }
    for name, value in card.items():
        if name not in replaced:
            assert rewritten[name] == value, name
    skill = dict(card["skills"][0])
    del skill["securityRequirements"]  # names the upstream's schemes
    assert rewritten["skills"] == [skill]


def test_rewrite_drops_members_outside_the_schema_and_renames_proto_names() -> None:
    card = upstream_card()
    card["url"] = "https://echo.internal:9000/a2a"  # a v0.3 leftover would bypass the gateway
    card["default_output_modes"] = card.pop("defaultOutputModes")
    card["provider"]["phone"] = "+1"
    rewritten = _rewrite(card)
    assert "url" not in rewritten
    assert rewritten["defaultOutputModes"] == upstream_card()["defaultOutputModes"]
    assert rewritten["provider"] == upstream_card()["provider"]


def test_rewritten_card_signature_verifies_here_and_with_the_sdk(
    es_key: PrivateKey, unpinned_key: PrivateKey, pinned: KeySet
) -> None:
    upstream = parse_card(wire(sdk_sign(upstream_card(), unpinned_key)))
    served = sign_card(_rewrite(upstream), es_key)
    assert [s["protected"] for s in served["signatures"]] != [
        s["protected"] for s in upstream["signatures"]
    ]
    verified = verify_card(parse_card(wire(served)), pinned)
    assert verified.card["supportedInterfaces"] == GATEWAY_INTERFACES
    sdk_verify(json.loads(wire(served)), es_key.public)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"interfaces": []}, "empty"),
        ({"interfaces": [{"protocolBinding": "JSONRPC"}]}, "no url"),
        ({"interfaces": [{"url": "https://gw/a2a", "protocolBinding": ""}]}, "no protocolBinding"),
        (
            {"interfaces": [{"url": "https://gw", "protocolBinding": "JSONRPC", "x": "1"}]},
            "outside",
        ),
        ({"security_schemes": {"mtls": {"mtlsSecurityScheme": {"x": "1"}}}}, "outside"),
        ({"security_schemes": {"mtls": {"mtls": {}}}}, "outside"),
        ({"security_requirements": [{"schemes": {"oidc": {"list": []}}}]}, "undeclared"),
        ({"security_requirements": [{"schemes": {"mtls": {"list": [1]}}}]}, "expected a string"),
    ],
)
def test_rewrite_refuses_bad_replacements(changes: dict[str, Any], reason: str) -> None:
    arguments: dict[str, Any] = {
        "interfaces": GATEWAY_INTERFACES,
        "security_schemes": GATEWAY_SCHEMES,
        "security_requirements": GATEWAY_REQUIREMENTS,
        **changes,
    }
    with raises_exactly(InvalidArtifact) as info:
        rewrite_card(upstream_card(), **arguments)
    assert reason in info.value.detail


# --------------------------------------------------------------------------- parsing


def test_parse_returns_the_card_unchanged() -> None:
    card = {**upstream_card(), "vendorExtra": [1, 2]}
    assert parse_card(wire(card)) == card


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", MalformedInput),
        (b"[]", MalformedInput),
        (b'{"name": "a", "name": "b"}', MalformedInput),
        (b'{"name": NaN}', MalformedInput),
        (b"\xef\xbb\xbf{}", MalformedInput),
        (b'{"a":' * 40 + b"1" + b"}" * 40, TooDeep),
        (b" " * (256 * 1024 + 1), PayloadTooLarge),
    ],
)
def test_parse_refuses_bad_json(body: bytes, error: type[BatonError]) -> None:
    with raises_exactly(error):
        parse_card(body)


def test_parse_cap_is_configurable() -> None:
    body = wire(upstream_card())
    with raises_exactly(PayloadTooLarge):
        parse_card(body, max_bytes=len(body) - 1)
    assert parse_card(body, max_bytes=len(body))["name"] == "Echo"


def _without(name: str) -> dict[str, Any]:
    card = upstream_card()
    del card[name]
    return card


@pytest.mark.parametrize(
    ("card", "reason"),
    [
        (_without("name"), "required"),
        (_without("skills"), "required"),
        (_without("capabilities"), "required"),
        ({**upstream_card(), "capabilities": None}, "required"),
        ({**upstream_card(), "name": ""}, "empty"),
        ({**upstream_card(), "version": ""}, "empty"),
        ({**upstream_card(), "supportedInterfaces": []}, "empty"),
        ({**upstream_card(), "supportedInterfaces": [{"url": "https://x"}]}, "protocolBinding"),
        ({**upstream_card(), "name": 7}, "expected a string"),
        ({**upstream_card(), "skills": {}}, "expected an array"),
        ({**upstream_card(), "skills": [None]}, "null element"),
        ({**upstream_card(), "provider": "Example"}, "expected an object"),
        ({**upstream_card(), "capabilities": {"streaming": "yes"}}, "true or false"),
        ({**upstream_card(), "securitySchemes": {"a": None}}, "null map value"),
        ({**upstream_card(), "supported_interfaces": []}, "two names"),
        (
            {
                **upstream_card(),
                "securitySchemes": {
                    "a": {"mtlsSecurityScheme": {}, "apiKeySecurityScheme": {"name": "k"}}
                },
            },
            "oneof",
        ),
        (
            {**upstream_card(), "capabilities": {"extensions": [{"params": [1]}]}},
            "expected an object",
        ),
    ],
)
def test_parse_refuses_cards_outside_the_schema(card: dict[str, Any], reason: str) -> None:
    with raises_exactly(InvalidArtifact) as info:
        parse_card(wire(card))
    assert reason in info.value.detail


def test_null_oneof_member_does_not_count() -> None:
    card = upstream_card()
    card["securitySchemes"]["m"] = {
        "mtlsSecurityScheme": None,
        "apiKeySecurityScheme": {"name": "k"},
    }
    assert card_signing_input(parse_card(wire(card))) == sdk_canonical(card)


@DETERMINISTIC
@given(st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()))
def test_parse_of_arbitrary_bytes_returns_a_card_or_a_baton_error(body: bytes) -> None:
    try:
        card = parse_card(body)
    except BatonError as exc:
        assert exc.http_status in (400, 413)
    else:
        assert isinstance(card, dict)


@DETERMINISTIC
@given(_message("AgentCard"))
def test_parse_accepts_generated_cards_with_the_required_members(card: dict[str, Any]) -> None:
    """Generated cards parse, or fail only on the required-member rules."""
    try:
        parsed = parse_card(wire(card))
    except InvalidArtifact as exc:
        assert any(word in exc.detail for word in ("required", "empty", "has no"))
    else:
        assert parsed == json.loads(wire(card))
