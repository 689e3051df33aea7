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

import contextlib
import functools
import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from keys import strictjson
from keys.b64 import b64url_decode, b64url_encode
from keys.errors import KeysError
from keys.jose import (
    decrypt,
    encrypt_general,
    recipient_key,
    sign_compact_bytes,
    verify_compact,
)
from keys.keyset import KeySet, PrivateKeySet
from keys.material import PrivateKey, PublicKey
from protocol.canonical import (
    DIGEST_PREFIX,
    canonical_each,
    canonical_json,
    canonical_members,
    canonical_object,
    digest,
)
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


_BODIES: Final = TypeAdapter(tuple[RecordedBody, ...])
_ENTRIES: Final = TypeAdapter(list[TranscriptEntry])


def _entries_json(transcript: Sequence[TranscriptEntry]) -> list[dict[str, Any]]:
    """``[entry.to_json() for entry in transcript]``, in one serialiser call
    (for entries of exactly that class: a subclass serialises its own way)."""
    if all(type(entry) is TranscriptEntry for entry in transcript):
        entries: list[dict[str, Any]] = _ENTRIES.dump_python(
            list(transcript), mode="json", by_alias=True
        )
        return entries
    return [entry.to_json() for entry in transcript]


def _recorded_bodies(records: Sequence[Mapping[str, Any]]) -> tuple[RecordedBody, ...]:
    """``tuple(RecordedBody.build(**record) for record in records)``, in one
    validator call; a record that fails is reported as that loop reports it."""
    try:
        return _BODIES.validate_python(tuple(records), strict=True)
    except ValidationError:
        return tuple(RecordedBody.build(**record) for record in records)


def _is_json(media_type: str) -> bool:
    """A media type whose essence ends in ``json`` (``application/json``,
    ``...+json``). Cached: a conversation's bodies share a few media types
    (short ones: a long one would stay in the cache)."""
    return _is_json_type(media_type) if len(media_type) <= 256 else _json_essence(media_type)


def _json_essence(media_type: str) -> bool:
    return media_type.split(";", maxsplit=1)[0].strip().lower().endswith("json")


_is_json_type: Final = functools.lru_cache(maxsize=256)(_json_essence)


def _record_bodies(
    transcript: Sequence[TranscriptEntry], bodies: Mapping[int, tuple[str, bytes]]
) -> tuple[list[dict[str, Any]], dict[int, bytes]]:
    """The bodies' records (by ``seq``), in the model's JSON form (every
    member, nulls included), and for each JSON body (by index) the RFC 8785
    bytes its ``json_digest`` is over, which the payload then reuses.

    A body must belong to an entry (:class:`BindingMismatch`) and match its
    digest (:class:`DigestInvalid`), checked in ``seq`` order. A body with a
    JSON media type is carried parsed, unless it is not JSON after all or is
    JSON that RFC 8785 cannot represent (integers beyond 2**53): then, like
    any other body, as its exact bytes. The parsed bodies are serialised
    together (:func:`~protocol.canonical.canonical_each`)."""
    by_seq = {entry.seq: entry for entry in transcript}
    records: list[dict[str, Any]] = []
    exact: list[bytes] = []
    parsed: dict[int, Any] = {}
    for index, (seq, (media_type, body)) in enumerate(sorted(bodies.items())):
        entry = by_seq.get(seq)
        if entry is None:
            raise BindingMismatch(f"body for seq {seq}, which is not in the transcript")
        if entry.body_digest != digest(body):
            raise DigestInvalid(f"body of entry {entry.seq} does not match its digest")
        records.append(
            {
                "seq": entry.seq,
                "media_type": media_type,
                "json": None,
                "json_digest": None,
                "raw": None,
            }
        )
        exact.append(body)
        if _is_json(media_type):
            with contextlib.suppress(KeysError):  # not JSON after all: raw
                parsed[index] = strictjson.loads(body, max_bytes=MAX_BUNDLE_BYTES)
    try:
        forms: list[bytes | None] = list(canonical_each(parsed.values()))
    except InvalidArtifact:  # some body RFC 8785 cannot represent: find which
        forms = [_canonical_or_none(value) for value in parsed.values()]
    serialised: dict[int, bytes] = {}
    for index, form in zip(parsed, forms, strict=True):
        if form is not None:
            records[index]["json"] = parsed[index]
            records[index]["json_digest"] = digest(form)
            serialised[index] = form
    for index, record in enumerate(records):
        if index not in serialised:
            record["raw"] = b64url_encode(exact[index])
    return records, serialised


