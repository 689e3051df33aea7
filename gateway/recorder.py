"""Appending to hash chains without forks and without needless round trips.

The stores give compare-and-append (``protocol/ports.py``). A store that can
build the next record under its own write lock (``append_next``: SQLite,
inside its group commit) is handed the record's constructor, so an append
never conflicts and concurrent requests' records share one transaction.
Otherwise (Redis) :class:`Recorder` serialises appends to one chain within
the process with striped locks and remembers the head it last wrote, so the
common case is one store call per record; across processes, a
:class:`~protocol.errors.ChainConflict` means another writer got there
first: re-read the head and retry, a bounded number of times (then fail
closed with ``store_unavailable``).
"""

from __future__ import annotations

import asyncio
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from protocol.audit import AuditEvent
from protocol.chain import ChainedRecord, ChainHead
from protocol.errors import ChainConflict, StoreUnavailable
from protocol.ports import AuditLog, TranscriptStore
from protocol.transcript import TranscriptEntry

__all__ = ["Recorder"]

_STRIPES: Final = 256
_HEADS_CACHED: Final = 10_000
_MAX_ATTEMPTS: Final = 32
_AUDIT: Final = "\x00audit"

R = TypeVar("R", bound=ChainedRecord)


class _AlreadyRecorded(Exception):
    """An audit event was already appended under this ``once`` key."""


class Recorder:
    """Transcript entries and audit events, appended in order."""

    def __init__(self, transcripts: TranscriptStore, audit: AuditLog) -> None:
        self._transcripts = transcripts
        self._audit = audit
        self._locks = [asyncio.Lock() for _ in range(_STRIPES)]
        self._heads: OrderedDict[str, ChainHead] = OrderedDict()

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks[zlib.crc32(key.encode()) % _STRIPES]

    def _remember(self, key: str, head: ChainHead) -> None:
        self._heads[key] = head
        self._heads.move_to_end(key)
        if len(self._heads) > _HEADS_CACHED:
            self._heads.popitem(last=False)

    async def _append(
        self,
        key: str,
        read_head: Callable[[], Awaitable[ChainHead]],
        make: Callable[[ChainHead], R],
        store: Callable[[R], Awaitable[None]],
    ) -> R:
        async with self._lock(key):
            head = self._heads.get(key)
            if head is None:
                head = await read_head()
            for _ in range(_MAX_ATTEMPTS):
                record = make(head)
                try:
                    await store(record)
                except ChainConflict:
                    head = await read_head()
                    continue
                except BaseException:
                    self._heads.pop(key, None)  # unknown outcome: re-read next time
                    raise
                self._remember(key, record.head)
                return record
        raise StoreUnavailable(f"chain {key!r}: {_MAX_ATTEMPTS} conflicting appends in a row")

    async def entry(self, body: bytes | None, **fields: Any) -> TranscriptEntry:
        """Append a :class:`TranscriptEntry` with ``fields`` and its ``body``."""
        conversation: str = fields["conversation"]

        def make(head: ChainHead) -> TranscriptEntry:
            return TranscriptEntry.create(head, **fields)

        append_next = getattr(self._transcripts, "append_next", None)
        if append_next is not None:
            entry: TranscriptEntry = await append_next(conversation, make, body)
            return entry

        async def store(entry: TranscriptEntry) -> None:
            await self._transcripts.append(entry, body)

        return await self._append(
            "t:" + conversation, lambda: self._transcripts.head(conversation), make, store
        )

    async def event(self, *, once: str | None = None, **fields: Any) -> AuditEvent | None:
        """Append an :class:`AuditEvent` with ``fields``; with ``once`` (an
        idempotency key, :meth:`~protocol.ports.AuditLog.append`), None and
        nothing appended when an event was already appended under that key."""

        def make(head: ChainHead) -> AuditEvent:
            return AuditEvent.create(head, **fields)

        append_next = getattr(self._audit, "append_next", None)
        if append_next is not None:
            built: AuditEvent | None = await append_next(make, once=once)
            return built

        async def store(event: AuditEvent) -> None:
            if not await self._audit.append(event, once=once):
                raise _AlreadyRecorded

        try:
            return await self._append(_AUDIT, self._audit.head, make, store)
        except _AlreadyRecorded:
            return None
