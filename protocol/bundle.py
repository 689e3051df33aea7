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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import Field, model_validator

from keys import strictjson
from keys.b64 import b64url_decode, b64url_encode
from keys.errors import KeysError
from keys.jose import decrypt, encrypt_general, recipient_key, sign_compact, verify_compact
from keys.keyset import KeySet, PrivateKeySet
from keys.material import PrivateKey, PublicKey
from protocol.canonical import canonical_json, canonical_object, canonical_string, digest
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


def _record_body(
    entry: TranscriptEntry, media_type: str, body: bytes
) -> tuple[dict[str, Any], bytes | None]:
    """The body's record, in the model's JSON form (every member, nulls
    included), and for a JSON body the RFC 8785 bytes its ``json_digest`` is
    over (which the payload then reuses; ``None`` for a raw body)."""
    if entry.body_digest != digest(body):
        raise DigestInvalid(f"body of entry {entry.seq} does not match its digest")
    record: dict[str, Any] = {
        "seq": entry.seq,
        "media_type": media_type,
        "json": None,
        "json_digest": None,
        "raw": None,
    }
    if media_type.split(";", maxsplit=1)[0].strip().lower().endswith("json"):
        try:
            parsed = strictjson.loads(body, max_bytes=MAX_BUNDLE_BYTES)
            serialised = canonical_json(parsed)
        except (KeysError, InvalidArtifact):
            # Not JSON after all, or JSON that RFC 8785 cannot represent
            # (integers beyond 2**53): keep the exact bytes instead.
            pass
        else:
            record["json"] = parsed
            record["json_digest"] = digest(serialised)
            return record, serialised
    record["raw"] = b64url_encode(body)
    return record, None


# --------------------------------------------------------------------------- serialisation
#
# The payload is JCS(bundle document) (RFC 8785). Integrity also hashes parts of
# that document: each transcript entry without its ``hash`` (protocol/chain.py),
# each JSON body's ``json`` and the document without ``integrity``. Each part is
# serialised once and the payload is assembled from the parts
# (:func:`~protocol.canonical.canonical_object`), so signing or checking a
# 1,000-entry bundle costs one JCS pass, not four.

#: Member names of a transcript entry as the model writes them (all present,
#: every value a string, integer, boolean or null), and the one that follows
#: ``hash`` in RFC 8785 order.
_ENTRY_NAMES: Final = frozenset(
    field.alias or name for name, field in TranscriptEntry.model_fields.items()
)


def _successor(names: frozenset[str], name: str) -> bytes:
    """``,"<next>":``: the member that follows ``name`` in RFC 8785 order."""
    key = name.encode("utf-16-be")
    after = min(
        (n for n in names if n.encode("utf-16-be") > key), key=lambda n: n.encode("utf-16-be")
    )
    return b"," + canonical_json(after) + b":"


_AFTER_HASH: Final = _successor(_ENTRY_NAMES, "hash")
_SCALAR_TYPES: Final = frozenset({str, int, bool, type(None)})


