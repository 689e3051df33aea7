"""protocol/chain.py and protocol/transcript.py: hash chains, checkpoints, threats H02-H05."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from keys.jose import sign_compact
from keys.keyset import KeySet
from keys.material import PrivateKey
from protocol.canonical import canonical_digest, canonical_json, digest
from protocol.chain import EMPTY, GENESIS, ChainHead, parse_record, verify_links
from protocol.errors import (
    BatonError,
    BindingMismatch,
    ChainBreak,
    HeadMismatch,
    IntegrityError,
    InvalidArtifact,
    MalformedInput,
    SeqViolation,
    UnknownKeyId,
    WrongType,
)
from protocol.transcript import (
    CHECKPOINT_TYP,
    Checkpoint,
    TranscriptEntry,
    sign_checkpoint,
    verify_checkpoint,
    verify_transcript,
)
from tests.protocol._support import (
    ALPHA,
    BETA,
    CONVERSATION,
    DETERMINISTIC,
    GATEWAY,
    NOW_MS,
    PAYMENTS,
    build_chain,
    entry_fields,
    raises_exactly,
    simple_chain,
)


@pytest.fixture(scope="module")
def chain() -> list[TranscriptEntry]:
    return simple_chain(CONVERSATION, 5)


@pytest.fixture(scope="module")
def checkpoint(
    chain: list[TranscriptEntry], gateway_key: PrivateKey, gateway_keys: KeySet
) -> Checkpoint:
    token = sign_checkpoint(CONVERSATION, chain[-1].head, gateway_key, ts=NOW_MS)
    return verify_checkpoint(token, gateway_keys)


def _forged(head: ChainHead, **changes: Any) -> TranscriptEntry:
    fields = {**entry_fields(PAYMENTS, ALPHA, method="tools/call"), **changes}
    return TranscriptEntry.create(head, conversation=CONVERSATION, ts=NOW_MS + 99, **fields)


# --------------------------------------------------------------------------- building


def test_create_links_each_entry_to_the_previous(chain: list[TranscriptEntry]) -> None:
    assert [e.seq for e in chain] == [0, 1, 2, 3, 4]
    assert chain[0].prev == GENESIS
    for before, after in itertools.pairwise(chain):
        assert after.prev == before.hash
    assert len({e.hash for e in chain}) == 5


def test_hash_is_the_digest_of_the_canonical_entry_without_hash(
    chain: list[TranscriptEntry],
) -> None:
    entry = chain[2]
    wire = entry.to_json()
    assert wire["from"] == ALPHA, "sender is 'from' on the wire"
    assert "sender" not in wire
    assert entry.hash == canonical_digest({k: v for k, v in wire.items() if k != "hash"})
    assert entry.compute_hash() == entry.hash
    assert entry.head == ChainHead(2, entry.hash)


def test_verify_returns_the_head(chain: list[TranscriptEntry], checkpoint: Checkpoint) -> None:
    assert verify_transcript(chain, conversation=CONVERSATION) == chain[-1].head
    assert verify_transcript(chain, conversation=CONVERSATION, checkpoint=checkpoint) == (
        chain[-1].head
    )
    assert verify_links(chain) == ChainHead(4, chain[-1].hash)


def test_a_chain_continues_from_a_head(chain: list[TranscriptEntry]) -> None:
    more = build_chain(CONVERSATION, [entry_fields(ALPHA, BETA, rpc_id="x")], start=chain[-1].head)
    assert more[0].seq == 5
    assert verify_links(more, start=chain[-1].head, scope=CONVERSATION) == more[0].head
    with raises_exactly(SeqViolation):
        verify_links(more, scope=CONVERSATION)


def test_empty_transcript() -> None:
    assert verify_transcript([], conversation=CONVERSATION) == EMPTY
    empty = Checkpoint(conversation=CONVERSATION, seq=-1, head=GENESIS, ts=0)
    assert verify_transcript([], conversation=CONVERSATION, checkpoint=empty) == EMPTY
    assert EMPTY.next_seq == 0


def test_edited_entry_breaks_the_chain(chain: list[TranscriptEntry]) -> None:
    """H02: content changed but hash kept."""
    edited = chain[2].model_copy(update={"method": "tools/delete"})
    with raises_exactly(ChainBreak) as info:
        verify_transcript([*chain[:2], edited, *chain[3:]], conversation=CONVERSATION)
    assert info.value.http_status == 422


def test_injected_entry_breaks_the_next_link(chain: list[TranscriptEntry]) -> None:
    """H02: a forged entry that links to its predecessor replaces the real one."""
    forged = _forged(chain[1].head)
    assert forged.seq == 2 and forged.prev == chain[1].hash
    with raises_exactly(ChainBreak):
        verify_transcript([*chain[:2], forged, *chain[3:]], conversation=CONVERSATION)


def test_extra_entry_with_a_foreign_prev_breaks_the_chain(chain: list[TranscriptEntry]) -> None:
    """H02: an extra entry appended with the right seq but not chained to the head."""
    extra = _forged(ChainHead(chain[-1].seq, digest(b"not the head")))
    with raises_exactly(ChainBreak):
        verify_transcript([*chain, extra], conversation=CONVERSATION)


def test_injected_entry_with_rebuilt_suffix_fails_the_checkpoint(
    chain: list[TranscriptEntry], checkpoint: Checkpoint
) -> None:
    """H02 by someone who recomputes every later hash: only the signed head catches it."""
    forged = _forged(chain[1].head)
    rebuilt = [*chain[:2], forged]
    for entry in chain[2:]:
        fields = entry.to_json()
        for name in ("seq", "prev", "hash", "conversation", "ts"):
            del fields[name]
        rebuilt += build_chain(CONVERSATION, [fields], start=rebuilt[-1].head, ts0=entry.ts)
    assert verify_transcript(rebuilt, conversation=CONVERSATION).seq == 5
    with raises_exactly(HeadMismatch):
        verify_transcript(rebuilt, conversation=CONVERSATION, checkpoint=checkpoint)


def test_duplicated_entry_is_a_seq_violation(chain: list[TranscriptEntry]) -> None:
    with raises_exactly(SeqViolation):
        verify_transcript([*chain[:3], chain[2], *chain[3:]], conversation=CONVERSATION)


def test_truncation_is_caught_only_by_the_checkpoint(
    chain: list[TranscriptEntry], checkpoint: Checkpoint
) -> None:
    """H03: every prefix of a chain is a valid chain; the signed head is what says it is short."""
    for cut in range(len(chain)):
        prefix = chain[:cut]
        assert verify_transcript(prefix, conversation=CONVERSATION).seq == cut - 1
        with raises_exactly(HeadMismatch) as info:
            verify_transcript(prefix, conversation=CONVERSATION, checkpoint=checkpoint)
        assert info.value.code == "head_mismatch"


def test_dropping_the_first_entry_is_a_seq_violation(chain: list[TranscriptEntry]) -> None:
    with raises_exactly(SeqViolation):
        verify_transcript(chain[1:], conversation=CONVERSATION)


@pytest.mark.parametrize(
    "order",
    [(1, 0, 2, 3, 4), (0, 1, 3, 2, 4), (0, 1, 2, 4, 3), (4, 3, 2, 1, 0)],
    ids=str,
)
def test_reordering_is_a_seq_violation(
    chain: list[TranscriptEntry], order: tuple[int, ...]
) -> None:
    """H04."""
    with raises_exactly(SeqViolation) as info:
        verify_transcript([chain[i] for i in order], conversation=CONVERSATION)
    assert info.value.code == "seq_violation"


def test_seq_renumbered_after_reordering_breaks_links(chain: list[TranscriptEntry]) -> None:
    """H04 where the attacker also fixes seq: the prev links no longer hold."""
    swapped = [chain[0], chain[2], chain[1], chain[3], chain[4]]
    renumbered = [e.model_copy(update={"seq": i}) for i, e in enumerate(swapped)]
    with raises_exactly(ChainBreak):
        verify_transcript(renumbered, conversation=CONVERSATION)


def test_wrong_conversation(chain: list[TranscriptEntry], checkpoint: Checkpoint) -> None:
    with raises_exactly(ChainBreak):
        verify_transcript(chain, conversation="ctx-other")
    with raises_exactly(BindingMismatch):
        verify_transcript(chain, conversation="ctx-other", checkpoint=checkpoint)


def test_entry_from_another_conversation_is_refused(chain: list[TranscriptEntry]) -> None:
    """An entry that links correctly but belongs to another conversation (H05)."""
    foreign = TranscriptEntry.create(
        chain[-1].head, conversation="ctx-other", ts=NOW_MS, **entry_fields(BETA, ALPHA)
    )
    with raises_exactly(ChainBreak):
        verify_transcript([*chain, foreign], conversation=CONVERSATION)
    assert verify_links([*chain, foreign]).seq == 5, "without a scope the link itself is fine"


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(
    chain: list[TranscriptEntry], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    token = sign_checkpoint(CONVERSATION, chain[-1].head, gateway_key, ts=NOW_MS)
    checkpoint = verify_checkpoint(token, gateway_keys)
    assert checkpoint == Checkpoint(
        conversation=CONVERSATION, seq=4, head=chain[-1].hash, ts=NOW_MS
    )
    assert checkpoint.chain_head == chain[-1].head


def test_checkpoint_with_another_typ_is_refused(
    chain: list[TranscriptEntry], gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    body = Checkpoint(conversation=CONVERSATION, seq=4, head=chain[-1].hash, ts=NOW_MS)
    token = sign_compact(body.canonical(), gateway_key, typ="baton-event+jws")
    with raises_exactly(WrongType) as info:
        verify_checkpoint(token, gateway_keys)
    assert info.value.http_status == 401
    assert (
        verify_checkpoint(
            sign_compact(body.canonical(), gateway_key, typ=CHECKPOINT_TYP), gateway_keys
        )
        == body
    )


def test_checkpoint_by_a_key_outside_the_set_is_refused(
    chain: list[TranscriptEntry], rogue_key: PrivateKey, gateway_keys: KeySet
) -> None:
    token = sign_checkpoint(CONVERSATION, chain[-1].head, rogue_key, ts=NOW_MS)
    with raises_exactly(UnknownKeyId):
        verify_checkpoint(token, gateway_keys)


def test_checkpoint_payload_must_be_a_checkpoint(
    gateway_key: PrivateKey, gateway_keys: KeySet
) -> None:
    payload = canonical_json({"conversation": CONVERSATION, "seq": 0, "head": GENESIS})
    token = sign_compact(payload, gateway_key, typ=CHECKPOINT_TYP)
    with raises_exactly(InvalidArtifact):
        verify_checkpoint(token, gateway_keys)


# --------------------------------------------------------------------------- stored bytes


def test_parse_record_round_trip(chain: list[TranscriptEntry]) -> None:
    for entry in chain:
        assert parse_record(TranscriptEntry, entry.canonical()) == entry


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.replace(b'","', b'", "', 1),
        lambda b: b + b"\n",
        lambda b: b" " + b,
        lambda b: b.replace(b'"v":1', b'"v":1.0'),
        lambda b: b.replace(b'"seq":2', b'"seq":2e0'),
        lambda b: b.replace(b'"seq":2', b'"seq":2.0'),
        lambda b: b.replace(b"SendMessage", b"Send\\u004dessage"),
        lambda b: b.replace(b"SendMessage", b"Send\\u004Dessage"),
        lambda b: b.replace(b"/", b"\\/", 1),
    ],
    ids=[
        "space",
        "trailing newline",
        "leading space",
        "v as float",
        "exponent",
        "seq as float",
        "needless escape",
        "uppercase escape",
        "escaped solidus",
    ],
)
def test_parse_record_refuses_non_canonical_bytes(
    chain: list[TranscriptEntry], mutate: Any
) -> None:
    original = chain[2].canonical()
    mutated = mutate(original)
    assert mutated != original
    with pytest.raises(BatonError) as info:
        parse_record(TranscriptEntry, mutated)
    assert info.value.http_status == 400


def test_parse_record_refuses_reordered_members(chain: list[TranscriptEntry]) -> None:
    fields = chain[2].to_json()
    reordered = (
        "{"
        + ",".join(
            f"{canonical_json(k).decode()}:{canonical_json(v).decode()}"
            for k, v in reversed(list(sorted(fields.items())))
        )
        + "}"
    )
    assert TranscriptEntry.parse(reordered) == chain[2], "same values"
    with raises_exactly(InvalidArtifact):
        parse_record(TranscriptEntry, reordered.encode())


def test_parse_record_refuses_escape_case_of_a_control_character() -> None:
    """The module docstring's example: ``\\u001F`` instead of ``\\u001f``."""
    [entry] = build_chain(CONVERSATION, [entry_fields(ALPHA, BETA, method="a\x1fb")])
    data = entry.canonical()
    assert b"\\u001f" in data
    assert parse_record(TranscriptEntry, data) == entry
    with raises_exactly(InvalidArtifact):
        parse_record(TranscriptEntry, data.replace(b"\\u001f", b"\\u001F"))


