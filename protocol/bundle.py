"""Handoff bundles: the verified conversation, packaged for a person.

A bundle holds the (masked) handoff request, the conversation's transcript
entries, the recorded bodies, what each agent saw, and an integrity block.
It is immutable; mutable workflow state (claims, status) lives in signed
lifecycle events (``protocol/lifecycle.py``) that refer to its ``version``.

Sealing (:func:`seal_bundle`) is sign-then-encrypt:

1. ``payload = JCS(bundle)``; ``bundle_digest = sha256(payload)`` is what
   decisions bind to;
2. compact JWS by the gateway, ``typ`` ``baton-handoff+jws``: the type is
   inside the signed header, so a bundle cannot be passed off as another
   artifact (the DSSE lesson of CVE-2022-35929);
3. JWE to every operator key of the queue (``baton-handoff+jwe``).

The gateway stores and routes only the JWE. PII originals travel in a
separate :class:`~protocol.pii.RevealSet` JWE.

Verification (:func:`verify_bundle_jws`, offline, public keys only) checks the
signature and type, then :func:`verify_integrity`: the transcript chain links
and ends at the signed head (H02-H04), the content digest, every recorded body
against its entry, the agent views against the chain, and that every masked
path shows its token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import Field, model_validator

from keys import strictjson
from keys.b64 import b64url_decode, b64url_encode
from keys.errors import KeysError
from keys.jose import decrypt, encrypt_general, recipient_key, sign_compact, verify_compact
from keys.keyset import KeySet, PrivateKeySet
from keys.material import PrivateKey, PublicKey
from protocol.canonical import canonical_digest, digest
from protocol.chain import GENESIS, ChainHead, verify_links
from protocol.errors import (
    BindingMismatch,
    DigestInvalid,
    InvalidArtifact,
    NotParticipant,
    translating,
)
from protocol.handoff import HandoffRequest
from protocol.model import BatonModel, Digest, Identity, JsonData, Name, ShortText
from protocol.pii import MaskedField, RevealSet, mask, resolve
from protocol.transcript import TranscriptEntry

__all__ = [
    "BUNDLE_JWE_TYP",
    "BUNDLE_JWS_TYP",
    "REVEAL_JWE_TYP",
    "AgentView",
    "BuiltBundle",
    "Correlation",
    "HandoffBundle",
    "Integrity",
    "OpenedBundle",
    "RecordedBody",
    "SealedBundle",
    "agent_views",
    "build_bundle",
    "open_bundle",
    "open_reveals",
    "participants",
    "seal_bundle",
    "verify_bundle_jws",
    "verify_integrity",
]

BUNDLE_JWS_TYP: Final = "baton-handoff+jws"
BUNDLE_JWE_TYP: Final = "baton-handoff+jwe"
REVEAL_JWE_TYP: Final = "baton-reveal+jwe"
MAX_BUNDLE_BYTES: Final = 8 << 20
MAX_ENTRIES: Final = 10_000


class AgentView(BatonModel):
    """What one agent saw: every entry it sent or received up to ``saw_through_seq``,
    whose hash is ``head`` (so the view is bound to the chain)."""

    agent: Identity
    saw_through_seq: int = Field(ge=0)
    head: Digest


class RecordedBody(BatonModel):
    """A message body as recorded. JSON bodies are carried parsed (``json``),
    others as exact bytes (``raw``, base64url). ``json_digest`` is the digest of
    the *unmasked* parsed JSON, so a fully revealed body can be checked; a raw
    body is checked against its entry's ``body_digest`` directly."""

    seq: int = Field(ge=0)
    media_type: ShortText
    json_: JsonData = Field(default=None, alias="json")
    json_digest: Digest | None = None
    raw: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> RecordedBody:
        if (self.raw is None) == (self.json_digest is None):
            raise ValueError("a body is either raw or JSON (with json_digest)")
        return self


class Correlation(BatonModel):
    """Join keys to the systems around the handoff."""

    trace_id: ShortText | None = None
    a2a_context_id: ShortText | None = None
    a2a_task_id: ShortText | None = None
    mcp_session_id: ShortText | None = None
    dedup_group: ShortText | None = None


class Integrity(BatonModel):
    """``content_digest`` covers the bundle without this block."""

    canonicalization: Literal["RFC8785"] = "RFC8785"
    transcript_seq: int = Field(ge=-1)
    transcript_head: Digest
    content_digest: Digest


class HandoffBundle(BatonModel):
    """The immutable handoff bundle (schema ``baton.handoff-bundle/v1``)."""

    schema_: Literal["baton.handoff-bundle/v1"] = Field(
        default="baton.handoff-bundle/v1", alias="schema"
    )
    bundle_id: str = Field(pattern=r"^hb_[A-Za-z0-9_-]{16,64}$")
    version: int = Field(ge=1)
    created_at: int = Field(ge=0)
    ack_by: int | None = None
    resolve_by: int
    queue: Name
    conversation: ShortText
    origin: Identity
    gateway: Identity
    request: HandoffRequest
    correlation: Correlation = Correlation()
    transcript: tuple[TranscriptEntry, ...] = Field(max_length=MAX_ENTRIES)
    bodies: tuple[RecordedBody, ...] = Field(default=(), max_length=MAX_ENTRIES)
    agent_views: tuple[AgentView, ...] = ()
    masked: tuple[MaskedField, ...] = ()
    integrity: Integrity

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.integrity.transcript_seq, self.integrity.transcript_head)


