"""A2A Agent Cards: strict parsing, gateway rewriting, signing and verification.

The gateway serves every upstream agent's Agent Card (A2A v1.0 §8) to callers,
rewritten so that ``supportedInterfaces[].url`` points at the gateway and
``securitySchemes``/``securityRequirements`` describe the gateway's own
authentication, then re-signed with the gateway key: rewriting invalidates any
upstream signature (research/protocols.md, "Agent Card signatures").

Signatures (§8.4) are JWS (RFC 7515) with a *detached* payload (RFC 7515
Appendix F): ``signatures[] = {protected, signature, header?}``, where the
payload is the RFC 8785 (JCS) form of the card with ``signatures`` removed and
default-valued fields removed following proto3 field presence (§8.4.1). This
module computes that payload exactly as the reference SDK does (a2a-sdk
``a2a.utils.signing._canonicalize_agent_card``: proto ``ParseDict`` ignoring
unknown members, ``MessageToDict``, then removal of every empty string, empty
list, empty object and null, recursively), so SDK signatures verify here and
ours verify with the SDK (both checked by tests, the first one by a
differential property test against the SDK).

Invariants:

* The signing input covers exactly the members of the v1.0 ``AgentCard``
  message (:data:`AGENT_CARD_SCHEMA`); unknown members are not part of the
  proto message, so no conforming verifier covers them. Hence
  :func:`verify_card` hands back only the schema members
  (:attr:`VerifiedCard.card`), :func:`rewrite_card` drops unknown members, and
  :func:`sign_card` refuses a card that carries any: nothing unsigned ever
  leaves the gateway inside a signed card.
* Keys come only from the pinned :class:`~keys.keyset.KeySet`; the algorithm is
  the pinned key's, never the header's; ``jku``/``x5u``/``x5c``/``jwk`` never
  create trust and are never fetched; ``crit`` is refused; an unprotected
  ``header`` with content is refused (keys/jose.py enforces the header rules).
* ``typ`` must be ``"JOSE"`` (§8.4: the protected header MUST carry ``typ``,
  which SHOULD be ``"JOSE"``; Baton pins the SHOULD).
* At least one signature must verify under a pinned key (§8.4.2: clients
  SHOULD verify at least one); the others are ignored, not trusted.

Spec quirk worth knowing: because empty objects are removed before signing, a
scheme with no members (``{"mtlsSecurityScheme": {}}``) and a requirement with
no scopes (``{"schemes": {"mtls": {}}}``) are *not covered* by any §8.4
signature. Give every scheme a ``description`` so that it is.

Interoperability: the SDK (PyJWT) knows Ed25519 only as the deprecated
``EdDSA`` (RFC 9864), which keys/jose refuses for keys pinned to ``Ed25519``.
Cards for SDK peers are therefore signed, and SDK-signed cards pinned, with
ES256 keys.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from keys import strictjson
from keys.b64 import b64url_encode
from keys.errors import KeysError
from keys.jose import MAX_SIGNATURES, VerifiedJws, sign_compact, verify_compact
from keys.keyset import KeySet
from keys.material import PrivateKey, PublicKey
from protocol.canonical import canonical_json
from protocol.errors import (
    AlgorithmMismatch,
    BadSignature,
    BatonError,
    InvalidArtifact,
    MalformedJws,
    SignatureMissing,
    UnsupportedHeader,
    WrongType,
    from_keys_error,
    translating,
)

__all__ = [
    "AGENT_CARD_SCHEMA",
    "CARD_JWS_TYP",
    "DEFAULT_MAX_CARD_BYTES",
    "CardField",
    "FieldKind",
    "VerifiedCard",
    "card_signing_input",
    "parse_card",
    "rewrite_card",
    "sign_card",
    "verify_card",
]

#: ``typ`` of an Agent Card signature's protected header (§8.4).
CARD_JWS_TYP: Final = "JOSE"
DEFAULT_MAX_CARD_BYTES: Final = 256 * 1024
#: Nesting cap for parsing (the card itself is 8 deep; the rest is for
#: ``AgentExtension.params``) and for values built in code (the SDK's own cap).
_MAX_PARSE_DEPTH: Final = 32
_MAX_VALUE_DEPTH: Final = 128
_ROOT: Final = "AgentCard"


class FieldKind(enum.Enum):
    """How a proto3 field of the card appears in ProtoJSON (and what its default is)."""

    STRING = "string"
    BOOL = "optional bool"  # explicit presence: false is kept
    IMPLICIT_BOOL = "bool"  # no presence: false is the default and is not signed
    MESSAGE = "message"
    STRUCT = "google.protobuf.Struct"
    STRINGS = "repeated string"
    MESSAGES = "repeated message"
    STRING_MAP = "map<string, string>"
    MESSAGE_MAP = "map<string, message>"


@dataclass(frozen=True, slots=True)
class CardField:
    """One field of :data:`AGENT_CARD_SCHEMA`: kind, message type, real oneof."""

    kind: FieldKind
    message: str | None = None
    oneof: str | None = None


def _msg(kind: FieldKind, message: str, oneof: str | None = None) -> CardField:
    return CardField(kind, message, oneof)


_S: Final = CardField(FieldKind.STRING)
_STRINGS: Final = CardField(FieldKind.STRINGS)
_SCOPES: Final = CardField(FieldKind.STRING_MAP)
_OPTIONAL_BOOL: Final = CardField(FieldKind.BOOL)

#: The v1.0 ``AgentCard`` message and everything it contains (``a2a.proto``),
#: keyed by message name, then by ProtoJSON (camelCase) field name. A test
#: checks this table against the SDK's descriptors field by field.
AGENT_CARD_SCHEMA: Final[Mapping[str, Mapping[str, CardField]]] = {
    "AgentCard": {
        "name": _S,
        "description": _S,
        "supportedInterfaces": _msg(FieldKind.MESSAGES, "AgentInterface"),
        "provider": _msg(FieldKind.MESSAGE, "AgentProvider"),
        "version": _S,
        "documentationUrl": _S,
        "capabilities": _msg(FieldKind.MESSAGE, "AgentCapabilities"),
        "securitySchemes": _msg(FieldKind.MESSAGE_MAP, "SecurityScheme"),
        "securityRequirements": _msg(FieldKind.MESSAGES, "SecurityRequirement"),
        "defaultInputModes": _STRINGS,
        "defaultOutputModes": _STRINGS,
        "skills": _msg(FieldKind.MESSAGES, "AgentSkill"),
        "signatures": _msg(FieldKind.MESSAGES, "AgentCardSignature"),
        "iconUrl": _S,
    },
    "AgentInterface": {"url": _S, "protocolBinding": _S, "tenant": _S, "protocolVersion": _S},
    "AgentProvider": {"url": _S, "organization": _S},
    "AgentCapabilities": {
        "streaming": _OPTIONAL_BOOL,
        "pushNotifications": _OPTIONAL_BOOL,
        "extensions": _msg(FieldKind.MESSAGES, "AgentExtension"),
        "extendedAgentCard": _OPTIONAL_BOOL,
    },
    "AgentExtension": {
        "uri": _S,
        "description": _S,
        "required": CardField(FieldKind.IMPLICIT_BOOL),
        "params": CardField(FieldKind.STRUCT),
    },
    "SecurityScheme": {
        "apiKeySecurityScheme": _msg(FieldKind.MESSAGE, "APIKeySecurityScheme", "scheme"),
        "httpAuthSecurityScheme": _msg(FieldKind.MESSAGE, "HTTPAuthSecurityScheme", "scheme"),
        "oauth2SecurityScheme": _msg(FieldKind.MESSAGE, "OAuth2SecurityScheme", "scheme"),
        "openIdConnectSecurityScheme": _msg(
            FieldKind.MESSAGE, "OpenIdConnectSecurityScheme", "scheme"
        ),
        "mtlsSecurityScheme": _msg(FieldKind.MESSAGE, "MutualTlsSecurityScheme", "scheme"),
    },
    "APIKeySecurityScheme": {"description": _S, "location": _S, "name": _S},
    "HTTPAuthSecurityScheme": {"description": _S, "scheme": _S, "bearerFormat": _S},
    "OAuth2SecurityScheme": {
        "description": _S,
        "flows": _msg(FieldKind.MESSAGE, "OAuthFlows"),
        "oauth2MetadataUrl": _S,
    },
    "OAuthFlows": {
        "authorizationCode": _msg(FieldKind.MESSAGE, "AuthorizationCodeOAuthFlow", "flow"),
        "clientCredentials": _msg(FieldKind.MESSAGE, "ClientCredentialsOAuthFlow", "flow"),
        "implicit": _msg(FieldKind.MESSAGE, "ImplicitOAuthFlow", "flow"),
        "password": _msg(FieldKind.MESSAGE, "PasswordOAuthFlow", "flow"),
        "deviceCode": _msg(FieldKind.MESSAGE, "DeviceCodeOAuthFlow", "flow"),
    },
    "AuthorizationCodeOAuthFlow": {
        "authorizationUrl": _S,
        "tokenUrl": _S,
        "refreshUrl": _S,
        "scopes": _SCOPES,
        "pkceRequired": CardField(FieldKind.IMPLICIT_BOOL),
    },
    "ClientCredentialsOAuthFlow": {"tokenUrl": _S, "refreshUrl": _S, "scopes": _SCOPES},
    "ImplicitOAuthFlow": {"authorizationUrl": _S, "refreshUrl": _S, "scopes": _SCOPES},
    "PasswordOAuthFlow": {"tokenUrl": _S, "refreshUrl": _S, "scopes": _SCOPES},
    "DeviceCodeOAuthFlow": {
        "deviceAuthorizationUrl": _S,
        "tokenUrl": _S,
        "refreshUrl": _S,
        "scopes": _SCOPES,
    },
    "OpenIdConnectSecurityScheme": {"description": _S, "openIdConnectUrl": _S},
    "MutualTlsSecurityScheme": {"description": _S},
    "SecurityRequirement": {"schemes": _msg(FieldKind.MESSAGE_MAP, "StringList")},
    "StringList": {"list": _STRINGS},
    "AgentSkill": {
        "id": _S,
        "name": _S,
        "description": _S,
        "tags": _STRINGS,
        "examples": _STRINGS,
        "inputModes": _STRINGS,
        "outputModes": _STRINGS,
        "securityRequirements": _msg(FieldKind.MESSAGES, "SecurityRequirement"),
    },
    "AgentCardSignature": {"protected": _S, "signature": _S, "header": CardField(FieldKind.STRUCT)},
}

_CAMEL_HUMP: Final = re.compile(r"([A-Z])")


def _proto_name(json_name: str) -> str:
    """The proto field name ProtoJSON parsers also accept (``supportedInterfaces`` ->
    ``supported_interfaces``)."""
    return _CAMEL_HUMP.sub(lambda match: "_" + match.group(1).lower(), json_name)


#: Accepted member name -> ProtoJSON name, per message (both spellings, as ParseDict).
_NAMES: Final[Mapping[str, Mapping[str, str]]] = {
    message: {
        **{_proto_name(name): name for name in fields},
        **{name: name for name in fields},
    }
    for message, fields in AGENT_CARD_SCHEMA.items()
}

_REQUIRED_CARD_MEMBERS: Final = (
    "name",
    "description",
    "supportedInterfaces",
    "version",
    "capabilities",
    "defaultInputModes",
    "defaultOutputModes",
    "skills",
)
_INTERFACE_REQUIRED: Final = ("url", "protocolBinding")


@dataclass(frozen=True, slots=True)
class VerifiedCard:
    """An Agent Card one of whose signatures verified under a pinned key.

    ``card`` holds exactly the members the signature covers: the v1.0 schema
    members of the card (ProtoJSON names), without ``signatures``. ``key`` is
    the pinned key that verified, ``header`` that signature's protected header.
    """

    card: dict[str, Any]
    key: PublicKey
    header: Mapping[str, Any]

    @property
    def kid(self) -> str:
        return self.key.kid


# --------------------------------------------------------------------------- schema walk


@dataclass(slots=True)
class _Walk:
    """Options of one schema walk. ``strays`` collects paths of members that are
    not in ProtoJSON form (unknown members and proto-name aliases) when not None."""

    drop_defaults: bool
    strays: list[str] | None = None


def _project(value: object, message: str, path: str, walk: _Walk) -> dict[str, Any]:
    """``value`` as a ``message``: schema members only, under their ProtoJSON names,
    type-checked (:class:`InvalidArtifact` otherwise), null members dropped (unset),
    at most one member of each oneof; with ``drop_defaults``, false implicit bools
    dropped too. Always a fresh object: nothing is shared with ``value``."""
    if not isinstance(value, Mapping):
        raise InvalidArtifact(f"{path}: expected an object for {message}")
    fields = AGENT_CARD_SCHEMA[message]
    names = _NAMES[message]
    seen: set[str] = set()
    oneofs: dict[str, str] = {}
    out: dict[str, Any] = {}
    for name, item in value.items():
        json_name = names.get(name)
        if json_name is None or json_name != name:
            if walk.strays is not None:
                walk.strays.append(f"{path}.{name}")
            if json_name is None:
                continue
        if json_name in seen:
            raise InvalidArtifact(f"{path}: {json_name!r} given under two names")
        seen.add(json_name)
        if item is None:
            continue
        spec = fields[json_name]
        if spec.oneof is not None:
            if spec.oneof in oneofs:
                raise InvalidArtifact(
                    f"{path}: oneof {spec.oneof!r} set twice ({oneofs[spec.oneof]}, {json_name})"
                )
            oneofs[spec.oneof] = json_name
        if walk.drop_defaults and spec.kind is FieldKind.IMPLICIT_BOOL and item is False:
            continue  # proto3 default: absent from ProtoJSON, so never signed
        out[json_name] = _field(item, spec, f"{path}.{json_name}", walk)
    return out


def _field(item: object, spec: CardField, path: str, walk: _Walk) -> Any:
    kind = spec.kind
    if kind is FieldKind.STRING:
        return _string(item, path)
    if kind in (FieldKind.BOOL, FieldKind.IMPLICIT_BOOL):
        if not isinstance(item, bool):
            raise InvalidArtifact(f"{path}: expected true or false")
        return item
    if kind is FieldKind.STRUCT:
        if not isinstance(item, Mapping):
            raise InvalidArtifact(f"{path}: expected an object")
        return _copy_json(item, path, 1)
    if kind is FieldKind.STRINGS:
        return [_string(element, f"{path}[]") for element in _array(item, path)]
    if kind is FieldKind.STRING_MAP:
        return {key: _string(value, f"{path}.{key}") for key, value in _object(item, path)}
    message = spec.message
    if message is None:  # pragma: no cover - every message kind in the table names its type
        raise InvalidArtifact(f"{path}: schema names no message type")
    if kind is FieldKind.MESSAGE:
        return _project(item, message, path, walk)
    if kind is FieldKind.MESSAGES:
        return [_project(element, message, f"{path}[]", walk) for element in _array(item, path)]
    return {
        key: _project(value, message, f"{path}.{key}", walk) for key, value in _object(item, path)
    }


def _string(item: object, path: str) -> str:
    if not isinstance(item, str):
        raise InvalidArtifact(f"{path}: expected a string")
    return item


def _array(item: object, path: str) -> Sequence[object]:
    if not isinstance(item, list | tuple):
        raise InvalidArtifact(f"{path}: expected an array")
    if any(element is None for element in item):
        raise InvalidArtifact(f"{path}: null element in an array")
    return item


def _object(item: object, path: str) -> list[tuple[str, object]]:
    if not isinstance(item, Mapping):
        raise InvalidArtifact(f"{path}: expected an object")
    pairs: list[tuple[str, object]] = []
    for key, value in item.items():
        if not isinstance(key, str):
            raise InvalidArtifact(f"{path}: map key is not a string")
        if value is None:
            raise InvalidArtifact(f"{path}.{key}: null map value")
        pairs.append((key, value))
    return pairs


def _copy_json(value: object, path: str, depth: int) -> Any:
    """A fresh copy of a JSON value (``Struct`` content), type-checked, depth-capped."""
    if isinstance(value, Mapping | list | tuple) and depth > _MAX_VALUE_DEPTH:
        raise InvalidArtifact(f"{path}: nesting exceeds {_MAX_VALUE_DEPTH}")
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise InvalidArtifact(f"{path}: object key is not a string")
        return {key: _copy_json(item, path, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_copy_json(item, path, depth + 1) for item in value]
    if value is None or isinstance(value, str | int | float):
        return value
    raise InvalidArtifact(f"{path}: {type(value).__name__} is not a JSON value")


def _clean_empty(value: Any) -> Any:
    """Remove empty strings, empty arrays, empty objects and nulls, recursively
    (children first); ``None`` when nothing is left. Mirrors the SDK's
    ``_clean_empty``, which is what "default-valued fields removed" means on the
    wire today (§8.4.1)."""
    if isinstance(value, dict):
        cleaned = {
            key: item for key, raw in value.items() if (item := _clean_empty(raw)) is not None
        }
        return cleaned or None
    if isinstance(value, list):
        items = [item for raw in value if (item := _clean_empty(raw)) is not None]
        return items or None
    if value == "":
        return None
    return value


# --------------------------------------------------------------------------- public API


def card_signing_input(card: Mapping[str, Any]) -> bytes:
    """The bytes an Agent Card signature covers (§8.4.1): RFC 8785 JCS of the card's
    schema members, without ``signatures``, with default-valued fields removed.

    Raises :class:`InvalidArtifact` when the card does not fit the schema or has no
    JCS form (integers beyond 2**53, non-JSON values).
    """
    unsigned = {name: value for name, value in card.items() if name != "signatures"}
    projected = _project(unsigned, _ROOT, "card", _Walk(drop_defaults=True))
    return canonical_json(_clean_empty(projected))


def sign_card(card: Mapping[str, Any], key: PrivateKey) -> dict[str, Any]:
    """A copy of ``card`` with one new detached JWS appended to ``signatures``
    (existing signatures are kept, none replaced). Protected header:
    ``{alg, kid, typ: "JOSE"}``, ``alg`` and ``kid`` from ``key``.

    Refuses (:class:`InvalidArtifact`) a card with members outside the schema or
    under proto names: no verifier would cover them, yet they would travel inside
    a signed card. Pass the result of :func:`rewrite_card`.
    """
    strays: list[str] = []
    signed = _project(card, _ROOT, "card", _Walk(drop_defaults=False, strays=strays))
    if strays:
        raise InvalidArtifact(f"members a signature would not cover: {sorted(strays)}")
    with translating():
        token = sign_compact(card_signing_input(signed), key, typ=CARD_JWS_TYP)
    protected, _, signature = token.split(".")
    signed["signatures"] = [
        *signed.get("signatures", []),
        {"protected": protected, "signature": signature},
    ]
    return signed


def verify_card(card: Mapping[str, Any], pinned: KeySet) -> VerifiedCard:
    """Verify ``card`` against pinned keys: at least one signature must verify (§8.4.2).

    Raises :class:`SignatureMissing` for an unsigned card, otherwise, when no
    signature verifies, the most telling failure: :class:`BadSignature`,
    :class:`WrongType`, :class:`AlgorithmMismatch` for a signature by a pinned
    key, else the first one's (:class:`UnknownKeyId` for an unpinned key,
    :class:`UntrustedKey` for ``jku``/``x5u``/``jwk``, :class:`UnsupportedCrit`,
    :class:`UnsupportedHeader`, :class:`MalformedJws`, ...). The detail lists
    every signature's outcome. Nothing is ever fetched.
    """
    signatures = card.get("signatures")
    if signatures is None or (isinstance(signatures, list | tuple) and not signatures):
        raise SignatureMissing("agent card carries no signatures")
    if not isinstance(signatures, list | tuple):
        raise MalformedJws("agent card 'signatures' is not an array")
    if len(signatures) > MAX_SIGNATURES:
        raise MalformedJws(f"agent card carries more than {MAX_SIGNATURES} signatures")
    payload_b64 = b64url_encode(card_signing_input(card))
    failures: list[BatonError] = []
    for member in signatures:
        try:
            verified = _verify_signature(member, payload_b64, pinned)
        except BatonError as exc:
            failures.append(exc)
            continue
        unsigned = {name: value for name, value in card.items() if name != "signatures"}
        view = _project(unsigned, _ROOT, "card", _Walk(drop_defaults=False))
        return VerifiedCard(card=view, key=verified.key, header=verified.header)
    raise _most_telling(failures)


_TELLING: Final = (BadSignature, WrongType, AlgorithmMismatch)


def _most_telling(failures: Sequence[BatonError]) -> BatonError:
    summary = ", ".join(f"#{index}: {exc.diagnostics()}" for index, exc in enumerate(failures))
    chosen = next(
        (exc for kind in _TELLING for exc in failures if isinstance(exc, kind)), failures[0]
    )
    return type(chosen)(f"no agent card signature verified ({summary})")


def _verify_signature(member: object, payload_b64: str, pinned: KeySet) -> VerifiedJws:
    """One ``AgentCardSignature``: rebuild the compact JWS around the detached
    payload (RFC 7515 Appendix F) and verify it with keys/jose's rules."""
    if not isinstance(member, Mapping):
        raise MalformedJws("signature is not an object")
    if not set(member) <= {"protected", "signature", "header"}:
        raise MalformedJws(f"signature members not allowed: {sorted(set(member))}")
    header = member.get("header")
    if header is not None and header != {}:
        raise UnsupportedHeader("unprotected JWS header present")
    protected, signature = member.get("protected"), member.get("signature")
    if not isinstance(protected, str) or not isinstance(signature, str):
        raise MalformedJws("'protected' and 'signature' must be strings")
    token = f"{protected}.{payload_b64}.{signature}"
    with translating():
        return verify_compact(token, pinned, typ=CARD_JWS_TYP, max_bytes=len(token))


