"""Fast paths in protocol/ (issue 5), each checked against the code it replaced.

The references below are the straightforward versions, kept here as oracles:
JCS of the whole value (``canonical_json``, itself checked against
``rfc8785``), the pairwise overlap test and the generic pointer walk of
``pii``, the per-record hash of ``chain``, and ``build_bundle`` /
``verify_bundle_jws`` as they were before bundles were serialised once
(validate, mask, digest, validate again, verify everything from the model).

Second round: :func:`~protocol.canonical.canonical_each` (pydantic-core's
serialiser on a sorted copy) against ``canonical_json`` of each value, on
every code point and on values either side of each of its checks; the
strict parse a canonical bundle payload skips, against ``HandoffBundle.parse``
and the canonical-form check on adversarial payloads (error and message);
the batched entry, body and record serialisation; ``*`` pointers and masking
in place against the generic walk and ``_replace``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from typing import Any

import pydantic_core
import pytest
import rfc8785
from hypothesis import example, given
from hypothesis import strategies as st

from keys import strictjson
from keys.b64 import b64url_decode, b64url_encode
from keys.errors import KeysError, TooDeep
from keys.jose import sign_compact, verify_compact
from keys.keyset import KeySet
from keys.material import PrivateKey
from protocol import bundle as bundle_module
from protocol import canonical as canonical_module
from protocol import pii as pii_module
from protocol.bundle import (
    BUNDLE_JWS_TYP,
    MAX_BUNDLE_BYTES,
    BuiltBundle,
    Correlation,
    HandoffBundle,
    RecordedBody,
    agent_views,
    build_bundle,
    seal_bundle,
    verify_bundle_jws,
    verify_integrity,
)
from protocol.canonical import (
    canonical_digest,
    canonical_each,
    canonical_json,
    canonical_members,
    canonical_object,
    canonical_string,
    digest,
)
from protocol.chain import GENESIS, verify_links
from protocol.errors import (
    BatonError,
    BindingMismatch,
    ChainBreak,
    DigestInvalid,
    InvalidArtifact,
    from_keys_error,
)
from protocol.handoff import HandoffRequest
from protocol.pii import mask, resolve
from protocol.transcript import TranscriptEntry
from tests.protocol._support import (
    ALPHA,
    BETA,
    CONVERSATION,
    DETERMINISTIC,
    GATEWAY,
    NOW,
    build_chain,
    counting_salts,
    entry_fields,
    json_text,
    json_values,
    raises_exactly,
)
from tests.protocol.test_handoff_bundle import BODIES, FULL_PII, conversation, request_doc

# --------------------------------------------------------------------------- canonical

#: Names that stress s3.2.3 ordering and escaping.
_NAMES = (
    st.sampled_from(
        [
            "",
            "a",
            "json",
            "json_digest",
            "\uff61",
            "\ufffd",
            "\U0001f600",
            "\U00010000",
            "\x00",
            '"',
        ]
    )
    | json_text
)


@DETERMINISTIC
@given(st.dictionaries(_NAMES, json_values, max_size=8), st.lists(st.booleans(), min_size=8))
@example({"\uff61": 1, "\U0001f600": 2, "z": [1.5], "\ufffd": "\U00010000"}, [True, False] * 4)
@example({"a": 1, "json": 2, "json_digest": 3}, [False, True, False] * 3)
def test_canonical_object_is_canonical_json_of_the_whole(
    value: dict[str, Any], picks: list[bool]
) -> None:
    """Any split of an object's members into plain and pre-serialised ones."""
    chosen = {name for name, pick in zip(sorted(value), picks, strict=False) if pick}
    plain = {k: v for k, v in value.items() if k not in chosen}
    serialised = {k: canonical_json(value[k]) for k in chosen}
    assert canonical_object(plain, serialised) == canonical_json(value)
    assert canonical_object(value, {}) == canonical_json(value)
    # The same as fragments (values split anywhere), and each serialised
    # member's span: without it, the canonical form of the rest.
    pieces = {k: (v[: len(v) // 2], v[len(v) // 2 :]) for k, v in serialised.items()}
    fragments, spans = canonical_members(plain, pieces)
    assert b"".join(fragments) == canonical_json(value)
    assert spans.keys() == serialised.keys()
    for name, (start, end) in spans.items():
        rest = {k: v for k, v in value.items() if k != name}
        assert b"".join(fragments[:start] + fragments[end:]) == canonical_json(rest)


def test_canonical_object_refuses_a_member_given_twice() -> None:
    with raises_exactly(InvalidArtifact):
        canonical_object({"a": 1}, {"a": b"1"})


@DETERMINISTIC
@given(json_text | st.sampled_from(["\ud800", "a\udfff", '"\\\x1f\u2028']))
@example("")
@example("\x7f")
@example("plain ASCII, printable: ~!#$%&'()*+,-./:;<=>?@[]^_`{|}")
@example('a"b')
@example("a\\b")
@example("\x1f")
@example("A" * 100_000)
def test_canonical_string_is_canonical_json_of_the_string(text: str) -> None:
    try:
        expected = canonical_json(text)
    except InvalidArtifact:
        with raises_exactly(InvalidArtifact):
            canonical_string(text)
    else:
        assert canonical_string(text) == expected == bytes(rfc8785.dumps(text))


_OLD_SLOW_AFTER_SEPARATOR = re.compile(rb"[:\[,]" + canonical_module._SLOW_DIGITS)


def _old_has_slow_number(encoded: bytes) -> bool:
    """The scan before the separators were mapped to ":" (the oracle)."""
    if canonical_module._SLOW_AT_START.match(encoded):
        return True
    for match in _OLD_SLOW_AFTER_SEPARATOR.finditer(encoded):
        start = match.start()
        if encoded[start] != 0x3A or encoded[start - 1] == 0x22:
            return True
    return False


_NUMBERISH = st.lists(
    st.sampled_from([b":", b"[", b",", b'"', b'":', b"-", b"1", b"0", b".", b"e", b"E", b"x"])
    | st.just(b"1234567890123456"),
    max_size=30,
).map(b"".join)


@DETERMINISTIC
@given(_NUMBERISH | json_values.map(canonical_json))
@example(b'{"a":1.5}')
@example(b'"sha256:1e5"')
@example(b"[1,12345678901234567]")
@example(b'{"a":[1e-7]}')
def test_slow_number_scan_agrees_with_the_class_scan(encoded: bytes) -> None:
    assert canonical_module._has_slow_number(encoded) == _old_has_slow_number(encoded)


def test_characters_outside_the_bmp_alone_stay_on_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a non-BMP character together with one in U+E000-U+FFFF can order
    keys differently; an emoji in a message body (or a key) alone does not."""
    alone = {"text": "refund \U0001f600", "\U0001f600": 1, "a": "\u20ac", "z": ["\U00010000"]}
    expected = bytes(rfc8785.dumps(alone))

    def refuse(value: Any) -> bytes:
        raise AssertionError("reference path taken")

    monkeypatch.setattr(canonical_module.rfc8785, "dumps", refuse)
    assert canonical_json(alone) == expected


@pytest.mark.parametrize(
    "value",
    [
        {"\uff61": 1, "\U0001f600": 2},
        {"\ue000": 1, "\U00010000": 2, "\ud7ff": 3},
        {"k": {"\uffff": 0, "\U0010ffff": 1}},
        [{"\U0001f600": 1}, {"\uef00": 2, "\ue001": 3}],  # in different objects: still exact
    ],
)
def test_non_bmp_with_high_bmp_characters_take_the_reference_path(value: Any) -> None:
    assert canonical_json(value) == bytes(rfc8785.dumps(value))


# --------------------------------------------------------------------------- pii


def _old_resolve(document: Any, pointer: str) -> list[tuple[str, Any]]:
    """The generic walk, for every pointer (the oracle of the no-``*`` path)."""
    matches: list[tuple[str, Any]] = [("", document)]
    for segment in pii_module._split(pointer):
        matches = [
            (f"{path}/{escaped}", child)
            for path, node in matches
            for escaped, child in pii_module._children(node, segment)
        ]
    return matches


_SEGMENTS = st.sampled_from(["a", "b", "0", "1", "01", "-", "a~1b", "c~0d", "", "x", "\u0661"])
_POINTERS = st.lists(_SEGMENTS, max_size=4).map(lambda s: "".join("/" + x for x in s))
_TREE: dict[str, Any] = {
    "a": {"b": [1, {"a": None}], "0": "zero", "": {"": 1}},
    "b": [[0, 1], {"a/b": 2, "c~d": 3}],
    "a/b": {"x": True},
    "x": [None, "y"],
}


@DETERMINISTIC
@given(_POINTERS)
@example("")
@example("/a/b/1/a")
@example("/b/1/a~1b")
@example("/b/0/\u0661")
@example("/a/")
def test_resolve_without_a_star_agrees_with_the_generic_walk(pointer: str) -> None:
    assert resolve(_TREE, pointer) == _old_resolve(_TREE, pointer)


_MASKABLE = {
    "a": {"b": {"c": "1", "d": "2"}, "e": ["3", "4", {"f": "5"}]},
    "g": {"h": "6"},
    "a~b": {"c/d": "7"},
}
_MASK_POINTERS = st.sampled_from(
    [
        "/a",
        "/a/b",
        "/a/b/c",
        "/a/b/d",
        "/a/e",
        "/a/e/0",
        "/a/e/2/f",
        "/a/e/*",
        "/a/*/c",
        "/g/h",
        "/g",
        "/*/h",
        "/a~0b/c~1d",
        "/a~0b",
        "/ab",
    ]
)


def _reference_mask(document: Any, pointers: list[str]) -> list[str]:
    """mask()'s loop before issue 5, with the pairwise overlap test; returns
    the masked paths in order (values are replaced by a marker)."""
    seen: list[str] = []
    for pointer in pointers:
        wildcard = "*" in pii_module._split(pointer)
        matches = _old_resolve(document, pointer)
        if not matches and not wildcard:
            raise InvalidArtifact(f"PII path {pointer!r} does not resolve")
        for path, value in matches:
            if path in seen or (wildcard and value is None):
                continue
            if any(pii_module._nested(path, other) for other in seen):
                raise InvalidArtifact(f"PII path {path!r} overlaps another masked path")
            seen.append(path)
            pii_module._replace(document, path, "<masked>")
    return seen


@DETERMINISTIC
@given(st.lists(_MASK_POINTERS, max_size=6))
@example(["/a/b", "/a/b/c"])
@example(["/a/b/c", "/a/b"])
@example(["/a/b", "/a/bc"])
@example(["/a~0b/c~1d", "/a~0b"])
@example(["/a/e/*", "/a"])
def test_overlap_check_agrees_with_the_pairwise_test(pointers: list[str]) -> None:
    """mask() refuses, or masks, exactly as with the pairwise ``_nested`` test."""
    old, expected = _outcome(lambda: _reference_mask(copy.deepcopy(_MASKABLE), pointers))
    new, result = _outcome(
        lambda: mask(copy.deepcopy(_MASKABLE), pointers, token_bytes=counting_salts())
    )
    assert new == old
    if new == "ok":
        assert [field.path for field in result.masked] == expected


def test_ancestors() -> None:
    assert pii_module._ancestors("/a/b~1c/d") == ["", "/a", "/a/b~1c"]
    assert pii_module._ancestors("") == []
    assert pii_module._ancestors("/") == [""]


def test_masking_a_thousand_fields_is_linear() -> None:
    """1,024 masked paths (the cap): the old pairwise test made 0.5 M calls."""
    document = {"rows": [{"email": f"user{i}@example.com"} for i in range(1024)]}
    result = mask(document, ["/rows/*/email"], token_bytes=counting_salts())
    assert len(result.masked) == 1024
    assert document["rows"][1023]["email"] == "<PII_1024>"


# --------------------------------------------------------------------------- chain


def test_verify_links_with_precomputed_hashes() -> None:
    chain = build_chain(CONVERSATION, [entry_fields(ALPHA, BETA), entry_fields(BETA, ALPHA)])
    hashes = [entry.compute_hash() for entry in chain]
    assert verify_links(chain, hashes=hashes) == verify_links(chain)
    with raises_exactly(ChainBreak):
        verify_links(chain, hashes=[hashes[0], digest(b"other")])
    with raises_exactly(InvalidArtifact):
        verify_links(chain, hashes=hashes[:1])


# --------------------------------------------------------------------------- bundle parts

#: Strings that could fool a byte search for ``,"kind":`` or ``"hash":``.
_TRAPS = [
    ',"kind":',
    '","kind":"x',
    '"hash":"sha256:',
    ',"hash":',
    "\\",
    '\\",\\"kind\\":',
    "}",
    "\U0001f600",
    "\uffff",
    "\x00\x1f",
]


def _trap_entries() -> list[TranscriptEntry]:
    messages = []
    for i, trap in enumerate(_TRAPS):
        fields = entry_fields(ALPHA, BETA, method=trap, rpc_id=trap if i % 2 else i, signer=trap)
        messages.append(fields)
    return build_chain(f"ctx{_TRAPS[0]}{_TRAPS[3]}", messages)


def test_entry_forms_are_the_two_serialisations() -> None:
    for entry in _trap_entries():
        document = entry.to_json()
        without = {k: v for k, v in document.items() if k != "hash"}
        hashed, full = bundle_module._entry_forms(document)
        assert hashed == canonical_json(without)
        assert full == canonical_json(document) == entry.canonical()
        assert digest(hashed) == entry.hash == entry.compute_hash()


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("kind"),
        lambda d: d.update(extra=1),
        lambda d: d.update(method={"nested": ',"kind":'}),
        lambda d: d.update(status=1.5),
        lambda d: d.update(hash=7),
        lambda d: d.update(id="sorts between hash and kind"),
    ],
)
def test_entry_forms_of_anything_else_are_still_exact(
    change: Callable[[dict[str, Any]], Any],
) -> None:
    document = _trap_entries()[1].to_json()
    change(document)
    hashed, full = bundle_module._entry_forms(document)
    assert hashed == canonical_json({k: v for k, v in document.items() if k != "hash"})
    assert full == canonical_json(document)


@pytest.mark.parametrize(
    "record",
    [
        {
            "seq": 1,
            "media_type": '","json":',
            "json": {"a": [1]},
            "json_digest": GENESIS,
            "raw": None,
        },
        {"seq": 2, "media_type": "text/plain", "json": None, "json_digest": None, "raw": "aGk"},
        {
            "seq": 3,
            "media_type": "x",
            "json": "\U0001f600\uffff",
            "json_digest": GENESIS,
            "raw": None,
        },
        {"seq": 4, "json": 1, "media_type": "y"},  # other names: the general path
        {"seq": 5, "json": [], "a": 1, "media_type": "y", "json_digest": None, "raw": None},
    ],
)
def test_record_bytes(record: dict[str, Any]) -> None:
    assert bundle_module._record_bytes(record, canonical_json(record["json"])) == canonical_json(
        record
    )


def test_json_sorts_first_among_body_members() -> None:
    assert bundle_module._JSON_FIRST
    assert {"seq", "media_type", "json", "json_digest", "raw"} == bundle_module._BODY_NAMES
    assert RecordedBody.model_fields["json_"].alias == "json"


@DETERMINISTIC
@given(
    st.lists(st.sampled_from([",", '"', "/", "0", "bodies", "json", "request"]), max_size=6).map(
        "/".join
    )
)
@example("/bodies/1/json")
@example("/bodies/1/json/")
@example("/bodies/1/jsonx")
@example("/bodies/01/json/a")
@example("bodies/1/json")
def test_masked_body_index(path: str) -> None:
    found = bundle_module._bodies_with_masked_json([path])
    for index in range(3):
        content = f"/bodies/{index}/json"
        old = path == content or path.startswith(content + "/")
        assert (str(index) in found) == old


# --------------------------------------------------------------------------- bundles: reference


def _reference_record(entry: TranscriptEntry, media_type: str, body: bytes) -> dict[str, Any]:
    if entry.body_digest != digest(body):
        raise DigestInvalid("body does not match its digest")
    record: dict[str, Any] = {"seq": entry.seq, "media_type": media_type}
    if media_type.split(";", maxsplit=1)[0].strip().lower().endswith("json"):
        try:
            parsed = strictjson.loads(body, max_bytes=MAX_BUNDLE_BYTES)
            return {**record, "json_digest": canonical_digest(parsed), "json": parsed}
        except (KeysError, InvalidArtifact):
            pass
    record["raw"] = b64url_encode(body)
    return record


def _reference_content_digest(document: dict[str, Any]) -> str:
    return canonical_digest({k: v for k, v in document.items() if k != "integrity"})


def reference_build(
    *,
    request: HandoffRequest,
    transcript: list[TranscriptEntry],
    bodies: dict[int, tuple[str, bytes]],
    token_bytes: Callable[[int], bytes],
    origin: str = ALPHA,
) -> HandoffBundle:
    """build_bundle before issue 5: validate, mask, digest, validate again, verify."""
    head = verify_links(transcript, scope=CONVERSATION)
    by_seq = {entry.seq: entry for entry in transcript}
    recorded = [
        _reference_record(by_seq[seq], media_type, body)
        for seq, (media_type, body) in sorted(bodies.items())
    ]
    sla = request.sla
    draft: dict[str, Any] = {
        "schema": "baton.handoff-bundle/v1",
        "bundle_id": BUNDLE_ID,
        "version": 1,
        "created_at": NOW,
        "ack_by": NOW + sla.ack_within_s if sla.ack_within_s else None,
        "resolve_by": NOW + sla.resolve_within_s,
        "queue": "payments-t2",
        "conversation": CONVERSATION,
        "origin": origin,
        "gateway": GATEWAY,
        "request": request.to_json(),
        "correlation": Correlation().to_json(),
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
    document = HandoffBundle.from_value(draft).to_json()
    masked = mask(document, request.pii_paths, token_bytes=token_bytes)
    document["masked"] = [field.to_json() for field in masked.masked]
    document["integrity"]["content_digest"] = _reference_content_digest(document)
    bundle = HandoffBundle.from_value(document)
    reference_verify(bundle)
    return bundle


def reference_verify(bundle: HandoffBundle) -> None:
    """verify_integrity before issue 5 (every digest from the model, the
    masked-path scan per body, the generic pointer walk)."""
    verify_links(bundle.transcript, scope=bundle.conversation, expected_head=bundle.head)
    document = bundle.to_json()
    if _reference_content_digest(document) != bundle.integrity.content_digest:
        raise DigestInvalid("content digest does not match the bundle")
    by_seq = {entry.seq: entry for entry in bundle.transcript}
    masked_paths = [field.path for field in bundle.masked]
    for index, body in enumerate(bundle.bodies):
        entry = by_seq.get(body.seq)
        if entry is None:
            raise BindingMismatch("body for an entry not in the transcript")
        if body.raw is not None:
            try:
                raw = b64url_decode(body.raw)
            except KeysError as exc:
                raise InvalidArtifact("raw body is not base64url") from exc
            if digest(raw) != entry.body_digest:
                raise DigestInvalid("raw body does not match its entry")
            continue
        content = f"/bodies/{index}/json"
        partly = any(p == content or p.startswith(content + "/") for p in masked_paths)
        if not partly and canonical_digest(body.json_) != body.json_digest:
            raise DigestInvalid("JSON body does not match its digest")
    if bundle.agent_views != agent_views(bundle.transcript):
        raise BindingMismatch("agent views are not those of the transcript")
    for field in bundle.masked:
        if [value for _, value in _old_resolve(document, field.path)] != [field.token]:
            raise DigestInvalid("masked path does not show its token")


def reference_verify_jws(token: str, gateway_keys: KeySet) -> None:
    verified = verify_compact(token, gateway_keys, typ=BUNDLE_JWS_TYP, max_bytes=MAX_BUNDLE_BYTES)
    bundle = HandoffBundle.parse(verified.payload, max_bytes=MAX_BUNDLE_BYTES)
    if bundle.canonical() != verified.payload:
        raise InvalidArtifact("bundle payload is not in canonical form")
    reference_verify(bundle)


BUNDLE_ID = "hb_01JABCDEFGHJKMNPQRS"


def _full_transcript() -> list[TranscriptEntry]:
    return conversation(with_bodies=True)


def _new_build(request: HandoffRequest, bodies: dict[int, tuple[str, bytes]]) -> BuiltBundle:
    return build_bundle(
        bundle_id=BUNDLE_ID,
        request=request,
        queue="payments-t2",
        conversation=CONVERSATION,
        origin=ALPHA,
        gateway=GATEWAY,
        transcript=_full_transcript(),
        bodies=bodies,
        now=NOW,
        token_bytes=counting_salts(),
    )


_PII_SETS = [
    [],
    ["/request/reason_text"],
    FULL_PII,
    ["/bodies/*/json"],
    ["/bodies/1/json/params/name", "/bodies/*/json/params/customer/email"],
    ["/request/requested_action/target", "/bodies/0/media_type"],  # a body member: general path
    ["/correlation/trace_id", "/request/reason_text"],  # outside request and bodies
    ["/bodies/3/raw"],  # a raw body masked: the record no longer validates
    ["/transcript/1/method"],  # breaks the chain
    ["/agent_views/0/agent"],  # not an identity any more
    ["/request/sla/resolve_within_s"],  # not an integer any more
    ["/*/trace_id"],
]


def _outcome(make: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", make()
    except BatonError as exc:
        return type(exc).__name__, None


@pytest.mark.parametrize("pii", _PII_SETS, ids=[",".join(p) or "none" for p in _PII_SETS])
def test_build_agrees_with_the_reference_build(pii: list[str]) -> None:
    request = HandoffRequest.from_value(request_doc(pii_paths=pii))
    new, built = _outcome(lambda: _new_build(request, BODIES))
    old, reference = _outcome(
        lambda: reference_build(
            request=request,
            transcript=_full_transcript(),
            bodies=BODIES,
            token_bytes=counting_salts(),
        )
    )
    assert new == old
    if new == "ok":
        assert built.bundle == reference
        assert built.payload == reference.canonical() == canonical_json(built.bundle.to_json())
        verify_integrity(built.bundle)


def test_seal_signs_the_payload_serialised_while_building(
    gateway_key: PrivateKey, alice_enc: Any
) -> None:
    built = _new_build(HandoffRequest.from_value(request_doc(pii_paths=FULL_PII)), BODIES)
    sealed = seal_bundle(built, gateway_key=gateway_key, recipients=[alice_enc.active.public])
    assert sealed.bundle_digest == digest(built.bundle.canonical())
    unmemoised = BuiltBundle(bundle=built.bundle, reveals=built.reveals)
    again = seal_bundle(unmemoised, gateway_key=gateway_key, recipients=[alice_enc.active.public])
    assert again.bundle_digest == sealed.bundle_digest


def test_parts_are_the_canonical_forms_of_a_tricky_bundle() -> None:
    body = b'{"\\u0000":"\\"kind\\":","k":[1,{"hash":"x"}],"\xf0\x9f\x98\x80":"\xef\xbf\xbf"}'
    transcript = build_chain(
        CONVERSATION,
        [
            {**entry_fields(ALPHA, BETA, method=trap), "body_digest": digest(body), "body_size": 1}
            for trap in _TRAPS
        ],
    )
    request = HandoffRequest.from_value(request_doc(pii_paths=["/bodies/2/json/k/1/hash"]))
    built = build_bundle(
        bundle_id=BUNDLE_ID,
        request=request,
        queue="payments-t2",
        conversation=CONVERSATION,
        origin=ALPHA,
        gateway=GATEWAY,
        transcript=transcript,
        bodies={i: ("application/json", body) for i in range(len(transcript))},
        now=NOW,
        token_bytes=counting_salts(),
    )
    document = built.bundle.to_json()
    parts = bundle_module._Parts.of(document)
    assert parts.payload(document) == canonical_json(document) == built.payload
    assert parts.content(document) == canonical_json(
        {k: v for k, v in document.items() if k != "integrity"}
    )
    assert parts.body_json == tuple(canonical_json(b["json"]) for b in document["bodies"])
    assert parts.entry_hashes == tuple(entry.hash for entry in transcript)


# --------------------------------------------------------------------------- verification sweep


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _leaves(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _leaves(child, (*path, index))
    else:
        yield path, value


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value[:-1] + ("0" if value[-1:] != "0" else "1") if value else "x"
    return 0


def _set(document: Any, path: tuple[Any, ...], value: Any) -> None:
    node = document
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


@pytest.fixture(scope="module")
def full_document() -> dict[str, Any]:
    built = _new_build(HandoffRequest.from_value(request_doc(pii_paths=FULL_PII)), BODIES)
    return built.bundle.to_json()


@pytest.mark.parametrize("recompute", [False, True], ids=["content digest kept", "recomputed"])
def test_every_changed_leaf_fails_as_the_reference_fails(
    full_document: dict[str, Any], gateway_key: PrivateKey, gateway_keys: KeySet, recompute: bool
) -> None:
    """Each leaf of a signed bundle changed in turn and re-signed with the real
    key: the single-pass verification gives the reference's outcome, error
    class included (the untouched document verifies on both)."""
    token = sign_compact(canonical_json(full_document), gateway_key, typ=BUNDLE_JWS_TYP)
    verify_bundle_jws(token, gateway_keys)
    reference_verify_jws(token, gateway_keys)
    leaves = list(_leaves(full_document))
    count = 0
    for path, value in leaves:
        document = copy.deepcopy(full_document)
        _set(document, path, _changed(value))
        if recompute:
            document["integrity"]["content_digest"] = _reference_content_digest(document)
        token = sign_compact(canonical_json(document), gateway_key, typ=BUNDLE_JWS_TYP)
        new, _ = _outcome(lambda token=token: verify_bundle_jws(token, gateway_keys))
        old, _ = _outcome(lambda token=token: reference_verify_jws(token, gateway_keys))
        assert new == old, path
        count += new != "ok"
    if recompute:  # re-signed with a fresh digest: only the other checks can fail
        assert 100 < count < len(leaves)
    else:  # the content digest covers every member but ``integrity``, which is checked too
        assert count == len(leaves) > 200


# --------------------------------------------------------------------------- second round


def _result(make: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", value) or (error class, message): the error *and* what it says."""
    try:
        return "ok", make()
    except BatonError as exc:
        return type(exc).__name__, str(exc)


class _Text(str):
    __slots__ = ()


class _Number(int):
    pass


#: Values either side of each check of canonical_each: not JSON, floats, the
#: integer range, lone surrogates, subclasses, planes, key types.
_AWKWARD = st.sampled_from(
    [
        (1, 2),
        {"a": (1,)},
        {1: "a"},
        {True: 1},
        {None: 1},
        {"a": 1, 2: "b"},
        b"x",
        {1, 2},
        float("nan"),
        float("inf"),
        -0.0,
        1.0,
        1e21,
        {"a": 1.5},
        2**53,
        2**53 + 1,
        -(2**53) - 1,
        10**15 - 1,
        -(10**15) + 1,
        10**15,
        -(10**15),
        1234567890123456,
        [0, 1234567890123456],
        {"k": -1234567890123456},
        "sha256:" + "1" * 64,
        {"k": "x:1234567890123456", "l": ",1234567890123456"},
        "\ud800",
        {"a": "\udfff"},
        {"\ud800": 1},
        _Text("s"),
        {"a": _Text("s")},
        {_Text("k"): 1},
        _Number(3),
        {"\uff61": 1, "\U0001f600": 2},
        [{"\U0001f600": 1}, {"\uef00": 2, "\ue001": 3}],
        {"\U0001f600": 1, "\u20ac": 2},
        {"z": {"y": {"x": [None, True, False, "", {}]}}},
        [[], {}, [[]], [{}]],
    ]
)


@DETERMINISTIC
@given(st.lists(json_values | _AWKWARD, max_size=6))
@example([{"b": 1, "a": {"d": [3, {"f": 1, "e": 2}], "c": None}}, "x", 1])
@example([GENESIS, {"prev": GENESIS}, 10**16])
def test_canonical_each_is_canonical_json_of_each(values: list[Any]) -> None:
    assert _result(lambda: canonical_each(values)) == _result(
        lambda: [canonical_json(value) for value in values]
    )


def test_canonical_each_writes_every_code_point_as_rfc8785() -> None:
    """pydantic-core escapes strings exactly as RFC 8785 s3.2.2.2: every
    character outside the surrogates, in values and (sorted across planes,
    which takes the reference path) in names."""
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    text = "".join(chars)
    assert pydantic_core.to_json(text) == bytes(rfc8785.dumps(text))
    assert canonical_each([text, [text]]) == [canonical_json(text), canonical_json([text])]
    names = {char: index for index, char in enumerate(chars[::97])}
    bmp = {char: index for index, char in enumerate(chars[:0xD800:7])}
    assert canonical_each([names, bmp]) == [canonical_json(names), canonical_json(bmp)]
    assert canonical_each([bmp])[0] == bytes(rfc8785.dumps(bmp))


def test_canonical_each_finds_the_value_a_long_number_is_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run of digits sends its own value to canonical_json, not all of them."""
    values: list[Any] = [{"a": i} for i in range(50)]
    values[17] = {"a": 1234567890123456}
    values[30] = [1234567890123456]
    values[41] = 1234567890123456
    calls = []
    original = canonical_module.canonical_json

    def counting(value: Any) -> bytes:
        calls.append(value)
        return original(value)

    monkeypatch.setattr(canonical_module, "canonical_json", counting)
    assert canonical_each(values) == [original(value) for value in values]
    assert calls == [values[17], values[30], values[41]]


# ----------------------------------------------------- the skipped strict parse


def _reference_parse(payload: bytes) -> HandoffBundle:
    """verify_bundle_jws before the second round: strict parse, validation,
    then the canonical-form check."""
    bundle = HandoffBundle.parse(payload, max_bytes=bundle_module.MAX_BUNDLE_BYTES)
    if bundle.canonical() != payload:
        raise InvalidArtifact("bundle payload is not in canonical form")
    return bundle


def _fast_parse(payload: bytes) -> HandoffBundle:
    bundle, document, parts, (start, end) = bundle_module._parse_canonical(payload)
    assert document == bundle.to_json()
    assert parts.payload(document) == payload
    assert payload[:start] + payload[end:] == canonical_json(
        {k: v for k, v in document.items() if k != "integrity"}
    )
    return bundle


@pytest.fixture(scope="module")
def payload() -> bytes:
    built = _new_build(HandoffRequest.from_value(request_doc(pii_paths=FULL_PII)), BODIES)
    assert built.payload is not None
    return built.payload


_EDITS: list[tuple[bytes, bytes]] = [
    (b"", b""),  # as it is
    (b'{"ack_by":1750000300,', b'{"ack_by":1750000300,"ack_by":1750000300,'),  # a duplicate
    (b'{"id":1,"jsonrpc"', b'{"id":1,"id":1,"jsonrpc"'),  # a duplicate in a body
    (b'{"id":1,"jsonrpc"', b'{"id":1,"jsonrpc":"2.0","jsonrpc"'),  # same, other value
    (b'"name":"Ada"', b'"name":"\\u0041da"'),  # an escape that need not be one
    (b'"name":"Ada"', b'"name":"A\\/da"'),
    (b'"name":"Ada"', b'"name":"\\ud800"'),  # a lone surrogate
    (b'"name":"Ada"', b'"name":"\\ud83d\\ude00"'),  # a pair, escaped
    (b'"name":"Ada"', b'"name":"\xf0\x9f\x98\x80"'),  # the same pair as UTF-8: canonical
    (b'"name":"Ada"', b'"name":"\xff"'),  # not UTF-8
    (b'"name":"Ada"', b'"name":"A\x01a"'),  # a raw control character
    (b'"name":"Ada"', b'"name":"A\\u0001a"'),  # escaped: canonical
    (b'"amount":900', b'"amount":NaN'),
    (b'"amount":900', b'"amount":Infinity'),
    (b'"amount":900', b'"amount":1e400'),
    (b'"amount":900', b'"amount":900.0'),
    (b'"amount":900', b'"amount":9e2'),
    (b'"amount":900', b'"amount":12345678901234567890'),
    (b'"amount":900', b'"amount":-0'),
    (b'"amount":900', b'"amount": 900'),
    (
        b'"amount":900',
        b'"amount":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[900]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]',
    ),
    (b'{"email":"<PII_3>","name":"Ada"}', b'{"name":"Ada","email":"<PII_3>"}'),  # unsorted
    (b'"ack_by":1750000300,', b""),  # a member with a default, left out
    (b'{"ack_by"', b'{"aaa":1,"ack_by"'),  # an unknown member
    (b'"version":1', b'"version":true'),
    (b'"version":1', b'"version":"1"'),
]


@pytest.mark.parametrize("edit", _EDITS, ids=[repr(new[:24]) for _, new in _EDITS])
def test_the_skipped_strict_parse_fails_as_the_reference_fails(
    payload: bytes, edit: tuple[bytes, bytes]
) -> None:
    old, new = edit
    if old:
        assert old in payload
        changed = payload.replace(old, new, 1)
    else:
        changed = payload
    expected = _result(lambda: _reference_parse(changed))
    assert _result(lambda: _fast_parse(changed)) == expected
    if not old:
        assert expected[0] == "ok"


@pytest.mark.parametrize(
    "wrap",
    [
        lambda p: p + b"\n",
        lambda p: b" " + p,
        lambda p: p + b" ",
        lambda p: b"\xef\xbb\xbf" + p,
        lambda p: b"[" + p + b"]",
        lambda p: p[:-1],
        lambda p: p + b"x",
        lambda p: p + b"{}",
        lambda p: p.replace(b",", b", ", 1),
        lambda p: b"",
        lambda p: b"null",
    ],
)
def test_the_skipped_strict_parse_around_the_payload(
    payload: bytes, wrap: Callable[[bytes], bytes]
) -> None:
    changed = wrap(payload)
    assert _result(lambda: _fast_parse(changed)) == _result(lambda: _reference_parse(changed))


def test_an_oversized_payload_fails_as_the_reference_fails(
    payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bundle_module, "MAX_BUNDLE_BYTES", len(payload) - 1)
    expected = _result(lambda: _reference_parse(payload))
    assert expected[0] != "ok"
    assert _result(lambda: _fast_parse(payload)) == expected


def _nested_bundle(depth: int) -> bytes:
    """The payload of a bundle whose one body is ``depth`` arrays deep: the
    payload nests ``depth + 3`` deep (document, bodies, record)."""
    body = b"[" * depth + b"]" * depth
    transcript = build_chain(
        CONVERSATION,
        [{**entry_fields(ALPHA, BETA), "body_digest": digest(body), "body_size": len(body)}],
    )
    built = build_bundle(
        bundle_id=BUNDLE_ID,
        request=HandoffRequest.from_value(request_doc(pii_paths=[])),
        queue="payments-t2",
        conversation=CONVERSATION,
        origin=ALPHA,
        gateway=GATEWAY,
        transcript=transcript,
        bodies={0: ("application/json", body)},
        now=NOW,
        token_bytes=counting_salts(),
    )
    assert built.bundle.bodies[0].raw is None
    assert built.payload is not None
    return built.payload


@pytest.mark.parametrize("depth", [60, 61, 62, 63])
def test_a_canonical_payload_nested_too_deep_fails_as_the_reference_fails(
    depth: int, gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    """Canonical, so the fast path reaches its own depth check: 64 passes, 65
    is refused with the strict parser's error."""
    data = _nested_bundle(depth)
    expected = _result(lambda: _reference_parse(data))
    assert _result(lambda: _fast_parse(data)) == expected
    if depth + 3 > strictjson.DEFAULT_MAX_DEPTH:
        assert expected == _result(
            lambda: _raise(from_keys_error(TooDeep("JSON nesting exceeds 64")))
        )
    else:
        assert expected[0] == "ok"
    token = sign_compact(data, gateway_key, typ=BUNDLE_JWS_TYP)
    assert (
        _outcome(lambda: verify_bundle_jws(token, gateway_keys))[0]
        == _outcome(lambda: reference_verify_jws(token, gateway_keys))[0]
    )


def _raise(exc: BaseException) -> None:
    raise exc


def test_the_json_form_of_a_parsed_bundle_is_its_model_dump(payload: bytes) -> None:
    for data in (payload, _nested_bundle(5)):
        bundle = HandoffBundle.parse(data, max_bytes=MAX_BUNDLE_BYTES)
        assert bundle_module._json_form(bundle) == bundle.to_json()


# ----------------------------------------------------- batched serialisation


def test_entry_forms_of_many_entries_are_those_of_each() -> None:
    entries = [entry.to_json() for entry in _trap_entries()]
    odd = copy.deepcopy(entries[1])
    odd["method"] = {"nested": ',"kind":'}
    batch = [*entries, odd, {**entries[2], "hash": 7}, {**entries[3], "prev": 10**16}]
    expected = [_result(lambda e=e: bundle_module._entry_forms(e)) for e in batch]
    assert expected[-1][0] == "InvalidArtifact"
    assert _result(lambda: bundle_module._entries_forms(batch[:-1])) == (
        "ok",
        [value for _, value in expected[:-1]],
    )
    assert _result(lambda: bundle_module._entries_forms(batch))[0] == "InvalidArtifact"
    for entry, (hashed, full) in zip(entries, bundle_module._entries_forms(entries), strict=True):
        assert hashed == canonical_json({k: v for k, v in entry.items() if k != "hash"})
        assert full == canonical_json(entry)


def test_entries_json_is_each_entry_json() -> None:
    transcript = _trap_entries()
    assert bundle_module._entries_json(transcript) == [entry.to_json() for entry in transcript]


def test_recorded_bodies_fail_as_one_by_one() -> None:
    good = {"seq": 1, "media_type": "x", "json": {"a": [1]}, "json_digest": GENESIS, "raw": None}
    records = [
        good,
        {**good, "seq": 2, "media_type": "m" * 300},
        {**good, "seq": 3, "raw": "aGk"},
    ]
    for chosen in ([good], records, records[::-1], records[1:]):
        assert _result(lambda c=chosen: bundle_module._recorded_bodies(c)) == _result(
            lambda c=chosen: tuple(RecordedBody.build(**r) for r in c)
        )


@pytest.mark.parametrize(
    "records",
    [
        [
            {
                "seq": 1,
                "media_type": '","json":',
                "json": {"a": [1]},
                "json_digest": GENESIS,
                "raw": None,
            },
            {"seq": 2, "media_type": "text/plain", "json": None, "json_digest": None, "raw": "aGk"},
            {
                "seq": 3,
                "media_type": "x",
                "json": "\U0001f600\uffff",
                "json_digest": GENESIS,
                "raw": None,
            },
            {"seq": 4, "json": 1, "media_type": "y"},
            {"seq": 5, "json": [], "a": 1, "media_type": "y", "json_digest": None, "raw": None},
            {
                "seq": 1234567890123456,
                "media_type": "z",
                "json": {},
                "json_digest": None,
                "raw": None,
            },
        ]
    ],
)
def test_records_bytes_of_many_are_those_of_each(records: list[dict[str, Any]]) -> None:
    jsons = [canonical_json(record["json"]) for record in records]
    assert bundle_module._records_bytes(records, jsons) == [
        canonical_json(record) for record in records
    ]


# ----------------------------------------------------- pointers with a star

_STAR_POINTERS = st.lists(_SEGMENTS | st.just("*"), max_size=4).map(
    lambda s: "".join("/" + x for x in s)
)


@DETERMINISTIC
@given(_STAR_POINTERS)
@example("/*")
@example("/*/*/*")
@example("/b/*/a~1b")
@example("/a/*/1/*")
@example("/*/\u0661")
def test_resolve_with_a_star_agrees_with_the_generic_walk(pointer: str) -> None:
    assert resolve(_TREE, pointer) == _old_resolve(_TREE, pointer)


@DETERMINISTIC
@given(st.lists(_MASK_POINTERS, max_size=6))
@example(["/a/e/*", "/*/h"])
@example(["/a/*/c", "/a/e/2/f"])
def test_masking_in_place_agrees_with_replace(pointers: list[str]) -> None:
    """The masked document and the reveals are those of the concrete paths
    replaced one by one from the root (the reference's ``_replace``)."""
    old, expected_paths = _outcome(lambda: _reference_mask(copy.deepcopy(_MASKABLE), pointers))
    document = copy.deepcopy(_MASKABLE)
    new, result = _outcome(lambda: mask(document, pointers, token_bytes=counting_salts()))
    assert new == old
    if new != "ok":
        return
    reference = copy.deepcopy(_MASKABLE)
    originals = []
    for field in result.masked:
        originals.append(resolve(reference, field.path)[0][1])
        pii_module._replace(reference, field.path, field.token)
    assert document == reference
    assert [reveal.value for reveal in result.reveals] == originals
    assert [field.path for field in result.masked] == expected_paths


def test_masking_the_whole_document_is_refused() -> None:
    with raises_exactly(InvalidArtifact):
        mask({"a": 1}, [""], token_bytes=counting_salts())
