"""The BindingStore contract (``protocol/ports.py``), run against SQLite and Redis.

First binder wins, in one process and across processes; the same owner
re-binding refreshes the TTL; another owner never takes or removes a live
binding; expiry follows the injected ``now`` in *both* backends (Redis keeps
``expires_at`` in the value and compares it inside its scripts; its key TTL
only frees memory); kinds are separate namespaces; arguments are checked
before any I/O; a dead backend is ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import multiprocessing.queues
import multiprocessing.synchronize
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from gateway.stores import REDIS_TIMEOUT_S, Stores, redis_client
from gateway.stores.redis import BINDING_GRACE_S, binding_key
from protocol.errors import StoreUnavailable
from protocol.ports import (
    BINDING_KIND,
    MAX_BINDING_TEXT,
    MAX_BINDING_TTL_S,
    BindingStore,
    check_binding,
)
from tests.gateway.stores.conftest import Backend
from tests.gateway.stores.support import ALICE, BOB, StoreSpec
from tests.gateway.stores.test_contract import _shares, _spawned
from tests.gateway.stores.workers import _run

SESSION = "mcp-session"
TASK = "a2a-task"
KEY = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
PROCESSES = 4
CONCURRENT = 50
REDIS_ONLY = pytest.mark.parametrize("backend", ["redis"], indirect=True)


# ---------------------------------------------------------------- raw access
async def _stored(backend: Backend, kind: str, key: str) -> tuple[str, float] | None:
    """``(owner, expires_at)`` as the backend stored them, read behind its back."""
    spec = backend.spec
    if spec.kind == "sqlite":
        assert spec.path is not None
        with closing(sqlite3.connect(spec.path)) as conn:
            row = conn.execute(
                "SELECT owner, expires_at FROM bindings WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
        return None if row is None else (str(row[0]), float(row[1]))
    async with _raw_redis(spec) as client:
        owner, expires_at = await client.hmget(
            binding_key(spec.prefix, kind, key), ["owner", "expires_at"]
        )
    if owner is None:
        return None
    assert isinstance(owner, bytes)
    assert isinstance(expires_at, bytes)
    return owner.decode(), float(expires_at)


@asynccontextmanager
async def _raw_redis(spec: StoreSpec) -> AsyncIterator[Redis]:
    """A client of the test's Redis, to look behind the store's back."""
    assert spec.url is not None
    client = redis_client(spec.url)
    try:
        yield client
    finally:
        await client.aclose()


# ---------------------------------------------------------------- the port
def test_binding_store_implements_its_port(backend: Backend) -> None:
    store = backend.stores.bindings
    assert isinstance(store, BindingStore)
    for name, method in inspect.getmembers(BindingStore, inspect.isfunction):
        if name.startswith("_"):
            continue
        impl = getattr(type(store), name)
        assert inspect.iscoroutinefunction(impl), name
        want = [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]
        got = [(p.name, p.kind, p.default) for p in inspect.signature(impl).parameters.values()]
        assert got == want, name


# ---------------------------------------------------------------- bind / owner
async def test_first_binder_wins(backend: Backend) -> None:
    bindings = backend.stores.bindings
    assert await bindings.owner(SESSION, KEY, now=1000.0) is None
    assert await bindings.bind(SESSION, KEY, ALICE, ttl_s=60, now=1000.0) == ALICE
    assert await bindings.bind(SESSION, KEY, BOB, ttl_s=60, now=1001.0) == ALICE
    assert await bindings.owner(SESSION, KEY, now=1001.0) == ALICE
    assert await _stored(backend, SESSION, KEY) == (ALICE, 1060.0)


async def test_other_owner_cannot_take_a_live_binding(backend: Backend) -> None:
    bindings = backend.stores.bindings
    await bindings.bind(SESSION, KEY, ALICE, ttl_s=60, now=1000.0)
    for now in (1000.0, 1030.0, 1059.999):
        assert await bindings.bind(SESSION, KEY, BOB, ttl_s=3600, now=now) == ALICE
    assert await _stored(backend, SESSION, KEY) == (ALICE, 1060.0), "the lost bind wrote nothing"
    assert await bindings.owner(SESSION, KEY, now=1059.999) == ALICE
    assert await bindings.owner(SESSION, KEY, now=1060.0) is None, "its own TTL, not BOB's"


async def test_same_owner_rebind_refreshes_the_ttl(backend: Backend) -> None:
    bindings = backend.stores.bindings
    assert await bindings.bind(SESSION, KEY, ALICE, ttl_s=60, now=1000.0) == ALICE
    assert await bindings.bind(SESSION, KEY, ALICE, ttl_s=60, now=1050.0) == ALICE
    assert await _stored(backend, SESSION, KEY) == (ALICE, 1110.0)
    assert await bindings.owner(SESSION, KEY, now=1100.0) == ALICE, "past the first TTL"
    assert await bindings.bind(SESSION, KEY, BOB, ttl_s=60, now=1100.0) == ALICE
    assert await bindings.owner(SESSION, KEY, now=1110.0) is None


async def test_expiry_follows_the_injected_clock(backend: Backend) -> None:
    """On Redis too: the server's clock has not moved, the injected one has."""
    bindings = backend.stores.bindings
    await bindings.bind(SESSION, KEY, ALICE, ttl_s=60, now=1000.0)
    assert await bindings.owner(SESSION, KEY, now=1059.9) == ALICE
    assert await bindings.owner(SESSION, KEY, now=1060.0) is None
    assert await bindings.owner(SESSION, KEY, now=10_000.0) is None
    assert await bindings.bind(SESSION, KEY, BOB, ttl_s=60, now=1060.0) == BOB, "taken over"
    assert await bindings.owner(SESSION, KEY, now=1060.0) == BOB
    assert await _stored(backend, SESSION, KEY) == (BOB, 1120.0)
    assert not await bindings.unbind(SESSION, KEY, ALICE, now=1060.0)
    assert await bindings.owner(SESSION, KEY, now=1061.0) == BOB