def participants(transcript: Sequence[TranscriptEntry]) -> frozenset[str]:
    """Every identity that sent or received an entry."""
    return frozenset(e.sender for e in transcript) | frozenset(e.to for e in transcript)


def agent_views(transcript: Sequence[TranscriptEntry]) -> tuple[AgentView, ...]:
    """For each participant, the last entry it sent or received (sorted by identity)."""
    last: dict[str, TranscriptEntry] = {}
    for entry in transcript:
        last[entry.sender] = entry
        last[entry.to] = entry
    return tuple(
        AgentView(agent=agent, saw_through_seq=entry.seq, head=entry.hash)
        for agent, entry in sorted(last.items())
    )


def _record_body(entry: TranscriptEntry, media_type: str, body: bytes) -> dict[str, Any]:
    if entry.body_digest != digest(body):
        raise DigestInvalid(f"body of entry {entry.seq} does not match its digest")
    record: dict[str, Any] = {"seq": entry.seq, "media_type": media_type}
    if media_type.split(";", maxsplit=1)[0].strip().lower().endswith("json"):
        try:
            parsed = strictjson.loads(body, max_bytes=MAX_BUNDLE_BYTES)
            return {**record, "json_digest": canonical_digest(parsed), "json": parsed}
        except (KeysError, InvalidArtifact):
            # Not JSON after all, or JSON that RFC 8785 cannot represent
            # (integers beyond 2**53): keep the exact bytes instead.
            pass
    record["raw"] = b64url_encode(body)
    return record


def _content_digest(document: Mapping[str, Any]) -> str:
    return canonical_digest({k: v for k, v in document.items() if k != "integrity"})


@dataclass(frozen=True, slots=True)
class BuiltBundle:
    bundle: HandoffBundle
    reveals: RevealSet


def build_bundle(
    *,
    bundle_id: str,
    request: HandoffRequest,
    queue: str,
    conversation: str,
    origin: str,
    gateway: str,
    transcript: Sequence[TranscriptEntry],
    bodies: Mapping[int, tuple[str, bytes]],
    now: int,
    correlation: Correlation | None = None,
    version: int = 1,
    token_bytes: Callable[[int], bytes] | None = None,
) -> BuiltBundle:
    """Build a bundle from a verified transcript.

    ``bodies`` maps an entry's ``seq`` to ``(media type, exact bytes)``.
    Raises :class:`NotParticipant` unless ``origin`` sent or received an entry
    (H01), and an integrity error if the transcript does not verify.
    """
    head = verify_links(transcript, scope=conversation)
    if origin not in participants(transcript):
        raise NotParticipant("the escalating agent takes no part in this conversation")
    by_seq = {entry.seq: entry for entry in transcript}
    recorded = []
    for seq, (media_type, body) in sorted(bodies.items()):
        if seq not in by_seq:
            raise BindingMismatch(f"body for seq {seq}, which is not in the transcript")
        recorded.append(_record_body(by_seq[seq], media_type, body))
    sla = request.sla
    draft: dict[str, Any] = {
        "schema": "baton.handoff-bundle/v1",
        "bundle_id": bundle_id,
        "version": version,
        "created_at": now,
        "ack_by": now + sla.ack_within_s if sla.ack_within_s else None,
        "resolve_by": now + sla.resolve_within_s,
        "queue": queue,
        "conversation": conversation,
        "origin": origin,
        "gateway": gateway,
        "request": request.to_json(),
        "correlation": (correlation or Correlation()).to_json(),
        "transcript": [entry.to_json() for entry in transcript],
        "bodies": recorded,
        "agent_views": [view.to_json() for view in agent_views(transcript)],
        "masked": [],
        "integrity": {
            "transcript_seq": head.seq,
            "transcript_head": head.hash,
            "content_digest": GENESIS,
        },
    }
    # Normalise through the model first (defaults and nulls filled in), so the
    # digest below is over exactly what verify_integrity will see.
    document = HandoffBundle.from_value(draft).to_json()
    kwargs = {} if token_bytes is None else {"token_bytes": token_bytes}
    masked = mask(document, request.pii_paths, **kwargs)
    document["masked"] = [field.to_json() for field in masked.masked]
    document["integrity"]["content_digest"] = _content_digest(document)
    bundle = HandoffBundle.from_value(document)
    verify_integrity(bundle)
    return BuiltBundle(bundle=bundle, reveals=RevealSet(bundle_id=bundle_id, items=masked.reveals))