def test_parse_record_refuses_duplicate_members(chain: list[TranscriptEntry]) -> None:
    data = chain[0].canonical()
    duplicated = data[:-1] + b',"verified":false}'
    with raises_exactly(MalformedInput):
        parse_record(TranscriptEntry, duplicated)


def test_parse_record_refuses_unknown_members(chain: list[TranscriptEntry]) -> None:
    fields = {**chain[0].to_json(), "zz_extra": 1}
    with raises_exactly(InvalidArtifact):
        parse_record(TranscriptEntry, canonical_json(fields))


# --------------------------------------------------------------------------- property

_methods = st.none() | st.text(max_size=12)
_rpc_ids = st.none() | st.integers(min_value=-(2**31), max_value=2**31) | st.text(max_size=8)
_peers = st.sampled_from([ALPHA, BETA, PAYMENTS, GATEWAY, "operator:alice"])


#: Any byte, biased towards the ones that keep a line parseable (hex digits,
#: printable ASCII) so that many cases reach the chain checks, not just the parser.
_REPLACEMENT = (
    st.sampled_from(b"0123456789abcdef")
    | st.integers(min_value=0x20, max_value=0x7E)
    | st.integers(min_value=0, max_value=255)
)


@st.composite
def _messages(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(min_value=1, max_value=6))
    messages = []
    for _ in range(n):
        body = draw(st.none() | st.binary(max_size=16))
        messages.append(
            entry_fields(
                draw(_peers),
                draw(_peers),
                kind=draw(st.sampled_from(["request", "response", "stream_event", "error"])),
                protocol=draw(st.sampled_from(["mcp", "a2a", "http"])),
                method=draw(_methods),
                rpc_id=draw(_rpc_ids),
                status=draw(st.none() | st.integers(min_value=100, max_value=599)),
                body_digest=None if body is None else digest(body),
                body_size=None if body is None else len(body),
                signer=draw(st.none() | st.just("kid-1")),
                verified=draw(st.booleans()),
            )
        )
    return messages