def rewrite_card(
    card: Mapping[str, Any],
    *,
    interfaces: Sequence[Mapping[str, str]],
    security_schemes: Mapping[str, Any],
    security_requirements: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The card the gateway serves for an upstream: ``supportedInterfaces``,
    ``securitySchemes`` and ``securityRequirements`` replaced, upstream
    ``signatures`` dropped, every other schema member kept as it was.

    Also dropped, because they describe the upstream and no signature could cover
    them: members outside the v1.0 schema (a stray v0.3 ``url`` would route
    callers around the gateway) and each skill's own ``securityRequirements``
    (they name the upstream's schemes; the gateway's policy governs skills).
    Proto-name members (``supported_interfaces``) come out under ProtoJSON names.

    Raises :class:`InvalidArtifact` when a replacement does not fit the schema,
    ``interfaces`` is empty or an interface lacks ``url``/``protocolBinding``, or a
    requirement names a scheme that ``security_schemes`` does not declare.
    """
    base = _project(card, _ROOT, "card", _Walk(drop_defaults=False))
    base.pop("signatures", None)
    for skill in base.get("skills", []):
        skill.pop("securityRequirements", None)
    base["supportedInterfaces"] = list(interfaces)
    base["securitySchemes"] = dict(security_schemes)
    base["securityRequirements"] = list(security_requirements)
    strays: list[str] = []
    rewritten = _project(base, _ROOT, "card", _Walk(drop_defaults=False, strays=strays))
    if strays:
        raise InvalidArtifact(f"replacement members outside the schema: {sorted(strays)}")
    _check_interfaces(rewritten["supportedInterfaces"])
    _check_requirements(rewritten["securityRequirements"], rewritten["securitySchemes"])
    return rewritten


def _check_interfaces(interfaces: Sequence[Mapping[str, Any]]) -> None:
    if not interfaces:
        raise InvalidArtifact("supportedInterfaces is empty")
    for index, interface in enumerate(interfaces):
        for name in _INTERFACE_REQUIRED:
            if not interface.get(name):
                raise InvalidArtifact(f"supportedInterfaces[{index}] has no {name}")


def _check_requirements(
    requirements: Sequence[Mapping[str, Any]], schemes: Mapping[str, Any]
) -> None:
    for requirement in requirements:
        undeclared = set(requirement.get("schemes", {})) - set(schemes)
        if undeclared:
            raise InvalidArtifact(f"security requirement names undeclared {sorted(undeclared)}")


def parse_card(body: bytes, *, max_bytes: int = DEFAULT_MAX_CARD_BYTES) -> dict[str, Any]:
    """Parse an Agent Card fetched from an upstream, strictly.

    Size and depth are capped before and while parsing; duplicate members, NaN
    and lone surrogates are refused (keys/strictjson.py): :class:`PayloadTooLarge`,
    :class:`TooDeep` or :class:`MalformedInput`. The value must then fit the v1.0
    schema and carry the §8 required members, with a non-empty ``name``,
    ``version`` and ``supportedInterfaces`` whose entries have ``url`` and
    ``protocolBinding``: :class:`InvalidArtifact` otherwise. Returns the parsed
    object unchanged (unknown members included; :func:`verify_card` and
    :func:`rewrite_card` drop them).
    """
    try:
        card = strictjson.loads_object(body, max_bytes=max_bytes, max_depth=_MAX_PARSE_DEPTH)
    except KeysError as exc:
        raise from_keys_error(exc) from exc
    view = _project(card, _ROOT, "card", _Walk(drop_defaults=False))
    missing = [name for name in _REQUIRED_CARD_MEMBERS if name not in view]
    if missing:
        raise InvalidArtifact(f"agent card lacks required members {missing}")
    for name in ("name", "version"):
        if not view[name]:
            raise InvalidArtifact(f"agent card {name} is empty")
    _check_interfaces(view["supportedInterfaces"])
    return card
