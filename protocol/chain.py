"""Hash chains: transcripts, lifecycle events and the audit log share one rule.

A chained record carries ``seq`` (0, 1, 2, ...), ``prev`` (the previous
record's ``hash``, or :data:`GENESIS` for ``seq`` 0) and ``hash``, which is
the SHA-256 of the RFC 8785 form of the record *without* ``hash``. Changing,
inserting, dropping or reordering any record therefore changes some ``hash``
or breaks some ``prev`` link, the property RFC 6962-style logs and Rekor
checkpoints rely on. :func:`verify_links` checks a run of records and returns
the head; comparing that head with a signed checkpoint (or the bundle's
integrity block) detects truncation.

:func:`parse_record` additionally requires the stored bytes to be exactly the
canonical form of the parsed record, so *any* byte change to a stored record
is detected, including ones that would parse to the same values (an escape
written ``\\u001F`` instead of ``\\u001f``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self, TypeVar

from pydantic import Field

from protocol.canonical import canonical_digest, canonical_json, digest
from protocol.errors import ChainBreak, HeadMismatch, InvalidArtifact, SeqViolation
from protocol.model import BatonModel, Digest

__all__ = [
    "EMPTY",
    "GENESIS",
    "ChainHead",
    "ChainedRecord",
    "parse_record",
    "verify_links",
]

GENESIS: Final = "sha256:" + "0" * 64


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record of a chain: its ``seq`` and ``hash``. Empty chain: ``(-1, GENESIS)``."""

    seq: int = -1
    hash: str = GENESIS

    @property
    def next_seq(self) -> int:
        return self.seq + 1


EMPTY: Final = ChainHead()

#: Canonical bytes of recently created records, by identity. Records are
#: frozen, so the bytes of an object never change; the entry holds the object
#: itself, so its id cannot be reused while the entry lives, and a lookup
#: checks identity (``is``), never equality. Bounded: a pure memo.
_MEMO: OrderedDict[int, tuple[object, bytes]] = OrderedDict()
_MEMO_SIZE: Final = 512


def _memo(record: object, data: bytes) -> None:
    _MEMO[id(record)] = (record, data)
    if len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)


def _memoised(record: object) -> bytes | None:
    hit = _MEMO.get(id(record))
    return hit[1] if hit is not None and hit[0] is record else None


class ChainedRecord(BatonModel):
    """Base for chained records. Subclasses add their own fields."""

    #: the member that scopes a chain (``conversation``, ``bundle_id``...), or None.
    chain_key: ClassVar[str | None] = None

    seq: int = Field(ge=0)
    prev: Digest
    hash: Digest

    @classmethod
    def create(cls, head: ChainHead, **fields: Any) -> Self:
        """The record that extends ``head``: ``seq``/``prev`` set, ``hash`` computed.

        The record's canonical bytes and hash are remembered (see
        :data:`_MEMO`), so storing it right after does not serialise it again.
        """
        draft = cls.build(**{**fields, "seq": head.next_seq, "prev": head.hash, "hash": GENESIS})
        data = draft.model_dump(mode="json", by_alias=True)
        del data["hash"]
        record_hash = digest(canonical_json(data))
        record = draft.model_copy(update={"hash": record_hash})
        data["hash"] = record_hash
        _memo(record, canonical_json(data))
        return record

    def compute_hash(self) -> str:
        """SHA-256 over the canonical form without ``hash``."""
        if _memoised(self) is not None:
            return self.hash  # made by create() from this very content
        return canonical_digest(self.model_dump(mode="json", by_alias=True, exclude={"hash"}))

    def canonical(self) -> bytes:
        """RFC 8785 bytes of the record (remembered for records made by :meth:`create`)."""
        memoised = _memoised(self)
        return memoised if memoised is not None else super().canonical()

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.seq, self.hash)


def verify_links(
    records: Iterable[ChainedRecord],
    *,
    start: ChainHead = EMPTY,
    scope: str | None = None,
    expected_head: ChainHead | None = None,
    hashes: Sequence[str] | None = None,
) -> ChainHead:
    """Check that ``records`` extend ``start`` link by link; return the new head.

    ``hashes``, when given, is :meth:`ChainedRecord.compute_hash` of each
    record, in order, computed by a caller that serialises the records anyway
    (``protocol/bundle.py`` hashes the very bytes it signs): the digest of the
    RFC 8785 form of the record without ``hash``. Every other check is the same.

    * a ``seq`` that is not the next one: :class:`SeqViolation` (reordered, H04);
    * a ``prev`` that is not the previous ``hash``, or a ``hash`` that does not
      recompute: :class:`ChainBreak` (injected or edited, H02);
    * a record from another chain (its ``chain_key`` member differs from
      ``scope``): :class:`ChainBreak`;
    * a final head other than ``expected_head``: :class:`HeadMismatch`
      (truncated, H03).
    """
    if hashes is not None:
        records = list(records)
        if len(hashes) != len(records):
            raise InvalidArtifact("one recomputed hash per chained record is required")
    # The head so far as two locals (``record.head`` would build a ChainHead
    # per record): ``seq``, and ``last``, the hash the next ``prev`` must be.
    seq, last = start.seq, start.hash
    for index, record in enumerate(records):
        key = record.chain_key
        if scope is not None and key is not None and getattr(record, key) != scope:
            raise ChainBreak(f"record {record.seq} belongs to another chain")
        if record.seq != seq + 1:
            raise SeqViolation(f"seq {record.seq} where {seq + 1} was expected")
        if record.prev != last:
            raise ChainBreak(f"record {record.seq}: prev does not match the previous hash")
        recomputed = record.compute_hash() if hashes is None else hashes[index]
        if recomputed != record.hash:
            raise ChainBreak(f"record {record.seq}: content does not match its hash")
        seq, last = record.seq, record.hash
    head = ChainHead(seq, last)
    if expected_head is not None and head != expected_head:
        raise HeadMismatch(
            f"chain ends at seq {head.seq}, expected seq {expected_head.seq} "
            "with the signed head hash"
        )
    return head


R = TypeVar("R", bound=ChainedRecord)


def parse_record(cls: type[R], data: bytes) -> R:
    """Parse one stored record; its bytes must be exactly its canonical form."""
    record = cls.parse(data)
    if record.canonical() != data:
        raise InvalidArtifact(f"{cls.__name__} bytes are not in canonical form")
    return record