async def test_same_owner_rebinding_after_expiry_starts_afresh(backend: Backend) -> None:
    bindings = backend.stores.bindings
    await bindings.bind(SESSION, KEY, ALICE, ttl_s=10, now=0.0)
    assert await bindings.bind(SESSION, KEY, ALICE, ttl_s=10, now=500.0) == ALICE
    assert await bindings.owner(SESSION, KEY, now=509.0) == ALICE
    assert await bindings.owner(SESSION, KEY, now=510.0) is None


@REDIS_ONLY
async def test_redis_key_ttl_covers_the_binding_plus_grace(backend: Backend) -> None:
    bindings = backend.stores.bindings
    key = binding_key(backend.spec.prefix, SESSION, KEY)
    async with _raw_redis(backend.spec) as client:
        await bindings.bind(SESSION, KEY, ALICE, ttl_s=30, now=1000.0)
        assert 30_000 < await client.pttl(key) <= (30 + BINDING_GRACE_S) * 1000
        await bindings.bind(SESSION, KEY, ALICE, ttl_s=600, now=1001.0)
        refreshed = await client.pttl(key)
        assert 600_000 < refreshed <= (600 + BINDING_GRACE_S) * 1000, "key TTL refreshed too"
        await bindings.bind(SESSION, KEY, BOB, ttl_s=5, now=1002.0)
        assert await client.pttl(key) > 600_000, "a lost bind leaves the TTL alone"


# ---------------------------------------------------------------- unbind
async def test_unbind_only_by_the_owner(backend: Backend) -> None:
    bindings = backend.stores.bindings
    await bindings.bind(SESSION, KEY, ALICE, ttl_s=60, now=1000.0)
    assert not await bindings.unbind(SESSION, KEY, BOB, now=1001.0)
    assert await bindings.owner(SESSION, KEY, now=1001.0) == ALICE
    assert await bindings.unbind(SESSION, KEY, ALICE, now=1001.0)
    assert await bindings.owner(SESSION, KEY, now=1001.0) is None
    assert await _stored(backend, SESSION, KEY) is None
    assert not await bindings.unbind(SESSION, KEY, ALICE, now=1001.0), "already gone"
    assert await bindings.bind(SESSION, KEY, BOB, ttl_s=60, now=1002.0) == BOB, "free again"