def _entry_forms(entry: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(JCS of the entry without ``hash``, which its hash covers; JCS of the entry).

    One serialisation: the second is the first with the ``hash`` member spliced
    in before its successor, ``kind`` (s3.2.3 order). Exact for a flat object
    with the model's member names, checked here: RFC 8785 s3.2.2.2 writes every
    quote inside a string as ``\"``, so in ``,"kind":`` both quotes (preceded by
    ``,`` and ``d``) delimit a string; ``kind`` between them is no JSON token,
    so it is that string, and one followed by ``:`` is a member name. A flat
    object has one level of names, each once: the first match is the member.
    Anything else (never a validated entry) is serialised twice.
    """
    without = {name: value for name, value in entry.items() if name != "hash"}
    hashed = canonical_json(without)
    at = hashed.find(_AFTER_HASH)
    if (
        at == -1
        or entry.keys() != _ENTRY_NAMES
        or not _SCALAR_TYPES.issuperset(map(type, without.values()))
    ):
        return hashed, canonical_json(entry)
    value = entry["hash"]
    member = b',"hash":' + (
        canonical_string(value) if type(value) is str else canonical_json(value)
    )
    return hashed, hashed[:at] + member + hashed[at:]


#: Member names of a body record as the model writes them; ``json`` sorts first.
_BODY_NAMES: Final = frozenset(
    field.alias or name for name, field in RecordedBody.model_fields.items()
)
_JSON_FIRST: Final = min(_BODY_NAMES, key=lambda n: n.encode("utf-16-be")) == "json"


def _record_bytes(record: Mapping[str, Any], json_bytes: bytes) -> bytes:
    """JCS of a body record, given JCS of its ``json`` member. With the model's
    member names, ``json`` is the first member in RFC 8785 order, so it goes in
    front of the others' members; anything else goes through the general
    :func:`~protocol.canonical.canonical_object`."""
    others = {name: value for name, value in record.items() if name != "json"}
    if _JSON_FIRST and record.keys() == _BODY_NAMES:
        return b'{"json":' + json_bytes + b"," + canonical_json(others)[1:]
    return canonical_object(others, {"json": json_bytes})


@dataclass(frozen=True, slots=True)
class _Parts:
    """RFC 8785 bytes of the large members of a bundle document and of what the
    integrity checks hash inside them."""

    transcript: bytes
    bodies: bytes
    entry_hashes: tuple[str, ...]  # compute_hash() of each transcript entry
    body_json: tuple[bytes, ...]  # JCS of each body's ``json``

    @classmethod
    def of(
        cls,
        document: Mapping[str, Any],
        *,
        entry_forms: Sequence[tuple[bytes, bytes]] | None = None,
        body_json: Mapping[int, bytes] | None = None,
    ) -> _Parts:
        """``entry_forms`` and ``body_json`` (by body index): parts the caller
        has serialised from these very values already (build_bundle)."""
        forms = (
            [_entry_forms(entry) for entry in document["transcript"]]
            if entry_forms is None
            else entry_forms
        )
        known = body_json or {}
        jsons = []
        records = []
        for index, body in enumerate(document["bodies"]):
            value = known.get(index)
            if value is None:
                value = canonical_json(body["json"])
            jsons.append(value)
            records.append(_record_bytes(body, value))
        return cls(
            transcript=_array(full for _, full in forms),
            bodies=_array(records),
            entry_hashes=tuple(digest(hashed) for hashed, _ in forms),
            body_json=tuple(jsons),
        )

    def payload(self, document: Mapping[str, Any]) -> bytes:
        """JCS of the whole document (what is signed)."""
        return self._object(document, "transcript", "bodies")

    def content(self, document: Mapping[str, Any]) -> bytes:
        """JCS of the document without ``integrity`` (what ``content_digest`` covers)."""
        return self._object(document, "transcript", "bodies", "integrity")

    def _object(self, document: Mapping[str, Any], *left_out: str) -> bytes:
        rest = {name: value for name, value in document.items() if name not in left_out}
        return canonical_object(rest, {"transcript": self.transcript, "bodies": self.bodies})


def _array(items: Iterable[bytes]) -> bytes:
    """JCS of an array whose elements are given as JCS bytes (RFC 8785 s3.2.2:
    elements in order, comma-separated, no whitespace), in one copy."""
    return b"".join((b"[", b",".join(items), b"]"))


def _bodies_with_masked_json(paths: Iterable[str]) -> frozenset[str]:
    """The index segments ``i`` of masked paths equal to or under ``/bodies/i/json``.

    Exactly the paths ``p`` with ``p == c or p.startswith(c + "/")`` for
    ``c = f"/bodies/{i}/json"``, collected once instead of testing every
    masked path against every body.
    """
    found = set()
    for path in paths:
        parts = path.split("/", 4)
        if len(parts) >= 4 and parts[0] == "" and parts[1] == "bodies" and parts[3] == "json":
            found.add(parts[2])
    return frozenset(found)


def _masks_only_request_and_body_json(pointers: Iterable[str]) -> bool:
    """True if every PII pointer stays inside ``/request`` or a body's ``json``:
    then masking leaves every other member of the document as built."""
    for pointer in pointers:
        segments = pointer.split("/")
        if len(segments) >= 3 and segments[0] == "" and segments[1] == "request":
            continue
        if len(segments) >= 4 and segments[:2] == ["", "bodies"] and segments[3] == "json":
            continue
        return False
    return True


@dataclass(frozen=True, slots=True)
class BuiltBundle:
    """A bundle as built, its reveal set, and ``payload``: the RFC 8785 bytes
    of ``bundle`` (what :func:`seal_bundle` signs), serialised while building."""

    bundle: HandoffBundle
    reveals: RevealSet
    payload: bytes | None = None


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

    The bundle is validated once: the parts that arrive as validated models
    (request, transcript entries, agent views) are passed in as they are, and
    only what masking can change is validated again: the request, when a PII
    path points into it, and every body record. A PII path anywhere else
    validates the whole masked document instead. Either way the result passes
    :func:`verify_integrity` (checked on the bytes serialised for the payload)
    before it is returned.
    """
    entries = [entry.to_json() for entry in transcript]
    forms = [_entry_forms(entry) for entry in entries]
    head = verify_links(
        transcript, scope=conversation, hashes=[digest(hashed) for hashed, _ in forms]
    )
    if origin not in participants(transcript):
        raise NotParticipant("the escalating agent takes no part in this conversation")
    by_seq = {entry.seq: entry for entry in transcript}
    recorded = []
    body_json: dict[int, bytes] = {}
    for index, (seq, (media_type, body)) in enumerate(sorted(bodies.items())):
        if seq not in by_seq:
            raise BindingMismatch(f"body for seq {seq}, which is not in the transcript")
        record, serialised = _record_body(by_seq[seq], media_type, body)
        recorded.append(record)
        if serialised is not None:
            body_json[index] = serialised
    sla = request.sla
    views = agent_views(transcript)
    scalars: dict[str, Any] = {
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
    }
    correlation = correlation or Correlation()
    draft: dict[str, Any] = {
        **scalars,
        "request": request.to_json(),
        "correlation": correlation.to_json(),
        "transcript": entries,
        "bodies": recorded,
        "agent_views": [view.to_json() for view in views],
        "masked": [],
        "integrity": {
            "canonicalization": "RFC8785",
            "transcript_seq": head.seq,
            "transcript_head": head.hash,
            "content_digest": GENESIS,
        },
    }
    kwargs = {} if token_bytes is None else {"token_bytes": token_bytes}
    masked = mask(draft, request.pii_paths, **kwargs)
    if _masks_only_request_and_body_json(request.pii_paths):
        touched = any(path.startswith("/request/") for path in request.pii_paths)
        built = HandoffBundle.build(
            **scalars,
            request=HandoffRequest.from_value(draft["request"]) if touched else request,
            correlation=correlation,
            transcript=tuple(transcript),
            bodies=tuple(RecordedBody.build(**record) for record in recorded),
            agent_views=views,
            masked=masked.masked,
            integrity=Integrity.build(**draft["integrity"]),
        )
        document = built.to_json()
        # Entries are the very ones serialised above; a JSON body's bytes are
        # reused unless a masked path reaches into it.
        masked_json = _bodies_with_masked_json(field.path for field in masked.masked)
        reuse = {i: b for i, b in body_json.items() if str(i) not in masked_json}
        parts = _Parts.of(document, entry_forms=forms, body_json=reuse)
    else:
        draft["masked"] = [field.to_json() for field in masked.masked]
        built = HandoffBundle.from_value(draft)
        document = built.to_json()
        parts = _Parts.of(document)
    integrity = built.integrity.model_copy(
        update={"content_digest": digest(parts.content(document))}
    )
    bundle = built.model_copy(update={"integrity": integrity})
    document["integrity"] = integrity.to_json()
    payload = parts.payload(document)
    _check_integrity(bundle, document, parts)
    return BuiltBundle(
        bundle=bundle,
        reveals=RevealSet(bundle_id=bundle_id, items=masked.reveals),
        payload=payload,
    )