def verify_integrity(bundle: HandoffBundle) -> None:
    """Every check of the module docstring except the signature."""
    verify_links(bundle.transcript, scope=bundle.conversation, expected_head=bundle.head)
    document = bundle.to_json()
    if _content_digest(document) != bundle.integrity.content_digest:
        raise DigestInvalid("content digest does not match the bundle")
    by_seq = {entry.seq: entry for entry in bundle.transcript}
    masked_paths = [field.path for field in bundle.masked]
    for index, body in enumerate(bundle.bodies):
        entry = by_seq.get(body.seq)
        if entry is None:
            raise BindingMismatch(f"body for seq {body.seq}, which is not in the transcript")
        if body.raw is not None:
            try:
                raw = b64url_decode(body.raw)
            except KeysError as exc:
                raise InvalidArtifact(f"raw body {body.seq} is not base64url") from exc
            if digest(raw) != entry.body_digest:
                raise DigestInvalid(f"raw body {body.seq} does not match its entry")
            continue
        content = f"/bodies/{index}/json"
        partly_masked = any(p == content or p.startswith(content + "/") for p in masked_paths)
        if not partly_masked and canonical_digest(body.json_) != body.json_digest:
            raise DigestInvalid(f"JSON body {body.seq} does not match its digest")
    if bundle.agent_views != agent_views(bundle.transcript):
        raise BindingMismatch("agent views are not those of the transcript")
    for field in bundle.masked:
        if [value for _, value in resolve(document, field.path)] != [field.token]:
            raise DigestInvalid(f"masked path {field.path} does not show its token")


@dataclass(frozen=True, slots=True)
class SealedBundle:
    """What the inbox stores: ciphertext, plus the digest decisions bind to."""

    bundle_id: str
    bundle_digest: str
    jwe: dict[str, Any]
    reveals_jwe: dict[str, Any] | None


def seal_bundle(
    built: BuiltBundle,
    *,
    gateway_key: PrivateKey,
    recipients: Sequence[PublicKey],
) -> SealedBundle:
    """Sign with the gateway key, encrypt to ``recipients`` (the queue's operators)."""
    payload = built.bundle.canonical()
    with translating():
        jws = sign_compact(payload, gateway_key, typ=BUNDLE_JWS_TYP)
        jwe = encrypt_general(
            jws.encode("ascii"), recipients, typ=BUNDLE_JWE_TYP, cty=BUNDLE_JWS_TYP
        )
        reveals = (
            encrypt_general(built.reveals.canonical(), recipients, typ=REVEAL_JWE_TYP)
            if built.reveals.items
            else None
        )
    return SealedBundle(
        bundle_id=built.bundle.bundle_id,
        bundle_digest=digest(payload),
        jwe=jwe,
        reveals_jwe=reveals,
    )


@dataclass(frozen=True, slots=True)
class OpenedBundle:
    """A bundle whose signature and integrity verified."""

    bundle: HandoffBundle
    bundle_digest: str
    jws: str
    signer_kid: str


def verify_bundle_jws(jws: str | bytes, gateway_keys: KeySet) -> OpenedBundle:
    """Offline verification of a decrypted bundle (what ``baton verify`` runs)."""
    with translating():
        verified = verify_compact(jws, gateway_keys, typ=BUNDLE_JWS_TYP, max_bytes=MAX_BUNDLE_BYTES)
    bundle = HandoffBundle.parse(verified.payload, max_bytes=MAX_BUNDLE_BYTES)
    if bundle.canonical() != verified.payload:
        raise InvalidArtifact("bundle payload is not in canonical form")
    verify_integrity(bundle)
    token = jws if isinstance(jws, str) else jws.decode("ascii")
    return OpenedBundle(
        bundle=bundle,
        bundle_digest=digest(verified.payload),
        jws=token,
        signer_kid=verified.key.kid,
    )


def open_bundle(
    jwe: Mapping[str, Any], operator_keys: PrivateKeySet, gateway_keys: KeySet
) -> OpenedBundle:
    """Decrypt with the operator's key, then :func:`verify_bundle_jws`."""
    with translating():
        key = recipient_key(jwe, operator_keys)
        plaintext = decrypt(jwe, key, typ=BUNDLE_JWE_TYP, max_bytes=MAX_BUNDLE_BYTES * 2)
    return verify_bundle_jws(plaintext.plaintext, gateway_keys)


def open_reveals(jwe: Mapping[str, Any], operator_keys: PrivateKeySet, bundle_id: str) -> RevealSet:
    """Decrypt a bundle's reveal set; it must name the same bundle."""
    with translating():
        key = recipient_key(jwe, operator_keys)
        plaintext = decrypt(jwe, key, typ=REVEAL_JWE_TYP, max_bytes=MAX_BUNDLE_BYTES)
    reveals = RevealSet.parse(plaintext.plaintext)
    if reveals.bundle_id != bundle_id:
        raise BindingMismatch("reveal set belongs to another bundle")
    return reveals