async def test_unbind_of_an_absent_or_expired_binding_is_false(backend: Backend) -> None:
    bindings = backend.stores.bindings
    assert not await bindings.unbind(SESSION, KEY, ALICE, now=1000.0)
    await bindings.bind(SESSION, KEY, ALICE, ttl_s=60, now=1000.0)
    assert not await bindings.unbind(SESSION, KEY, ALICE, now=1060.0)


# ---------------------------------------------------------------- namespaces
async def test_kinds_are_separate_namespaces(backend: Backend) -> None:
    bindings = backend.stores.bindings
    assert await bindings.bind(SESSION, KEY, ALICE, ttl_s=60, now=1.0) == ALICE
    assert await bindings.bind(TASK, KEY, BOB, ttl_s=60, now=1.0) == BOB
    assert await bindings.owner("mrtr-state", KEY, now=1.0) is None
    assert await bindings.unbind(TASK, KEY, BOB, now=2.0)
    assert await bindings.owner(SESSION, KEY, now=2.0) == ALICE
    assert not await bindings.unbind(SESSION, KEY, BOB, now=2.0)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((SESSION, "a:b"), (SESSION, "a")),  # no separator forgery
        (("a", "b:c"), ("a-b", "c")),
        ((SESSION, "k{x}"), (SESSION, "k{y}")),  # hash-tag characters
        ((SESSION, "é" * MAX_BINDING_TEXT), (SESSION, "é" * (MAX_BINDING_TEXT - 1))),
        ((SESSION, "x"), (SESSION, "#" + "0" * 64)),  # the hashed-form marker itself
        ((SESSION, "x" * 128), (SESSION, "x" * 129)),  # verbatim and hashed key parts
    ],
)
async def test_unusual_keys_do_not_collide(
    backend: Backend, first: tuple[str, str], second: tuple[str, str]
) -> None:
    bindings = backend.stores.bindings
    assert await bindings.bind(*first, ALICE, ttl_s=60, now=1.0) == ALICE
    assert await bindings.bind(*second, BOB, ttl_s=60, now=1.0) == BOB
    assert await bindings.owner(*first, now=1.0) == ALICE
    assert await bindings.owner(*second, now=1.0) == BOB


@pytest.mark.parametrize(
    "owner", ["operator:ünïcödé-会話", "x" * MAX_BINDING_TEXT, "a\x00b", " spaced : owner "]
)
async def test_any_valid_owner_round_trips(backend: Backend, owner: str) -> None:
    bindings = backend.stores.bindings
    assert await bindings.bind(SESSION, KEY, owner, ttl_s=60, now=1.0) == owner
    assert await bindings.bind(SESSION, KEY, ALICE, ttl_s=60, now=1.0) == owner
    assert await bindings.owner(SESSION, KEY, now=1.0) == owner
    assert not await bindings.unbind(SESSION, KEY, BOB, now=1.0)
    assert await bindings.unbind(SESSION, KEY, owner, now=1.0)


async def test_bindings_survive_reopening(backend: Backend) -> None:
    await backend.stores.bindings.bind(TASK, KEY, ALICE, ttl_s=600, now=1.0)
    again = await backend.spec.open()
    try:
        assert await again.bindings.owner(TASK, KEY, now=2.0) == ALICE
        assert await again.bindings.bind(TASK, KEY, BOB, ttl_s=600, now=2.0) == ALICE
    finally:
        await again.close()


# ---------------------------------------------------------------- concurrency
async def test_concurrent_binds_agree_on_one_owner(backend: Backend) -> None:
    bindings = backend.stores.bindings
    owners = [f"{ALICE}-{i}" for i in range(CONCURRENT)]
    bound = await asyncio.gather(
        *(bindings.bind(SESSION, KEY, owner, ttl_s=60, now=1.0) for owner in owners)
    )
    assert len(set(bound)) == 1, bound
    assert bound[0] in owners
    assert await bindings.owner(SESSION, KEY, now=1.0) == bound[0]


