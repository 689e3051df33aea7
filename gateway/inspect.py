"""Offline checks and views over the stores: ``baton transcript verify``,
``baton audit verify`` and ``baton trace``.

Verification reads every record, checks each link of the hash chain
(:func:`protocol.chain.verify_links`: sequence, ``prev``, recomputed hash,
scope) and, for transcripts, that every stored body decrypts and matches the
digest and size its entry recorded. The first failure is reported with its
stable code and the seq where it happened.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from protocol.audit import AuditEvent
from protocol.canonical import digest
from protocol.chain import EMPTY, ChainHead, verify_links
from protocol.errors import DigestInvalid
from protocol.ports import AuditLog, TranscriptStore
from protocol.transcript import TranscriptEntry

__all__ = ["ChainReport", "trace_lines", "verify_audit", "verify_conversation"]

_PAGE = 1000


@dataclass(frozen=True, slots=True)
class ChainReport:
    records: int
    head: ChainHead


async def _all_entries(store: TranscriptStore, conversation: str) -> list[TranscriptEntry]:
    entries: list[TranscriptEntry] = []
    while True:
        page = await store.read(conversation, after_seq=len(entries) - 1, limit=_PAGE)
        entries.extend(page)
        if len(page) < _PAGE:
            return entries


async def verify_conversation(store: TranscriptStore, conversation: str) -> ChainReport:
    """Raise a :class:`~protocol.errors.IntegrityError` at the first bad record."""
    entries = await _all_entries(store, conversation)
    head = verify_links(entries, start=EMPTY, scope=conversation, expected_head=None)
    stored_head = await store.head(conversation)
    if stored_head != head:
        raise DigestInvalid(f"store head {stored_head} is not the chain's end {head}")
    for entry in entries:
        body = await store.read_body(conversation, entry.seq)
        if (body is None) != (entry.body_digest is None):
            raise DigestInvalid(f"entry {entry.seq}: body presence does not match its entry")
        if body is not None and (digest(body) != entry.body_digest or len(body) != entry.body_size):
            raise DigestInvalid(f"entry {entry.seq}: body does not match its digest")
    return ChainReport(len(entries), head)


async def verify_audit(log: AuditLog) -> ChainReport:
    """Raise a :class:`~protocol.errors.IntegrityError` at the first bad event."""
    events: list[AuditEvent] = []
    while True:
        page = await log.read(after_seq=len(events) - 1, limit=_PAGE)
        events.extend(page)
        if len(page) < _PAGE:
            break
    head = verify_links(events, start=EMPTY)
    stored_head = await log.head()
    if stored_head != head:
        raise DigestInvalid(f"audit head {stored_head} is not the chain's end {head}")
    return ChainReport(len(events), head)


def _time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def trace_lines(entries: Sequence[TranscriptEntry]) -> list[str]:
    """Who called whom, when, with what outcome and latency (request -> first answer)."""
    pending: dict[tuple[str, str, object], TranscriptEntry] = {}
    lines = [f"{'seq':>4}  {'time (UTC)':<24} {'from':<36} {'to':<36} {'kind':<12} "
             f"{'method':<20} {'status':>6} {'latency':>9} {'signed':<6}"]  # fmt: skip
    for entry in entries:
        latency = ""
        key = (entry.sender, entry.to, entry.rpc_id)
        if entry.kind == "request":
            pending[(entry.to, entry.sender, entry.rpc_id)] = entry
        elif entry.kind in ("response", "error", "stream_event") and key in pending:
            request = pending.pop(key) if entry.kind != "stream_event" else pending[key]
            latency = f"{entry.ts - request.ts} ms"
        status = "" if entry.status is None else str(entry.status)
        lines.append(
            f"{entry.seq:>4}  {_time(entry.ts):<24} {entry.sender:<36} {entry.to:<36} "
            f"{entry.kind:<12} {(entry.method or '')[:20]:<20} {status:>6} {latency:>9} "
            f"{'yes' if entry.verified else 'no':<6}"
        )
    return lines