def _canonical_or_none(value: Any) -> bytes | None:
    try:
        return canonical_json(value)
    except InvalidArtifact:
        return None


# --------------------------------------------------------------------------- serialisation
#
# The payload is JCS(bundle document) (RFC 8785). Integrity also hashes parts of
# that document: each transcript entry without its ``hash`` (protocol/chain.py),
# each JSON body's ``json`` and the document without ``integrity``. Each part is
# serialised once and the payload is assembled from the parts
# (:func:`~protocol.canonical.canonical_members`, one join), so signing or
# checking a 1,000-entry bundle costs one JCS pass, not four. The thousands of
# entries, bodies and records are serialised together
# (:func:`~protocol.canonical.canonical_each`), and the content digest is taken
# over the payload with its ``integrity`` member left out, not over a copy.

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


_HASH_NAME: Final = b',"hash":'
_AFTER_HASH: Final = _successor(_ENTRY_NAMES, "hash")
_SCALAR_TYPES: Final = frozenset({str, int, bool, type(None)})


def _entry_forms(entry: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(JCS of the entry without ``hash``, which its hash covers; JCS of the entry)."""
    return _entries_forms([entry])[0]


def _entries_forms(entries: Sequence[Mapping[str, Any]]) -> list[tuple[bytes, bytes]]:
    """:func:`_entry_forms` of each entry, serialised together
    (:func:`~protocol.canonical.canonical_each`).

    One serialisation per entry: the first form is the second without the
    ``hash`` member, which ends where its successor ``,"kind":`` begins
    (s3.2.3 order). Exact for a flat object with the model's member names,
    checked here: RFC 8785 s3.2.2.2 writes every quote inside a string as
    ``\"``, so in ``,"hash":`` or ``,"kind":`` both quotes (preceded by
    ``,`` and a letter) delimit a string; the name between them is no JSON
    token, so it is that string, and one followed by ``:`` is a member name.
    A flat object has one level of names, each once: the first match of each
    is the member, and the value between them is that of ``hash``. Anything
    else (never a validated entry) is serialised twice.
    """
    forms = []
    for entry, full in zip(entries, canonical_each(entries), strict=True):
        at = full.find(_HASH_NAME)
        end = full.find(_AFTER_HASH, at)
        if (
            at == -1
            or end == -1
            or entry.keys() != _ENTRY_NAMES
            or not _SCALAR_TYPES.issuperset(map(type, entry.values()))
        ):
            without = {name: value for name, value in entry.items() if name != "hash"}
            forms.append((canonical_json(without), full))
        else:
            forms.append((full[:at] + full[end:], full))
    return forms


#: Member names of a body record as the model writes them; ``json`` sorts first.
_BODY_NAMES: Final = frozenset(
    field.alias or name for name, field in RecordedBody.model_fields.items()
)
_JSON_FIRST: Final = min(_BODY_NAMES, key=lambda n: n.encode("utf-16-be")) == "json"


def _record_bytes(record: Mapping[str, Any], json_bytes: bytes) -> bytes:
    """JCS of a body record, given JCS of its ``json`` member."""
    return _records_bytes([record], [json_bytes])[0]


def _records_bytes(records: Sequence[Mapping[str, Any]], jsons: Sequence[bytes]) -> list[bytes]:
    """:func:`_record_bytes` of each record. With the model's member names,
    ``json`` is the first member in RFC 8785 order, so it goes in front of the
    others' members (serialised together, :func:`~protocol.canonical.canonical_each`);
    anything else goes through the general
    :func:`~protocol.canonical.canonical_object`."""
    others = [
        {name: value for name, value in record.items() if name != "json"} for record in records
    ]
    out = []
    for record, json_bytes, rest, tail in zip(
        records, jsons, others, canonical_each(others), strict=True
    ):
        if _JSON_FIRST and record.keys() == _BODY_NAMES:
            out.append(b"".join((b'{"json":', json_bytes, b",", memoryview(tail)[1:])))
        else:
            out.append(canonical_object(rest, {"json": json_bytes}))
    return out


@dataclass(frozen=True, slots=True)
class _Parts:
    """RFC 8785 bytes of the large members of a bundle document (each element
    of its two arrays) and of what the integrity checks hash inside them. The
    payload is joined from them in one copy; the content is the payload
    without its ``integrity`` member, hashed in place."""

    entries: tuple[bytes, ...]  # JCS of each transcript entry
    records: tuple[bytes, ...]  # JCS of each body record
    entry_hashes: tuple[str, ...]  # compute_hash() of each transcript entry
    body_json: tuple[bytes, ...]  # JCS of each body's ``json``

    @classmethod
    def of(
        cls,
        document: Mapping[str, Any],
        *,
        entry_forms: Sequence[tuple[bytes, bytes]] | None = None,
        entry_hashes: Sequence[str] | None = None,
        body_json: Mapping[int, bytes] | None = None,
    ) -> _Parts:
        """``entry_forms`` (with ``entry_hashes``, the digests of their first
        forms) and ``body_json`` (by body index): parts the caller has
        serialised from these very values already (build_bundle)."""
        forms = _entries_forms(document["transcript"]) if entry_forms is None else entry_forms
        known = body_json or {}
        bodies = document["bodies"]
        missing = [index for index in range(len(bodies)) if index not in known]
        fresh = dict(zip(missing, canonical_each(bodies[i]["json"] for i in missing), strict=True))
        jsons = [known[index] if index in known else fresh[index] for index in range(len(bodies))]
        return cls(
            entries=tuple(full for _, full in forms),
            records=tuple(_records_bytes(bodies, jsons)),
            entry_hashes=tuple(
                (digest(hashed) for hashed, _ in forms)
                if entry_hashes is None or entry_forms is None
                else entry_hashes
            ),
            body_json=tuple(jsons),
        )

    def assemble(self, document: Mapping[str, Any]) -> tuple[bytes, tuple[int, int]]:
        """JCS of the whole document (what is signed), and where in it the
        ``integrity`` member is, with a comma next to it: without those bytes,
        it is the JCS of the document without ``integrity``
        (:func:`~protocol.canonical.canonical_members`), which
        ``content_digest`` covers."""
        rest = {name: value for name, value in document.items() if name not in _ASSEMBLED}
        fragments, spans = canonical_members(
            rest,
            {
                "transcript": _array(self.entries),
                "bodies": _array(self.records),
                "integrity": (canonical_json(document["integrity"]),),
            },
        )
        first, end = spans["integrity"]
        start = sum(map(len, fragments[:first]))
        return b"".join(fragments), (start, start + sum(map(len, fragments[first:end])))

    def payload(self, document: Mapping[str, Any]) -> bytes:
        """JCS of the whole document (what is signed)."""
        return self.assemble(document)[0]

    def content(self, document: Mapping[str, Any]) -> bytes:
        """JCS of the document without ``integrity`` (what ``content_digest`` covers)."""
        payload, (start, end) = self.assemble(document)
        return payload[:start] + payload[end:]


#: The members :meth:`_Parts.assemble` serialises on their own.
_ASSEMBLED: Final = frozenset({"transcript", "bodies", "integrity"})


def _content_digest(payload: bytes, span: tuple[int, int]) -> str:
    """:func:`~protocol.canonical.digest` of ``payload`` without the bytes of
    ``span`` (the content, from :meth:`_Parts.assemble`), without copying it."""
    start, end = span
    view = memoryview(payload)
    hasher = hashlib.sha256(view[:start])
    hasher.update(view[end:])
    return DIGEST_PREFIX + hasher.hexdigest()


def _array(items: Sequence[bytes]) -> list[bytes]:
    """JCS of an array whose elements are given as JCS bytes (RFC 8785 s3.2.2:
    elements in order, comma-separated, no whitespace), as fragments."""
    if not items:
        return [b"[]"]
    fragments = [b","] * (2 * len(items) + 1)
    fragments[0], fragments[-1] = b"[", b"]"
    fragments[1::2] = items
    return fragments


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
    entries = _entries_json(transcript)
    forms = _entries_forms(entries)
    hashes = [digest(hashed) for hashed, _ in forms]
    head = verify_links(transcript, scope=conversation, hashes=hashes)
    if origin not in participants(transcript):
        raise NotParticipant("the escalating agent takes no part in this conversation")
    recorded, body_json = _record_bodies(transcript, bodies)
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
            bodies=_recorded_bodies(recorded),
            agent_views=views,
            masked=masked.masked,
            integrity=Integrity.build(**draft["integrity"]),
        )
        # The document is the model's JSON form: its transcript entries and
        # body records are the dicts above, which the model holds as they are
        # (entries: the very models; records: validated from these dicts,
        # masked already, which validation leaves unchanged); the rest is
        # small. Entries are serialised already; a JSON body's bytes are
        # reused unless a masked path reaches into it.
        document = built.model_dump(mode="json", by_alias=True, exclude={"transcript", "bodies"})
        document["transcript"] = entries
        document["bodies"] = recorded
        masked_json = _bodies_with_masked_json(field.path for field in masked.masked)
        reuse = {i: b for i, b in body_json.items() if str(i) not in masked_json}
        parts = _Parts.of(document, entry_forms=forms, entry_hashes=hashes, body_json=reuse)
        reused: Collection[int] = reuse.keys()
    else:
        draft["masked"] = [field.to_json() for field in masked.masked]
        built = HandoffBundle.from_value(draft)
        document = built.to_json()
        parts = _Parts.of(document)
        reused = ()
    content_digest = _content_digest(*parts.assemble(document))
    integrity = built.integrity.model_copy(update={"content_digest": content_digest})
    bundle = built.model_copy(update={"integrity": integrity})
    document["integrity"] = integrity.to_json()
    payload = parts.payload(document)
    _check_integrity(bundle, document, parts, content_digest=content_digest, digested=reused)
    return BuiltBundle(
        bundle=bundle,
        reveals=RevealSet(bundle_id=bundle_id, items=masked.reveals),
        payload=payload,
    )


def verify_integrity(bundle: HandoffBundle) -> None:
    """Every check of the module docstring except the signature."""
    document = bundle.to_json()
    _check_integrity(bundle, document, _Parts.of(document))


def _check_integrity(
    bundle: HandoffBundle,
    document: Mapping[str, Any],
    parts: _Parts,
    *,
    content_digest: str | None = None,
    digested: Collection[int] = (),
) -> None:
    """:func:`verify_integrity`, given ``document = bundle.to_json()`` and its
    serialised ``parts``: the chain, content digest and body digests are
    checked over the bytes the payload is assembled from. From a caller that
    has just computed them from those very bytes (:func:`build_bundle`):
    ``content_digest``, the digest of ``parts.content(document)``, and
    ``digested``, the indexes of the bodies whose ``json_digest`` is the
    digest of ``parts.body_json[index]``."""
    verify_links(
        bundle.transcript,
        scope=bundle.conversation,
        expected_head=bundle.head,
        hashes=parts.entry_hashes,
    )
    if content_digest is None:
        content_digest = _content_digest(*parts.assemble(document))
    if content_digest != bundle.integrity.content_digest:
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
        if (
            str(index) not in partly_masked
            and index not in digested
            and digest(parts.body_json[index]) != body.json_digest
        ):
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
        jws = sign_compact_bytes(payload, gateway_key, typ=BUNDLE_JWS_TYP)
        jwe = encrypt_general(jws, recipients, typ=BUNDLE_JWE_TYP, cty=BUNDLE_JWS_TYP)
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
    bundle, document, parts, span = _parse_canonical(verified.payload)
    content_digest = _content_digest(verified.payload, span)
    _check_integrity(bundle, document, parts, content_digest=content_digest)
    token = jws if isinstance(jws, str) else jws.decode("ascii")
    return OpenedBundle(
        bundle=bundle,
        bundle_digest=digest(verified.payload),
        jws=token,
        signer_kid=verified.key.kid,
    )


def _json_form(bundle: HandoffBundle) -> dict[str, Any]:
    """``bundle.to_json()`` for a bundle validated from JSON: its bodies' JSON
    values are the parsed ones (``dict``, ``list``, ``str``, ``int``,
    ``float``, ``bool``, ``None``), which the model's JSON form would only
    copy, so they are taken as they are (the tests compare the two)."""
    document = bundle.model_dump(mode="json", by_alias=True, exclude={"bodies"})
    document["bodies"] = [
        {
            "seq": body.seq,
            "media_type": body.media_type,
            "json": body.json_,
            "json_digest": body.json_digest,
            "raw": body.raw,
        }
        for body in bundle.bodies
    ]
    return document


def _parse_canonical(
    payload: bytes,
) -> tuple[HandoffBundle, dict[str, Any], _Parts, tuple[int, int]]:
    """``HandoffBundle.parse(payload)``, and the check that ``payload`` is the
    canonical form of the bundle (its RFC 8785 bytes, ``bundle.canonical()``,
    assembled from the parts :func:`_check_integrity` hashes): the bundle, its
    JSON form, those parts and where the payload's ``integrity`` member is
    (:meth:`_Parts.assemble`). Raises what those raise, in that order.

    Fast path: pydantic validates the bytes directly, and the strict JSON
    parse (``keys.strictjson``: duplicate names, NaN, lone surrogates,
    trailing data, encoding, depth) is skipped when the payload turns out to
    be exactly the canonical form. That form is RFC 8785 output, which has
    none of what the parser refuses but depth: each member once, UTF-8, no
    ``NaN``, finite numbers, no ``\\ud800`` escapes, nothing after the value.
    Depth is checked on its own (:func:`keys.strictjson.nesting_exceeds`), as
    is the size. So when the fast path accepts, the strict parse would have
    accepted too and validation (the same call on the same bytes) would have
    given the same bundle. Anything else, whatever fails first, is run again
    in the order above, which raises the error it always raised.
    """
    try:
        bundle = HandoffBundle.model_validate_json(payload, strict=True)
        document = _json_form(bundle)
        parts = _Parts.of(document)
        assembled, span = parts.assemble(document)
        if (
            len(payload) <= MAX_BUNDLE_BYTES
            and assembled == payload
            and not strictjson.nesting_exceeds(payload)  # JSON, as it is canonical
        ):
            return bundle, document, parts, span
    except Exception:  # noqa: S110 - the order below raises the error to report
        pass
    bundle = HandoffBundle.parse(payload, max_bytes=MAX_BUNDLE_BYTES)
    document = bundle.to_json()
    parts = _Parts.of(document)
    assembled, span = parts.assemble(document)
    if assembled != payload:  # bundle.canonical(), serialised once
        raise InvalidArtifact("bundle payload is not in canonical form")
    return bundle, document, parts, span


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