def bind_many(
    spec: StoreSpec,
    kind_and_key: tuple[str, str],
    owners: list[str],
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.queues.Queue[tuple[str, object]],
) -> None:
    """Worker (spawned process): concurrent binds of one key, one per owner;
    reports the owners the binds returned."""

    async def work(stores: Stores) -> list[str]:
        kind, key = kind_and_key
        binds = (stores.bindings.bind(kind, key, owner, ttl_s=60, now=1.0) for owner in owners)
        return list(await asyncio.gather(*binds))

    _run(spec, barrier, results, work)


async def test_binds_in_four_processes_agree_on_one_owner(backend: Backend) -> None:
    shares = _shares(CONCURRENT, PROCESSES)
    jobs = [
        (backend.spec, (SESSION, KEY), [f"{BOB}-p{p}-{i}" for i in range(n)])
        for p, n in enumerate(shares)
    ]
    results = await asyncio.to_thread(_spawned, bind_many, jobs)
    bound = [owner for result in results for owner in result]
    assert len(bound) == CONCURRENT
    assert len(set(bound)) == 1, set(bound)
    assert bound[0] in {owner for job in jobs for owner in job[2]}
    assert await backend.stores.bindings.owner(SESSION, KEY, now=1.0) == bound[0]


# ---------------------------------------------------------------- fail closed
CALLS: dict[str, Callable[[Stores], Awaitable[object]]] = {
    "bind": lambda s: s.bindings.bind(SESSION, KEY, ALICE, ttl_s=60, now=1.0),
    "owner": lambda s: s.bindings.owner(SESSION, KEY, now=1.0),
    "unbind": lambda s: s.bindings.unbind(SESSION, KEY, ALICE, now=1.0),
}


@pytest.mark.parametrize("call", list(CALLS))
async def test_unreachable_backend_fails_closed(dead_stores: Stores, call: str) -> None:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        await CALLS[call](dead_stores)
    assert raised.value.__cause__ is not None, "raised from the backend's exception"
    assert time.monotonic() - started < 2 * REDIS_TIMEOUT_S + 1, "failed fast, no hang"


@REDIS_ONLY
@pytest.mark.parametrize(
    "fields",
    [{"owner": ALICE}, {"expires_at": "1060.0"}, {"owner": ALICE, "expires_at": "soon"}],
)
@pytest.mark.parametrize("call", list(CALLS))
async def test_malformed_redis_binding_fails_closed(
    backend: Backend, fields: dict[str, str], call: str
) -> None:
    """An edited binding is never read as absent (that would free the handle)."""
    key = binding_key(backend.spec.prefix, SESSION, KEY)
    async with _raw_redis(backend.spec) as client:
        await client.hset(key, mapping=fields)  # type: ignore[arg-type]  # Mapping key invariance
        with pytest.raises(StoreUnavailable):
            await CALLS[call](backend.stores)
        assert await client.hgetall(key) == {k.encode(): v.encode() for k, v in fields.items()}


@REDIS_ONLY
async def test_owner_that_is_not_utf8_fails_closed(backend: Backend) -> None:
    key = binding_key(backend.spec.prefix, SESSION, KEY)
    async with _raw_redis(backend.spec) as client:
        await client.hset(key, mapping={"owner": b"\xff\xfe", "expires_at": "1060.0"})
    with pytest.raises(StoreUnavailable):
        await backend.stores.bindings.owner(SESSION, KEY, now=1.0)


# ---------------------------------------------------------------- arguments
GOOD: dict[str, Any] = {"kind": SESSION, "key": KEY, "owner": ALICE, "ttl_s": 60, "now": 1.0}
BAD: list[tuple[str, Any]] = [
    ("kind", ""),
    ("kind", "Session"),
    ("kind", "mcp_session"),
    ("kind", "a:b"),
    ("kind", "x" * 33),
    ("key", ""),
    ("key", "x" * (MAX_BINDING_TEXT + 1)),
    ("key", "\ud800"),
    ("owner", ""),
    ("owner", "x" * (MAX_BINDING_TEXT + 1)),
    ("owner", "a\udfffb"),
    ("ttl_s", 0),
    ("ttl_s", -1),
    ("ttl_s", MAX_BINDING_TTL_S + 1),
    ("now", math.nan),
    ("now", math.inf),
]


