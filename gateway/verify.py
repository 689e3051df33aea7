"""Offline verification of handoff artifacts: what ``baton verify FILE`` runs.

DESIGN.md "Human handoff" (``baton verify BUNDLE``), ``research/handoff.md`` §3
items 10-11 (the verify badge; decisions bound to bundle digest, version,
fencing token, nonce and expiry) and 14 (export and offline verification),
ADR 0009 (bundle, decision and lifecycle events are separate signed artifacts).

:func:`verify_artifact` recognises what it is given:

* an **export** (:func:`build_export`): the RFC 8785 canonical JSON object ::

      {"type": "baton-handoff-export",
       "bundle": <compact JWS | general-JSON JWE, as seal_bundle makes them>,
       "events": [<signed lifecycle event>, ...],   # queued first
       "decision": <signed decision> | null,
       "queue": <queue name>, "conversation": <conversation id>}

  optionally followed by one newline. The file must be *exactly* the
  canonical form of what it parses to, so a changed byte that still parses
  (an escape, a re-encoded number) is refused as well (``invalid_artifact``);
* a bare **decision** (compact JWS, ``typ`` ``baton-decision+jws``), as the
  agent receives it: signature, operator and validity at ``now`` (its binding
  needs the bundle: verify the export, or use ``verify_decision_at``);
* a bare **bundle**: its JWS (``baton-handoff+jws``) or its sealed JWE.

What is checked, in this order, each failure raising the
:mod:`protocol.errors` class whose stable ``code`` names it:

1. the bundle: JWE shape (every recipient entry: alg, kid, a valid P-256
   ``epk``, a 40-byte wrapped key); with operator private keys, decryption
   through *every* recipient entry one of them opens (``invalid_envelope``,
   ``not_recipient``); then the gateway's signature and type
   (``bad_signature``, ``wrong_typ``, ...) and
   :func:`protocol.bundle.verify_integrity`: transcript chain and head
   (``chain_break``, ``seq_violation``, ``head_mismatch``), content and body
   digests (``digest_invalid``), agent views and masked paths; a bundle
   created after ``now`` (``not_yet_valid``);
2. the export's stated queue and conversation against the signed ones, and the
   caller's expectations (``binding_mismatch``);
3. the lifecycle: each event signed by the gateway, one hash chain, legal
   transitions and fencing (:func:`protocol.lifecycle.verify_events`),
   canonical payloads, that it is this bundle's and no later version's
   (``binding_mismatch``), nothing recorded after ``now`` (``not_yet_valid``);
4. the decision: the operator's signature, that it is *exactly* the token the
   gateway recorded in the ``decided`` event (``decision_digest``, see
   :func:`decision_digest`; ``binding_mismatch``), that its key is the named
   operator's (``identity_mismatch``), its binding to bundle id and digest
   (``binding_mismatch``), version and fencing token (``stale_decision``),
   its validity at the time the gateway recorded it (``expired``,
   ``not_yet_valid``), the lease holder, the allowed decision types and
   arguments (as :func:`protocol.decision.verify_decision_at`), and that the
   operator serves the queue (``policy_denied``, given ``queue_operators``).
   Single use of the nonce is the inbox store's to enforce; offline, an
   export carries one decision.

Without operator private keys an encrypted bundle's content cannot be read:
everything else is still verified and :attr:`VerificationReport.unchecked`
says what was not (the digest a decision binds to, the bundle id the lifecycle
names, the stated queue and conversation). JWE per-recipient headers are not
integrity-protected (RFC 7516 s7.2.1): an entry no given key opens is checked
for shape only; knowing the operators' encryption keys (``operator_keys``)
also checks that every recipient is a known operator.

Invariants: no network, no clock (``now`` is passed in), no files except in
:func:`load_verification_keys`, which the CLI uses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import Field, ValidationError

from gateway.config import load as load_config
from keys import strictjson
from keys.b64 import b64url_decode
from keys.errors import KeysError
from keys.files import load_jwks
from keys.jose import decrypt, verify_compact
from keys.keyset import KeySet, PrivateKeySet
from keys.material import ENCRYPTION_ALG, validate_p256_point
from protocol.bundle import (
    BUNDLE_JWE_TYP,
    BUNDLE_JWS_TYP,
    MAX_BUNDLE_BYTES,
    OpenedBundle,
    verify_bundle_jws,
)
from protocol.canonical import canonical_json, canonical_object, canonical_string, digest
from protocol.decision import DECISION_TYP, HandoffDecision
from protocol.directory import KeyDirectory
from protocol.errors import (
    BindingMismatch,
    IdentityMismatch,
    InvalidArtifact,
    InvalidEnvelope,
    MalformedInput,
    MalformedJws,
    NotRecipient,
    NotYetValid,
    PolicyDenied,
    StaleDecision,
    TokenExpired,
    UnknownKeyId,
    WrongType,
    translating,
)
from protocol.handoff import HandoffRequest
from protocol.identity import OperatorId, validate_name
from protocol.lifecycle import EVENT_TYP, LifecycleEvent, verify_events
from protocol.model import BatonModel, JsonData, Name, ShortText

__all__ = [
    "EXPORT_TYPE",
    "DecisionSummary",
    "HandoffExport",
    "VerificationKeys",
    "VerificationReport",
    "build_export",
    "decision_digest",
    "load_verification_keys",
    "verify_artifact",
]

EXPORT_TYPE: Final = "baton-handoff-export"
#: A JWE of the largest bundle (8 MiB, base64url twice) plus its history.
MAX_EXPORT_BYTES: Final = 32 << 20
MAX_EXPORT_DEPTH: Final = 8
MAX_EVENTS: Final = 1024
#: Clock skew allowed between the gateway that recorded and the verifier.
SKEW_S: Final = 5

_JWE_MEMBERS: Final = frozenset({"protected", "recipients", "iv", "ciphertext", "tag"})
_JWE_PROTECTED: Final = {"enc": "A256GCM", "typ": BUNDLE_JWE_TYP, "cty": BUNDLE_JWS_TYP}
_EPK_MEMBERS: Final = frozenset({"kty", "crv", "x", "y"})
_MAX_RECIPIENTS: Final = 32
_WRAPPED_KEY_BYTES: Final = 40  # A256KW of a 32-byte CEK (RFC 3394)
_COMPACT: Final = re.compile(rb"[A-Za-z0-9_.-]+")


# --------------------------------------------------------------------------- export format


class HandoffExport(BatonModel):
    """The export file (module docstring). ``queue`` and ``conversation`` are
    stated in the clear for people and tools; they are checked against the
    signed bundle whenever its content can be read."""

    type: Literal["baton-handoff-export"]
    bundle: str | dict[str, JsonData]
    events: tuple[str, ...] = Field(min_length=1, max_length=MAX_EVENTS)
    decision: str | None
    queue: Name
    conversation: ShortText


def decision_digest(token: str) -> str:
    """What a ``decided`` lifecycle event records: the digest of the decision's
    exact compact JWS, so the export must carry that very token."""
    return digest(token.encode("utf-8"))  # ASCII for any well-formed token


def build_export(
    *,
    bundle: str | Mapping[str, Any],
    events: Sequence[str],
    decision: str | None,
    queue: str,
    conversation: str,
) -> bytes:
    """The export file for a bundle (its JWS or sealed JWE), its signed
    lifecycle and its decision: canonical JSON and a newline."""
    export = HandoffExport.build(
        type=EXPORT_TYPE,
        bundle=bundle if isinstance(bundle, str) else dict(bundle),
        events=tuple(events),
        decision=decision,
        queue=queue,
        conversation=conversation,
    )
    return export.canonical() + b"\n"


# --------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class DecisionSummary:
    """A verified decision. ``signer_kid`` is ``None`` when no operator key was
    given (the gateway's ``decided`` event still vouches for the exact token)."""

    type: str
    operator: str
    signer_kid: str | None
    bundle_digest: str
    bundle_version: int
    fencing_token: int
    nonce: str
    iat: int
    exp: int


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """What verified. Fields a check could not reach are ``None``; ``unchecked``
    says in words what was not verified and why."""

    kind: Literal["export", "bundle", "decision"]
    bundle_id: str
    content_checked: bool
    encrypted: bool = False
    queue: str | None = None
    conversation: str | None = None
    bundle_digest: str | None = None
    bundle_version: int | None = None
    gateway_kid: str | None = None
    transcript_entries: int | None = None
    transcript_head: str | None = None
    recipients: tuple[str, ...] = ()
    opened_with: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    decision: DecisionSummary | None = None
    unchecked: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """A short human-readable report (what ``baton verify`` prints)."""
        what = {"export": "handoff export", "bundle": "bundle", "decision": "decision"}[self.kind]
        version = f", bundle version {self.bundle_version}" if self.bundle_version else ""
        out = [f"{self.bundle_id}: ok ({what}{version})"]
        if self.gateway_kid is not None:
            out.append(f"  bundle     signed by gateway key {self.gateway_kid}")
            out.append(f"             digest {self.bundle_digest}")
        if self.content_checked:
            out.append(f"  content    queue {self.queue}, conversation {self.conversation}")
            out.append(
                f"             {self.transcript_entries} transcript entries chained to head "
                f"{self.transcript_head}; content, body and view digests match"
            )
        elif self.kind != "decision":
            stated = f"stated: queue {self.queue}, conversation {self.conversation}"
            out.append(f"  content    not checked ({stated})")
        if self.encrypted:
            opened = ", ".join(self.opened_with) or "none of them"
            out.append(
                f"  envelope   encrypted to {len(self.recipients)} key(s); opened with {opened}"
            )
        if self.events:
            out.append(
                f"  lifecycle  {' -> '.join(self.events)} "
                f"({len(self.events)} gateway-signed events, one chain)"
            )
        if self.decision is not None:
            d = self.decision
            key = f"key {d.signer_kid}" if d.signer_kid else "operator signature not checked"
            out.append(f"  decision   {d.type} by {d.operator} ({key})")
            out.append(
                f"             bundle v{d.bundle_version}, fencing token {d.fencing_token}, "
                f"nonce {d.nonce}, valid {d.iat}..{d.exp}"
            )
        out.extend(f"  not checked: {item}" for item in self.unchecked)
        return out


# --------------------------------------------------------------------------- entry point


def verify_artifact(
    data: bytes,
    *,
    gateway_keys: KeySet,
    operator_keys: KeyDirectory | KeySet | None,
    operator_private: PrivateKeySet | None,
    now: float,
    expect_conversation: str | None = None,
    expect_queue: str | None = None,
    queue_operators: Mapping[str, Collection[str]] | None = None,
) -> VerificationReport:
    """Verify an export, a bare decision or a bare bundle offline (module docstring).

    ``operator_keys``: the operators' public keys. A :class:`KeyDirectory`
    also proves *which* operator a key belongs to; a bare :class:`KeySet`
    only that it is some trusted operator's. Encryption keys among them name
    the legitimate recipients of a bundle. ``operator_private``: keys that
    open the bundle. ``queue_operators``: queue -> operator identities allowed
    to decide there. Raises a :class:`~protocol.errors.BatonError` on the
    first check that fails.
    """
    body = data[:-1] if data.endswith(b"\n") else data
    verifier = _Verifier(
        gateway_keys=gateway_keys,
        operator_keys=operator_keys,
        operator_private=operator_private,
        now=now,
        queue_operators=queue_operators,
    )
    if body[:1] == b"{":
        value = _parse_object(body)
        if "type" in value:
            return verifier.export(_export(value, body), expect_conversation, expect_queue)
        if "recipients" in value:
            return verifier.bare_bundle(value, expect_conversation, expect_queue)
        raise InvalidArtifact("JSON that is neither a handoff export nor a sealed bundle")
    if not _COMPACT.fullmatch(body):
        raise MalformedInput("neither a JSON export nor a compact JWS")
    typ = _peek_typ(body)
    if typ == DECISION_TYP:
        if expect_conversation is not None or expect_queue is not None:
            raise BindingMismatch("a decision names no queue or conversation: verify the export")
        return verifier.bare_decision(body.decode("ascii"))
    if typ == BUNDLE_JWS_TYP:
        return verifier.bare_bundle(body.decode("ascii"), expect_conversation, expect_queue)
    raise WrongType(f"typ {typ!r} is not a Baton bundle or decision")


# --------------------------------------------------------------------------- parsing helpers


def _parse_object(body: bytes) -> dict[str, Any]:
    with translating():
        return strictjson.loads_object(body, max_bytes=MAX_EXPORT_BYTES, max_depth=MAX_EXPORT_DEPTH)


def _export(value: dict[str, Any], body: bytes) -> HandoffExport:
    """The export, if ``body`` is exactly the canonical form of ``value``."""
    if _canonical_export(value) != body:
        raise InvalidArtifact("export is not in canonical form (RFC 8785)")
    try:
        return HandoffExport.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise InvalidArtifact(f"export: {exc.error_count()} schema error(s)") from exc


def _canonical_export(value: Mapping[str, Any]) -> bytes:
    """``canonical_json(value)``, with a sealed bundle's ciphertext (megabytes
    of base64url) serialised on its own and spliced in: the same RFC 8785
    bytes (``canonical_object``), without the JSON encoder's per-character
    escaping pass over the ciphertext (``canonical_string``)."""
    bundle = value.get("bundle")
    if not isinstance(bundle, Mapping) or not isinstance(bundle.get("ciphertext"), str):
        return canonical_json(value)
    sealed = canonical_object(
        {name: item for name, item in bundle.items() if name != "ciphertext"},
        {"ciphertext": canonical_string(bundle["ciphertext"])},
    )
    return canonical_object(
        {name: item for name, item in value.items() if name != "bundle"}, {"bundle": sealed}
    )


def _compact_parts(body: bytes | str) -> list[str]:
    try:
        text = body if isinstance(body, str) else body.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedJws("JOSE object is not ASCII") from None
    parts = text.split(".")
    if len(parts) != 3:
        raise MalformedJws(f"compact JWS has {len(parts)} segments, expected 3")
    return parts


def _peek_typ(body: bytes | str) -> object:
    """The (not yet verified) ``typ`` of a compact JWS, to pick the checks.
    Verification itself re-reads everything strictly."""
    header_b64 = _compact_parts(body)[0]
    try:
        header = strictjson.loads_object(b64url_decode(header_b64, max_len=2048), max_depth=4)
    except KeysError as exc:
        raise MalformedJws(f"header: {exc.detail}") from exc
    return header.get("typ")


def _jws_payload(token: str) -> bytes:
    """The payload of a compact JWS (for tokens whose signature verified, or
    that a verified artifact vouches for by digest)."""
    try:
        return b64url_decode(_compact_parts(token)[1])
    except KeysError as exc:
        raise MalformedJws(f"payload: {exc.detail}") from exc


def _decision_header_typ(token: str) -> None:
    if _peek_typ(token) != DECISION_TYP:
        raise WrongType("the recorded decision is not a baton-decision+jws")


def _keys_of_use(keys: KeyDirectory | KeySet | None, *, encryption: bool) -> KeySet | None:
    if keys is None:
        return None
    pool = keys.all_keys if isinstance(keys, KeyDirectory) else keys
    chosen = KeySet(k for k in pool if (k.alg == ENCRYPTION_ALG) == encryption)
    return chosen if len(chosen) else None


# --------------------------------------------------------------------------- JWE shape


def _b64_member(value: object, name: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise InvalidEnvelope(f"{name} is not a string")
    try:
        raw = b64url_decode(value)
    except KeysError as exc:
        raise InvalidEnvelope(f"{name}: {exc.detail}") from exc
    if size is not None and len(raw) != size:
        raise InvalidEnvelope(f"{name} has {len(raw)} bytes, expected {size}")
    return raw


def _check_recipient(entry: object) -> str:
    if not isinstance(entry, Mapping) or set(entry) != {"header", "encrypted_key"}:
        raise InvalidEnvelope("recipient entry must have exactly 'header' and 'encrypted_key'")
    header = entry["header"]
    if not isinstance(header, Mapping) or set(header) != {"alg", "kid", "epk"}:
        raise InvalidEnvelope("recipient header must have exactly 'alg', 'kid' and 'epk'")
    if header["alg"] != ENCRYPTION_ALG:
        raise InvalidEnvelope("recipient alg is not ECDH-ES+A256KW")
    kid = header["kid"]
    if not isinstance(kid, str) or not 0 < len(kid) <= 128:
        raise InvalidEnvelope("recipient kid is not a short string")
    epk = header["epk"]
    if not isinstance(epk, Mapping) or set(epk) != _EPK_MEMBERS:
        raise InvalidEnvelope("epk must be a public P-256 JWK")
    if epk["kty"] != "EC" or epk["crv"] != "P-256":
        raise InvalidEnvelope("epk is not on P-256")
    try:
        validate_p256_point(epk)
    except KeysError as exc:
        raise InvalidEnvelope("epk is not a valid P-256 point") from exc
    _b64_member(entry["encrypted_key"], "encrypted_key", _WRAPPED_KEY_BYTES)
    return kid


def _check_jwe_shape(jwe: Mapping[str, Any], *, ciphertext: bool) -> tuple[str, ...]:
    """Everything about a sealed bundle that needs no key; returns the recipient kids.
    ``ciphertext``: also decode the ciphertext (decryption does that anyway)."""
    if set(jwe) != _JWE_MEMBERS:
        raise InvalidEnvelope("sealed bundle members are not exactly the JWE general ones")
    protected_raw = _b64_member(jwe["protected"], "protected")
    try:
        protected = strictjson.loads_object(protected_raw, max_bytes=2048, max_depth=2)
    except KeysError as exc:
        raise InvalidEnvelope(f"protected header: {exc.detail}") from exc
    if protected != _JWE_PROTECTED:
        raise InvalidEnvelope("protected header is not that of a sealed bundle")
    _b64_member(jwe["iv"], "iv", 12)
    _b64_member(jwe["tag"], "tag", 16)
    if ciphertext:
        _b64_member(jwe["ciphertext"], "ciphertext")
    recipients = jwe["recipients"]
    if not isinstance(recipients, list) or not 0 < len(recipients) <= _MAX_RECIPIENTS:
        raise InvalidEnvelope("bad recipients array")
    kids = tuple(_check_recipient(entry) for entry in recipients)
    if len(set(kids)) != len(kids):
        raise InvalidEnvelope("two recipient entries name one key")
    return kids


# --------------------------------------------------------------------------- the checks


@dataclass(frozen=True, slots=True)
class _Bundle:
    """A bundle as far as it could be opened."""

    opened: OpenedBundle | None
    encrypted: bool
    recipients: tuple[str, ...] = ()
    opened_with: tuple[str, ...] = ()


@dataclass(slots=True)
class _Verifier:
    gateway_keys: KeySet
    operator_keys: KeyDirectory | KeySet | None
    operator_private: PrivateKeySet | None
    now: float
    queue_operators: Mapping[str, Collection[str]] | None
    unchecked: list[str] = field(default_factory=list)

    # ------------------------------------------------------------ artifacts
    def export(
        self, export: HandoffExport, expect_conversation: str | None, expect_queue: str | None
    ) -> VerificationReport:
        bundle = self._open(export.bundle)
        queue, conversation = self._placement(bundle, export.queue, export.conversation)
        _expect(expect_queue, queue, "queue")
        _expect(expect_conversation, conversation, "conversation")
        opened = bundle.opened
        events = self._lifecycle(export.events, opened)
        decision = self._recorded_decision(export.decision, events, opened, queue)
        bundle_id = opened.bundle.bundle_id if opened else events[0].bundle_id
        return self._report(
            kind="export",
            bundle_id=bundle_id,
            bundle=bundle,
            queue=queue,
            conversation=conversation,
            events=events,
            decision=decision,
        )

    def bare_bundle(
        self,
        value: str | Mapping[str, Any],
        expect_conversation: str | None,
        expect_queue: str | None,
    ) -> VerificationReport:
        bundle = self._open(value)
        opened = bundle.opened
        if opened is None:
            raise NotRecipient("an encrypted bundle on its own needs an operator key to verify")
        queue, conversation = opened.bundle.queue, opened.bundle.conversation
        _expect(expect_queue, queue, "queue")
        _expect(expect_conversation, conversation, "conversation")
        self.unchecked.append("lifecycle and decision: a bare bundle carries neither")
        bundle_id = opened.bundle.bundle_id
        return self._report(
            kind="bundle",
            bundle_id=bundle_id,
            bundle=bundle,
            queue=queue,
            conversation=conversation,
            events=(),
            decision=None,
        )

    def bare_decision(self, token: str) -> VerificationReport:
        signing = _keys_of_use(self.operator_keys, encryption=False)
        if signing is None:
            raise UnknownKeyId("no operator public keys to verify a decision with")
        payload, kid = self._signed_decision(token, signing)
        decision = _parse_decision(payload)
        self._check_owner(decision, kid)
        _check_freshness(decision, at=self.now)
        self.unchecked.append(
            "the bundle digest, version and fencing token it names: verify the export"
        )
        return VerificationReport(
            kind="decision",
            bundle_id=decision.bundle_id,
            content_checked=False,
            decision=_summary(decision, kid),
            unchecked=tuple(self.unchecked),
        )

    # ------------------------------------------------------------ bundle
    def _open(self, value: str | Mapping[str, Any]) -> _Bundle:
        if isinstance(value, str):
            opened = verify_bundle_jws(value, self.gateway_keys)
            self._check_created(opened)
            return _Bundle(opened=opened, encrypted=False)
        recipients = _check_jwe_shape(value, ciphertext=self.operator_private is None)
        known = _keys_of_use(self.operator_keys, encryption=True)
        if known is not None:
            strangers = [kid for kid in recipients if kid not in known]
            if strangers:
                raise BindingMismatch(f"bundle encrypted to keys of no known operator: {strangers}")
        else:
            self.unchecked.append("that every recipient is a known operator (no operator keys)")
        if self.operator_private is None:
            self.unchecked.append(
                "bundle content (transcript chain, digests, queue, conversation) and the "
                "decision's bundle digest: encrypted, and no operator key was given"
            )
            return _Bundle(opened=None, encrypted=True, recipients=recipients)
        held = (self.operator_private.active, *self.operator_private.retired)
        mine = [key for key in held if key.kid in recipients]
        if not mine:
            raise NotRecipient("none of the given operator keys is a recipient of this bundle")
        plaintexts = []  # compared, not hashed into a set: megabytes each
        for key in mine:
            with translating():
                plaintexts.append(
                    decrypt(
                        value, key, typ=BUNDLE_JWE_TYP, max_bytes=MAX_BUNDLE_BYTES * 2
                    ).plaintext
                )
        if any(other != plaintexts[0] for other in plaintexts[1:]):  # pragma: no cover
            raise InvalidEnvelope("recipient entries open to different plaintexts")
        opened = verify_bundle_jws(plaintexts[0], self.gateway_keys)
        self._check_created(opened)
        unopened = len(recipients) - len(mine)
        if unopened:
            self.unchecked.append(
                f"{unopened} recipient entr{'y' if unopened == 1 else 'ies'} no given key opens "
                "(JWE per-recipient headers are unauthenticated, RFC 7516 s7.2.1): shape only"
            )
        return _Bundle(
            opened=opened,
            encrypted=True,
            recipients=recipients,
            opened_with=tuple(key.kid for key in mine),
        )

    def _check_created(self, opened: OpenedBundle) -> None:
        if opened.bundle.created_at > math.floor(self.now) + SKEW_S:
            raise NotYetValid("bundle created in the future")

    def _placement(self, bundle: _Bundle, queue: str, conversation: str) -> tuple[str, str]:
        """Queue and conversation: the signed ones, which the stated ones must equal."""
        if bundle.opened is None:
            return queue, conversation
        signed = bundle.opened.bundle
        if queue != signed.queue:
            raise BindingMismatch("the export states another queue than the signed bundle")
        if conversation != signed.conversation:
            raise BindingMismatch("the export states another conversation than the signed bundle")
        return signed.queue, signed.conversation

    # ------------------------------------------------------------ lifecycle
    def _lifecycle(
        self, tokens: Sequence[str], opened: OpenedBundle | None
    ) -> list[LifecycleEvent]:
        with translating():
            first = verify_compact(tokens[0], self.gateway_keys, typ=EVENT_TYP)
        owner = LifecycleEvent.parse(first.payload).bundle_id
        if opened is not None and owner != opened.bundle.bundle_id:
            raise BindingMismatch("the lifecycle is another bundle's")
        if opened is None:
            self.unchecked.append(
                "that the lifecycle and decision belong to this ciphertext (bundle id "
                "taken from the lifecycle)"
            )
        events, _ = verify_events(tokens, self.gateway_keys, bundle_id=owner)
        for token, event in zip(tokens, events, strict=True):
            if _jws_payload(token) != event.canonical():
                raise InvalidArtifact(f"lifecycle event {event.seq} is not in canonical form")
        if opened is not None and any(e.version > opened.bundle.version for e in events):
            raise BindingMismatch("a lifecycle event names a later version of the bundle")
        if events[-1].ts > (math.floor(self.now) + SKEW_S) * 1000:
            raise NotYetValid("lifecycle event recorded in the future")
        return events

    # ------------------------------------------------------------ decision
    def _recorded_decision(
        self,
        token: str | None,
        events: Sequence[LifecycleEvent],
        opened: OpenedBundle | None,
        queue: str,
    ) -> DecisionSummary | None:
        decided = next((event for event in events if event.type == "decided"), None)
        if token is None:
            if decided is not None:
                raise BindingMismatch("the lifecycle records a decision the export does not carry")
            return None
        if decided is None:
            raise BindingMismatch("the export carries a decision its lifecycle does not record")
        signing = _keys_of_use(self.operator_keys, encryption=False)
        signed = self._signed_decision(token, signing) if signing is not None else None
        if decision_digest(token) != decided.decision_digest:
            raise BindingMismatch("the decision is not the one the gateway recorded")
        if signed is None:
            # The gateway-signed event vouches for these exact bytes.
            _decision_header_typ(token)
            payload, kid = _jws_payload(token), None
            self.unchecked.append("the operator's signature on the decision (no operator keys)")
        else:
            payload, kid = signed
        decision = _parse_decision(payload)
        if kid is not None:
            self._check_owner(decision, kid)
        _check_binding(
            decision,
            bundle_id=decided.bundle_id,
            bundle=opened,
            fencing_token=decided.fencing_token,
        )
        # Valid when the gateway recorded it; an export is read long after.
        _check_freshness(decision, at=decided.ts / 1000)
        if decided.actor != decision.operator:
            raise BindingMismatch("decided by someone other than the lease holder")
        if opened is not None:
            _check_request(decision, opened.bundle.request)
        self._check_membership(decision, queue)
        return _summary(decision, kid)

    def _signed_decision(self, token: str, signing: KeySet) -> tuple[bytes, str]:
        with translating():
            verified = verify_compact(token, signing, typ=DECISION_TYP)
        return verified.payload, verified.key.kid

    def _check_owner(self, decision: HandoffDecision, kid: str) -> None:
        if isinstance(self.operator_keys, KeyDirectory):
            if self.operator_keys.owner_of(kid) != decision.operator:
                raise IdentityMismatch("decision signed by a key that is not the operator's")
        else:
            self.unchecked.append("which operator owns the decision key (keys not attributed)")

    def _check_membership(self, decision: HandoffDecision, queue: str) -> None:
        if self.queue_operators is None:
            self.unchecked.append("that the deciding operator serves the queue")
        elif decision.operator not in self.queue_operators.get(queue, ()):
            raise PolicyDenied(f"{decision.operator} does not serve queue {queue!r}")

    # ------------------------------------------------------------ report
    def _report(
        self,
        *,
        kind: Literal["export", "bundle"],
        bundle_id: str,
        bundle: _Bundle,
        queue: str,
        conversation: str,
        events: Sequence[LifecycleEvent],
        decision: DecisionSummary | None,
    ) -> VerificationReport:
        opened = bundle.opened
        content = opened.bundle if opened else None
        return VerificationReport(
            kind=kind,
            bundle_id=bundle_id,
            content_checked=opened is not None,
            encrypted=bundle.encrypted,
            queue=queue,
            conversation=conversation,
            bundle_digest=opened.bundle_digest if opened else None,
            bundle_version=content.version if content else None,
            gateway_kid=opened.signer_kid if opened else None,
            transcript_entries=len(content.transcript) if content else None,
            transcript_head=content.integrity.transcript_head if content else None,
            recipients=bundle.recipients,
            opened_with=bundle.opened_with,
            events=tuple(event.type for event in events),
            decision=decision,
            unchecked=tuple(dict.fromkeys(self.unchecked)),
        )


def _expect(expected: str | None, actual: str, what: str) -> None:
    if expected is not None and expected != actual:
        raise BindingMismatch(f"the bundle is for {what} {actual!r}, not {expected!r}")


def _parse_decision(payload: bytes) -> HandoffDecision:
    decision = HandoffDecision.parse(payload)
    if decision.canonical() != payload:
        raise InvalidArtifact("decision payload is not in canonical form")
    return decision


def _check_binding(
    decision: HandoffDecision,
    *,
    bundle_id: str,
    bundle: OpenedBundle | None,
    fencing_token: int | None,
) -> None:
    """The binding of :func:`protocol.decision.verify_decision_at`, with the
    fencing token the gateway recorded and, when readable, the bundle itself."""
    if decision.bundle_id != bundle_id:
        raise BindingMismatch("decision is about another bundle")
    if bundle is not None:
        if decision.bundle_digest != bundle.bundle_digest:
            raise BindingMismatch("decision is about another bundle digest")
        if decision.bundle_version != bundle.bundle.version:
            raise StaleDecision("decision is for another bundle version")
    if decision.fencing_token != fencing_token:
        raise StaleDecision("decision was made under another lease than the one recorded")


def _check_freshness(decision: HandoffDecision, *, at: float) -> None:
    at_s = math.floor(at)
    if at_s >= decision.exp:
        raise TokenExpired("decision expired")
    if decision.iat > at_s + SKEW_S:
        raise NotYetValid("decision issued in the future")


def _check_request(decision: HandoffDecision, request: HandoffRequest) -> None:
    """Allowed type and arguments, as :func:`protocol.decision.verify_decision_at`."""
    body = decision.decision
    if body.type not in request.allowed_decisions:
        raise PolicyDenied(f"decision {body.type!r} is not allowed for this handoff")
    action = request.requested_action
    if body.type == "approve" and action is not None and action.args_digest is not None:
        if body.args_digest not in (None, action.args_digest):
            raise BindingMismatch("approval names other arguments")
    if body.type == "edit" and action is not None and body.args_digest == action.args_digest:
        raise BindingMismatch("an edit must change the arguments")


def _summary(decision: HandoffDecision, kid: str | None) -> DecisionSummary:
    return DecisionSummary(
        type=decision.decision.type,
        operator=decision.operator,
        signer_kid=kid,
        bundle_digest=decision.bundle_digest,
        bundle_version=decision.bundle_version,
        fencing_token=decision.fencing_token,
        nonce=decision.nonce,
        iat=decision.iat,
        exp=decision.exp,
    )


# --------------------------------------------------------------------------- keys (files)


@dataclass(frozen=True, slots=True)
class VerificationKeys:
    """Public keys for :func:`verify_artifact`, read from a ``baton init`` folder."""

    gateway: KeySet
    operators: KeyDirectory | None
    queue_operators: Mapping[str, frozenset[str]]


def load_verification_keys(root: Path) -> VerificationKeys:
    """Gateway keys from ``.baton/gateway/jwks.json``; each configured
    operator's public keys from ``.baton/operators/<name>/public.jwks``
    (operators without a key folder are skipped: their decisions then fail
    ``unknown_kid``); queue membership from ``[[operators]]``."""
    config = load_config(root / "baton.toml")
    data = root / config.data_dir
    gateway = load_jwks(data / "gateway" / "jwks.json")
    directory: dict[str, KeySet] = {}
    members: dict[str, set[str]] = {}
    for operator in config.operators:
        identity = str(OperatorId(operator.name))
        for queue in operator.queues:
            members.setdefault(queue, set()).add(identity)
        path = data / "operators" / validate_name(operator.name) / "public.jwks"
        if path.is_file():
            directory[identity] = load_jwks(path)
    return VerificationKeys(
        gateway=gateway,
        operators=KeyDirectory(directory) if directory else None,
        queue_operators={queue: frozenset(ids) for queue, ids in members.items()},
    )