@settings(DETERMINISTIC, max_examples=400)
@given(messages=_messages(), data=st.data())
def test_any_single_byte_change_is_detected(
    messages: list[dict[str, Any]],
    data: st.DataObject,
    gateway_key: PrivateKey,
    gateway_keys: KeySet,
) -> None:
    """Stored as canonical JSON lines plus a signed checkpoint, a transcript
    detects a change of any one byte at any position of any line."""
    entries = build_chain(CONVERSATION, messages)
    lines = [entry.canonical() for entry in entries]
    token = sign_checkpoint(CONVERSATION, entries[-1].head, gateway_key, ts=NOW_MS)
    checkpoint = verify_checkpoint(token, gateway_keys)
    # Sanity: the untouched lines verify.
    parsed = [parse_record(TranscriptEntry, line) for line in lines]
    assert parsed == entries
    head = verify_transcript(parsed, conversation=CONVERSATION, checkpoint=checkpoint)
    assert head == entries[-1].head

    line_no = data.draw(st.integers(min_value=0, max_value=len(lines) - 1), label="line")
    line = lines[line_no]
    position = data.draw(st.integers(min_value=0, max_value=len(line) - 1), label="position")
    byte = data.draw(_REPLACEMENT.filter(lambda b: b != line[position]), label="byte")
    tampered = line[:position] + bytes([byte]) + line[position + 1 :]
    stored = [*lines[:line_no], tampered, *lines[line_no + 1 :]]
    try:
        records = [parse_record(TranscriptEntry, item) for item in stored]
    except BatonError as exc:
        assert exc.http_status == 400, "a record that does not parse is malformed input"
        event(f"parse_record: {exc.code}")
        return
    with pytest.raises(IntegrityError) as info:
        verify_transcript(records, conversation=CONVERSATION, checkpoint=checkpoint)
    event(f"verify_transcript: {info.value.code}")