def verify_integrity(bundle: HandoffBundle) -> None:
    """Every check of the module docstring except the signature."""
    document = bundle.to_json()
    _check_integrity(bundle, document, _Parts.of(document))


def _check_integrity(bundle: HandoffBundle, document: Mapping[str, Any], parts: _Parts) -> None:
    """:func:`verify_integrity`, given ``document = bundle.to_json()`` and its
    serialised ``parts``: the chain, content digest and body digests are
    checked over the bytes the payload is assembled from."""
    verify_links(
        bundle.transcript,
        scope=bundle.conversation,
        expected_head=bundle.head,
        hashes=parts.entry_hashes,
    )
    if digest(parts.content(document)) != bundle.integrity.content_digest:
        raise DigestInvalid("content digest does not match the bundle")
    by_seq = {entry.seq: entry for entry in bundle.transcript}
    partly_masked = _bodies_with_masked_json(field.path for field in bundle.masked)
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
        if str(index) not in partly_masked and digest(parts.body_json[index]) != body.json_digest:
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
    payload = built.payload if built.payload is not None else built.bundle.canonical()
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
    document = bundle.to_json()
    parts = _Parts.of(document)
    if parts.payload(document) != verified.payload:  # bundle.canonical(), serialised once
        raise InvalidArtifact("bundle payload is not in canonical form")
    _check_integrity(bundle, document, parts)
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
