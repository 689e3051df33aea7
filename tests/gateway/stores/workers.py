"""Entry points for the cross-process tests (run in ``spawn``-ed processes).

Each process opens its own store from a :class:`StoreSpec` (SQLite
connections and Redis clients never cross a process boundary), waits at a
barrier so all processes race at once, then reports ``("ok", value)`` or
``("error", text)`` on the result queue.
"""

from __future__ import annotations

import asyncio
import multiprocessing.queues
import multiprocessing.synchronize
import os
import traceback
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.stores import Stores
from tests.gateway.stores.support import StoreSpec, append_entry

T = TypeVar("T")
BARRIER_TIMEOUT_S = 60.0


def _run(
    spec: StoreSpec,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue[tuple[str, object]],
    work: Callable[[Stores], Awaitable[T]],
) -> None:
    async def main() -> T:
        stores = await spec.open()
        try:
            await stores.ping()
            barrier.wait(timeout=BARRIER_TIMEOUT_S)
            return await work(stores)
        finally:
            await stores.close()

    try:
        results.put(("ok", asyncio.run(main())))
    except BaseException:
        results.put(("error", traceback.format_exc()))


def append_many(
    spec: StoreSpec,
    conversation: str,
    count: int,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue[tuple[str, object]],
) -> None:
    """``count`` concurrent appenders to ``conversation``, their entries stamped
    with this process's id as ``ts``; reports total conflicts."""

    async def work(stores: Stores) -> int:
        pid = os.getpid()
        appenders = (
            append_entry(stores.transcripts, conversation, b"x", ts=pid) for _ in range(count)
        )
        return sum(await asyncio.gather(*appenders))

    _run(spec, barrier, results, work)


def claim_many(
    spec: StoreSpec,
    scope_and_nonce: tuple[str, str],
    count: int,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue[tuple[str, object]],
) -> None:
    """``count`` concurrent claims of one nonce; reports the list of outcomes."""

    async def work(stores: Stores) -> list[bool]:
        scope, nonce = scope_and_nonce
        claims = (stores.nonces.claim(scope, nonce, ttl_s=60, now=1000.0) for _ in range(count))
        return list(await asyncio.gather(*claims))

    _run(spec, barrier, results, work)