def _call(stores: Stores, method: str, args: dict[str, Any]) -> Awaitable[object]:
    bindings = stores.bindings
    handle = (args["kind"], args["key"])
    if method == "bind":
        return bindings.bind(*handle, args["owner"], ttl_s=args["ttl_s"], now=args["now"])
    if method == "owner":
        return bindings.owner(*handle, now=args["now"])
    return bindings.unbind(*handle, args["owner"], now=args["now"])


#: The arguments each method takes (``owner`` takes no owner, only ``bind`` a TTL).
TAKES: dict[str, set[str]] = {
    "bind": {"kind", "key", "owner", "ttl_s", "now"},
    "owner": {"kind", "key", "now"},
    "unbind": {"kind", "key", "owner", "now"},
}


@pytest.mark.parametrize(
    ("method", "field", "value"),
    [(method, field, value) for method in TAKES for field, value in BAD if field in TAKES[method]],
)
async def test_invalid_arguments_are_refused_before_any_io(
    dead_stores: Stores, method: str, field: str, value: Any
) -> None:
    """ValueError, not StoreUnavailable, even though the backend is gone."""
    with pytest.raises(ValueError):
        await _call(dead_stores, method, {**GOOD, field: value})


@pytest.mark.parametrize(("field", "value"), BAD)
async def test_a_refused_bind_writes_nothing(backend: Backend, field: str, value: Any) -> None:
    with pytest.raises(ValueError):
        await _call(backend.stores, "bind", {**GOOD, field: value})
    assert await backend.stores.bindings.owner(SESSION, KEY, now=1.0) is None


async def test_limits_are_inclusive(backend: Backend) -> None:
    bindings = backend.stores.bindings
    longest = "k" * MAX_BINDING_TEXT
    kind = "x" * 32
    assert await bindings.bind(kind, longest, ALICE, ttl_s=MAX_BINDING_TTL_S, now=0.0) == ALICE
    assert await bindings.bind(kind, "k", ALICE, ttl_s=1, now=0.0) == ALICE
    assert await bindings.owner(kind, "k", now=0.999) == ALICE
    assert await bindings.owner(kind, longest, now=MAX_BINDING_TTL_S - 1.0) == ALICE


# ---------------------------------------------------------------- properties
_KINDS = st.from_regex(BINDING_KIND, fullmatch=True)
_ANY_CHAR = st.characters(exclude_categories=())  # lone surrogates included
_TEXTS = st.one_of(
    st.text(_ANY_CHAR, max_size=40),
    st.builds(str.__mul__, _ANY_CHAR, st.integers(MAX_BINDING_TEXT - 2, MAX_BINDING_TEXT + 2)),
)


@given(kind=st.one_of(_KINDS, st.text(_ANY_CHAR, max_size=40)), key=_TEXTS, owner=_TEXTS)
def test_check_binding_accepts_exactly_the_documented_domain(
    kind: str, key: str, owner: str
) -> None:
    """The arguments are attacker-influenced (handles arrive in headers and bodies)."""
    valid = BINDING_KIND.fullmatch(kind) is not None and _valid_text(key) and _valid_text(owner)
    try:
        check_binding(kind, key, owner, now=0.0, ttl_s=1)
    except ValueError:
        assert not valid
    else:
        assert valid


def _valid_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return 1 <= len(value) <= MAX_BINDING_TEXT


_KEYS = st.text(_ANY_CHAR, min_size=1, max_size=200)


@given(first=st.tuples(_KINDS, _KEYS), second=st.tuples(_KINDS, _KEYS))
def test_distinct_bindings_get_distinct_redis_keys(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    """Attacker-chosen keys cannot reach another binding's Redis key."""
    a, b = binding_key("p:", *first), binding_key("p:", *second)
    assert (a == b) == (first == second)
    for (kind, _), key in ((first, a), (second, b)):
        assert key.startswith(f"p:bind:{kind}:")
        assert key.count(":") == 3
