"""Redis implementations of the store ports (for fleets).

Several gateway processes or hosts share one Redis (Sentinel or Cluster in
production). Every operation that must be atomic is a single Redis command or
a single Lua script, so there is no read-modify-write race between gateways.
Every failure to reach or use Redis (``redis.exceptions.RedisError``,
``OSError``, timeouts) becomes :class:`~protocol.errors.StoreUnavailable`
raised ``from`` the original (fail closed); nothing from ``redis`` escapes.

Key layout (``P`` is the configured prefix, ``baton:`` by default; ``<x>`` is
:func:`key_part` of ``x``). ADR 0010 has the full table and the reasoning.

=================================  ======  ==========================  ==================
key                                type    value                       TTL
=================================  ======  ==========================  ==================
``P nonce:<scope>:<nonce>``        string  ``1``                       ``ttl_s`` (server)
``P tx:{<conv>}:head``             hash    ``seq``, ``hash``           none
``P tx:{<conv>}:log``              list    entry canonical bytes       none
``P tx:{<conv>}:body``             hash    ``seq`` -> sealed body      none
``P audit:{audit}:head``           hash    ``seq``, ``hash``           none
``P audit:{audit}:log``            list    event canonical bytes       none
``P audit:{audit}:once``           hash    idempotency key -> ``seq``  none
``P rate:<key>:<window index>``    string  units counted               window rest + 1 window
``P bind:<kind>:<key>``            hash    ``owner``, ``expires_at``   ``ttl_s`` + 60 s
``P inbox:{inbox}:b:<bundle>``     hash    record, fence, lease        none
``P inbox:{inbox}:ev:<bundle>``    list    signed lifecycle events     none
``P inbox:{inbox}:idem:<queue>``   hash    idempotency key -> bundle   none
``P inbox:{inbox}:q:<queue>:<i>``  zset    bundle ids (index ``i``)    none
=================================  ======  ==========================  ==================

* The list index of a record is its ``seq``; the head hash names the last one.
  The three keys of one conversation share the hash tag ``{<conv>}`` and the
  two audit keys share ``{audit}``, so each chain lives in one Cluster slot and
  one Lua script can update it atomically.
* Nonce claims are ``SET key 1 NX EX ttl_s``: one command, first writer wins.
* Appends are one Lua script (``EVALSHA``): compare the head with the
  record's ``seq``/``prev``, then ``RPUSH`` the record, ``HSET`` the sealed
  body and ``HSET`` the new head, or return a conflict marker and write
  nothing. It also refuses (fails closed) when the list length and the head
  disagree, which only happens if keys were evicted or edited: run Redis with
  ``maxmemory-policy noeviction``.
* Rate limits are one Lua script: ``GET``, then ``INCRBY`` + ``PEXPIRE`` only
  if the cost fits.
* Bindings (:class:`RedisBindingStore`): bind and unbind are one Lua script
  each. Bind reads ``owner``/``expires_at``; if the binding is live (the
  injected ``now`` is before ``expires_at``) and another owner holds it, it
  returns that owner and writes nothing; else it writes ``owner`` and
  ``expires_at = now + ttl_s`` and sets the key TTL (``PEXPIRE``). Unbind
  deletes only a live binding held by the caller. ``owner`` is one
  ``HMGET``. A binding hash missing a field is refused (fail closed), never
  read as absent.
* The inbox (:class:`RedisInboxStore`): every key shares the hash tag
  ``{inbox}`` (one slot: a create or a status change touches the record, the
  queue's idempotency hash and its indexes together). Index ``i`` is ``all``
  or a status (scored by ``created_at``), ``due`` (open bundles, scored by
  ``resolve_by``) or ``leases`` (claimed bundles, scored by the lease end).
  Each step (create, claim, release, decide, set status, requeue, append) is
  one Lua script deciding with the injected ``now``.

**Clocks.** Redis expires keys by *its own* clock: a nonce lives ``ttl_s``
seconds of server time from the claim, and a rate counter is deleted after
the rest of its window plus one more window (only garbage collection: the
window a hit counts in is chosen from the injected ``now`` and is part of the
key). The SQLite store measures both with the injected ``now`` instead.
Bindings are decided by the injected ``now`` in both backends (the scripts
compare it with the stored ``expires_at``); the Redis key TTL, ``ttl_s`` plus
:data:`BINDING_GRACE_S` of server time, only frees memory, and its grace keeps
Redis from deleting a binding that a gateway whose clock runs behind still
counts as live. The store never reads the local clock.

Scope, nonce, conversation, rate and binding keys are arbitrary strings;
they enter keys through :func:`key_part`, which passes a conservative
alphabet through verbatim and replaces anything else by ``#`` + SHA-256 hex,
so no input can forge a separator or a hash tag. A binding ``kind`` is
checked to be ``[a-z0-9-]{1,32}`` and used verbatim.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from gateway.stores.common import (
    Window,
    check_rate_args,
    check_ttl,
    decide,
    load_record,
    open_body,
    read_span,
    require_hash,
    seal_body,
    stored_seq,
)
from keys.atrest import StoreCipher
from protocol.audit import AuditEvent
from protocol.chain import GENESIS, ChainedRecord, ChainHead
from protocol.errors import (
    ChainConflict,
    ConfigurationError,
    Conflict,
    DuplicateBundle,
    NotFound,
    StaleDecision,
    StoreUnavailable,
)
from protocol.ports import (
    INBOX_STATUSES,
    STATUS_TRANSITIONS,
    InboxRecord,
    InboxStatus,
    Lease,
    RateDecision,
    check_binding,
    check_inbox_call,
    check_inbox_page,
    check_inbox_record,
    check_opaque,
    check_status_target,
    counter_in_range,
    storable_inbox_id,
)
from protocol.transcript import TranscriptEntry

__all__ = [
    "BINDING_GRACE_S",
    "DEFAULT_PREFIX",
    "INBOX_INDEXES",
    "INBOX_TAG",
    "ChainKeys",
    "RedisAuditLog",
    "RedisBindingStore",
    "RedisInboxStore",
    "RedisNonceStore",
    "RedisRateLimiter",
    "RedisTranscriptStore",
    "audit_keys",
    "audit_once_key",
    "binding_key",
    "inbox_events_key",
    "inbox_idempotency_key",
    "inbox_index_key",
    "inbox_keys",
    "inbox_record_key",
    "key_part",
    "nonce_key",
    "ping",
    "rate_key",
    "transcript_body_key",
    "transcript_keys",
]

DEFAULT_PREFIX: Final = "baton:"

_SAFE_PART: Final = re.compile(r"[A-Za-z0-9._~+/=-]{1,128}")
_SAFE_PREFIX: Final = re.compile(r"[A-Za-z0-9._:-]{0,64}")
_BACKEND_ERRORS: Final = (RedisError, OSError, TimeoutError, EOFError)

# KEYS: head, log[, bodies]   ARGV: seq, prev, hash, record[, sealed body]
# Returns 1 appended, 0 conflict (nothing written), -1 head and log disagree.
_CHECK_HEAD_LUA: Final = f"""
local head = redis.call('HMGET', KEYS[1], 'seq', 'hash')
local seq = -1
local hash = '{GENESIS}'
if head[1] or head[2] then
  if not (head[1] and head[2]) then
    return -1
  end
  seq = tonumber(head[1])
  hash = head[2]
end
if redis.call('LLEN', KEYS[2]) ~= seq + 1 then
  return -1
end
if tonumber(ARGV[1]) ~= seq + 1 or ARGV[2] ~= hash then
  return 0
end
"""
_APPEND_LUA: Final = (
    _CHECK_HEAD_LUA
    + """
redis.call('RPUSH', KEYS[2], ARGV[4])
if #KEYS >= 3 and #ARGV >= 5 then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'hash', ARGV[3])
return 1
"""
)
# The audit append with an idempotency key (KEYS[3] the ``once`` hash, ARGV[5]
# the key): 2, and nothing written, when the key is already there.
_APPEND_ONCE_LUA: Final = (
    """
if redis.call('HEXISTS', KEYS[3], ARGV[5]) == 1 then
  return 2
end
"""
    + _CHECK_HEAD_LUA
    + """
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[5], ARGV[1])
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'hash', ARGV[3])
return 1
"""
)
_APPENDED: Final = 1
_CONFLICT: Final = 0
_ALREADY: Final = 2

# KEYS: counter   ARGV: cost, limit, keep_ms   Returns units counted before this hit.
_RATE_LUA: Final = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost = tonumber(ARGV[1])
if used + cost <= tonumber(ARGV[2]) then
  redis.call('INCRBY', KEYS[1], cost)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return used
"""

#: Server seconds a binding key outlives its ``ttl_s`` (clock skew between gateways).
BINDING_GRACE_S: Final = 60

# KEYS: binding   ARGV: owner, now, expires_at, keep_ms   Returns the owner bound now.
_BIND_LUA: Final = """
local held = redis.call('HMGET', KEYS[1], 'owner', 'expires_at')
if held[1] or held[2] then
  local expires_at = tonumber(held[2])
  if not (held[1] and expires_at) then
    return redis.error_reply('malformed binding')
  end
  if held[1] ~= ARGV[1] and tonumber(ARGV[2]) < expires_at then
    return held[1]
  end
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'expires_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return ARGV[1]
"""

# KEYS: binding   ARGV: owner, now   Returns 1 removed, 0 not held by owner (or not live).
_UNBIND_LUA: Final = """
local held = redis.call('HMGET', KEYS[1], 'owner', 'expires_at')
if not (held[1] or held[2]) then
  return 0
end
local expires_at = tonumber(held[2])
if not (held[1] and expires_at) then
  return redis.error_reply('malformed binding')
end
if held[1] == ARGV[1] and tonumber(ARGV[2]) < expires_at then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


def key_part(value: str) -> str:
    """``value`` if it is 1-128 characters of ``[A-Za-z0-9._~+/=-]``, else
    ``#`` + SHA-256 hex of its UTF-8. Injective in practice (``#`` is not in
    the verbatim alphabet), and never contains ``:``, ``{`` or ``}``."""
    if _SAFE_PART.fullmatch(value):
        return value
    return "#" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainKeys:
    """The keys of one chain; ``bodies`` is None for chains without bodies."""

    head: str
    log: str
    bodies: str | None = None

    @property
    def all(self) -> list[str]:
        return [self.head, self.log] + ([self.bodies] if self.bodies else [])


def _transcript_base(prefix: str, conversation: str) -> str:
    return f"{prefix}tx:{{{key_part(conversation)}}}"


def transcript_keys(prefix: str, conversation: str) -> ChainKeys:
    base = _transcript_base(prefix, conversation)
    return ChainKeys(f"{base}:head", f"{base}:log", transcript_body_key(prefix, conversation))


def transcript_body_key(prefix: str, conversation: str) -> str:
    return f"{_transcript_base(prefix, conversation)}:body"


def audit_keys(prefix: str) -> ChainKeys:
    base = f"{prefix}audit:{{audit}}"
    return ChainKeys(f"{base}:head", f"{base}:log")


def audit_once_key(prefix: str) -> str:
    return f"{prefix}audit:{{audit}}:once"


def nonce_key(prefix: str, scope: str, nonce: str) -> str:
    return f"{prefix}nonce:{key_part(scope)}:{key_part(nonce)}"


def rate_key(prefix: str, key: str, window_index: int) -> str:
    return f"{prefix}rate:{key_part(key)}:{window_index}"


def binding_key(prefix: str, kind: str, key: str) -> str:
    """``kind`` is a checked token (``[a-z0-9-]``), so it is used verbatim."""
    return f"{prefix}bind:{kind}:{key_part(key)}"


def _checked_prefix(prefix: str) -> str:
    if not _SAFE_PREFIX.fullmatch(prefix):
        raise ConfigurationError("redis key prefix: up to 64 of [A-Za-z0-9._:-]")
    return prefix


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn any failure to talk to Redis into :class:`StoreUnavailable`."""
    try:
        yield
    except _BACKEND_ERRORS as exc:
        raise StoreUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


async def ping(client: Redis) -> None:
    """Round-trip to Redis; :class:`StoreUnavailable` if it does not answer."""
    with _translated("redis ping"):
        await client.ping()


class _RedisChain:
    """Compare-and-append chains shared by transcripts and the audit log."""

    def __init__(self, client: Redis, what: str) -> None:
        self._client = client
        self._what = what
        self._append = client.register_script(_APPEND_LUA)

    async def head(self, keys: ChainKeys) -> ChainHead:
        with _translated(f"{self._what} head"):
            seq, digest = await self._client.hmget(keys.head, ["seq", "hash"])
        if seq is None and digest is None:
            return ChainHead()
        if seq is None or digest is None:
            raise StoreUnavailable(f"{self._what} head is incomplete")
        return ChainHead(int(seq), _text(digest))

    async def append(
        self, keys: ChainKeys, record: ChainedRecord, sealed: bytes | None = None
    ) -> None:
        """Run the append script; ChainConflict when it did not extend the head."""
        require_hash(record)
        args: list[bytes | str | int] = [record.seq, record.prev, record.hash, record.canonical()]
        if sealed is not None:
            args.append(sealed)
        with _translated(f"{self._what} append"):
            result = await self._append(keys=keys.all, args=args)
        if result == _CONFLICT:
            raise ChainConflict(f"{self._what} append at seq {record.seq} lost a race; retry")
        if result != _APPENDED:
            raise StoreUnavailable(f"{self._what} head and log disagree (evicted or edited keys?)")

    async def read_raw(self, keys: ChainKeys, span: tuple[int, int]) -> list[bytes]:
        with _translated(f"{self._what} read"):
            items = await self._client.lrange(keys.log, *span)
        return [_bytes(item) for item in items]


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def _text(value: bytes | str) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value


class RedisNonceStore:
    """:class:`~protocol.ports.NonceStore` on Redis: ``SET key 1 NX EX ttl_s``.

    The claim lives ``ttl_s`` seconds of the *Redis server's* clock; ``now``
    is not used (Redis cannot expire by a caller's clock).
    """

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = _checked_prefix(prefix)

    async def claim(self, scope: str, nonce: str, *, ttl_s: int, now: float) -> bool:
        """True for the first claim of ``(scope, nonce)`` while it lives."""
        check_ttl(ttl_s)
        with _translated("nonce store"):
            stored = await self._client.set(
                nonce_key(self._prefix, scope, nonce), b"1", nx=True, ex=ttl_s
            )
        return bool(stored)


class RedisTranscriptStore:
    """:class:`~protocol.ports.TranscriptStore` on Redis.

    Invariants: for every conversation, ``log[i]`` is the canonical bytes of
    entry ``i`` for ``i`` in ``0..head.seq`` (no gaps, no forks: only the append
    script writes, after comparing the head); ``body[i]``, when present, is
    entry ``i``'s body sealed with ``cipher`` under
    :func:`~gateway.stores.common.body_aad`.
    """

    def __init__(self, client: Redis, cipher: StoreCipher, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._cipher = cipher
        self._prefix = _checked_prefix(prefix)
        self._chain = _RedisChain(client, "transcript")

    async def head(self, conversation: str) -> ChainHead:
        """The newest entry's ``(seq, hash)``; ``ChainHead()`` when empty."""
        return await self._chain.head(transcript_keys(self._prefix, conversation))

    async def append(self, entry: TranscriptEntry, body: bytes | None) -> None:
        """Compare-and-append with its sealed body, in one Lua script."""
        conversation = entry.conversation
        sealed = None if body is None else seal_body(self._cipher, conversation, entry.seq, body)
        await self._chain.append(transcript_keys(self._prefix, conversation), entry, sealed)

    async def read(
        self, conversation: str, *, after_seq: int = -1, limit: int = 1000
    ) -> Sequence[TranscriptEntry]:
        """Entries with ``seq > after_seq`` in order, at most ``limit``."""
        span = read_span(after_seq, limit)
        if span is None:
            return ()
        raw = await self._chain.read_raw(transcript_keys(self._prefix, conversation), span)
        return tuple(
            load_record(TranscriptEntry, data, seq=span[0] + i, scope=conversation)
            for i, data in enumerate(raw)
        )

    async def read_body(self, conversation: str, seq: int) -> bytes | None:
        """The decrypted body of entry ``seq``; None if it had none (or no such entry)."""
        if not stored_seq(seq):
            return None
        key = transcript_body_key(self._prefix, conversation)
        with _translated("transcript body read"):
            sealed = await self._client.hget(key, str(seq))
        if sealed is None:
            return None
        return open_body(self._cipher, conversation, seq, _bytes(sealed))


class RedisAuditLog:
    """:class:`~protocol.ports.AuditLog` on Redis: one chain per prefix, appended by Lua.

    Idempotency keys (``once``) live in ``P audit:{audit}:once`` (key -> seq),
    in the chain's slot, so the check and the append are one script.
    """

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._keys = audit_keys(_checked_prefix(prefix))
        self._once_key = audit_once_key(_checked_prefix(prefix))
        self._chain = _RedisChain(client, "audit")
        self._append_once = client.register_script(_APPEND_ONCE_LUA)

    async def head(self) -> ChainHead:
        return await self._chain.head(self._keys)

    async def append(self, event: AuditEvent, *, once: str | None = None) -> bool:
        """Compare-and-append in one Lua script; False (nothing written) when
        ``once`` is already recorded."""
        if once is None:
            await self._chain.append(self._keys, event)
            return True
        require_hash(event)
        args: list[bytes | str | int] = [event.seq, event.prev, event.hash, event.canonical(), once]
        with _translated("audit append"):
            result = await self._append_once(
                keys=[self._keys.head, self._keys.log, self._once_key], args=args
            )
        if result == _ALREADY:
            return False
        if result == _CONFLICT:
            raise ChainConflict(f"audit append at seq {event.seq} lost a race; retry")
        if result != _APPENDED:
            raise StoreUnavailable("audit head and log disagree (evicted or edited keys?)")
        return True

    async def read(self, *, after_seq: int = -1, limit: int = 1000) -> Sequence[AuditEvent]:
        span = read_span(after_seq, limit)
        if span is None:
            return ()
        raw = await self._chain.read_raw(self._keys, span)
        return tuple(load_record(AuditEvent, data, seq=span[0] + i) for i, data in enumerate(raw))


class RedisRateLimiter:
    """:class:`~protocol.ports.RateLimiter` on Redis, shared fleet-wide.

    Fixed windows of the injected ``now``; the counter for ``(key, window)``
    is read and, if the cost fits, increased and given its expiry, all in one
    Lua script. A refused hit is not counted.
    """

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._prefix = _checked_prefix(prefix)
        self._script = client.register_script(_RATE_LUA)

    async def hit(
        self, key: str, *, limit: int, window_s: float, now: float, cost: int = 1
    ) -> RateDecision:
        """Count ``cost`` against ``key`` in the window holding ``now`` if it fits."""
        check_rate_args(limit, cost)
        window = Window.at(now, window_s)
        counter = rate_key(self._prefix, key, window.index)
        with _translated("rate limiter"):
            used = await self._script(keys=[counter], args=[cost, limit, window.keep_ms])
        decision, _ = decide(int(used), cost=cost, limit=limit, window=window)
        return decision


class RedisBindingStore:
    """:class:`~protocol.ports.BindingStore` on Redis, shared fleet-wide.

    Invariant: a binding key is absent or a hash with both ``owner`` (UTF-8)
    and ``expires_at`` (a float in the injected clock); only the bind script
    writes it and only the unbind script (or Redis expiry) deletes it. Each
    script compares the stored ``expires_at`` with the caller's ``now``, so
    liveness follows the injected clock exactly as in SQLite.
    """

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = _checked_prefix(prefix)
        self._bind = client.register_script(_BIND_LUA)
        self._unbind = client.register_script(_UNBIND_LUA)

    async def bind(self, kind: str, key: str, owner: str, *, ttl_s: int, now: float) -> str:
        """One script: take the key unless another owner holds it live."""
        check_binding(kind, key, owner, now=now, ttl_s=ttl_s)
        keep_ms = (ttl_s + BINDING_GRACE_S) * 1000
        args: list[str | float | int] = [owner, now, now + ttl_s, keep_ms]
        with _translated("binding store"):
            bound = await self._bind(keys=[binding_key(self._prefix, kind, key)], args=args)
        return _owner_text(bound)

    async def owner(self, kind: str, key: str, *, now: float) -> str | None:
        """One ``HMGET``; the owner if the binding is live at ``now``."""
        check_binding(kind, key, now=now)
        with _translated("binding store"):
            held, expires_at = await self._client.hmget(
                binding_key(self._prefix, kind, key), ["owner", "expires_at"]
            )
        if held is None and expires_at is None:
            return None
        if held is None or expires_at is None:
            raise StoreUnavailable("binding is malformed (edited key?)")
        try:
            live = now < float(expires_at)
        except ValueError as exc:
            raise StoreUnavailable("binding expiry is not a number (edited key?)") from exc
        return _owner_text(held) if live else None

    async def unbind(self, kind: str, key: str, owner: str, *, now: float) -> bool:
        """One script: compare owner and liveness, then ``DEL``."""
        check_binding(kind, key, owner, now=now)
        with _translated("binding store"):
            removed = await self._unbind(
                keys=[binding_key(self._prefix, kind, key)], args=[owner, now]
            )
        return bool(removed == 1)


def _owner_text(value: bytes | str) -> str:
    """An owner as stored (UTF-8); undecodable bytes mean the key was edited."""
    try:
        return value.decode("utf-8") if isinstance(value, bytes) else value
    except UnicodeDecodeError as exc:
        raise StoreUnavailable("binding owner is not UTF-8 (edited key?)") from exc


# ---------------------------------------------------------------- inbox
#: The hash tag all inbox keys share: one Cluster slot, so every step is one script.
INBOX_TAG: Final = "{inbox}"
#: Index names besides the statuses: every bundle of a queue, open deadlines, live leases.
INBOX_INDEXES: Final = (*INBOX_STATUSES, "due", "leases")
#: ``KEYS`` of a bundle step: the record, then the queue's indexes in this order.
_BUNDLE_KEYS: Final = ("record", *INBOX_INDEXES)


def _lua_table(entries: Iterable[tuple[str, str]]) -> str:
    """A Lua table constructor ``{name = value, ...}`` (names are Lua identifiers)."""
    return "{" + ", ".join(f"{name} = {value}" for name, value in sorted(entries)) + "}"


# Shared head of every bundle step. KEYS: record, the status indexes, due, leases.
# ARGV[1]: the queue the caller looked up, ARGV[2]: now. Reads and checks the
# record (fails closed on a malformed one); defines move() and drop_lease().
_BUNDLE_PRELUDE: Final = f"""
local IDX = {_lua_table((s, str(i + 2)) for i, s in enumerate(INBOX_STATUSES))}
local DUE, LEASES = {len(INBOX_STATUSES) + 2}, {len(INBOX_STATUSES) + 3}
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {{'missing'}}
end
local f = redis.call('HMGET', KEYS[1], 'bundle_id', 'queue', 'status', 'created_at',
  'resolve_by', 'version', 'fence', 'lease_owner', 'lease_until', 'lease_token')
local id, queue, status, created = f[1], f[2], f[3], f[4]
local resolve_by, version, fence = tonumber(f[5]), tonumber(f[6]), tonumber(f[7])
if not (id and queue and status and IDX[status] and created and tonumber(created)
    and resolve_by and version and fence) then
  return redis.error_reply('malformed inbox record')
end
local holder, held_until, token = f[8], tonumber(f[9]), tonumber(f[10])
if status == 'claimed' then
  if not (holder and held_until and token) then
    return redis.error_reply('malformed inbox lease')
  end
elseif f[8] or f[9] or f[10] then
  return redis.error_reply('malformed inbox lease')
end
if queue ~= ARGV[1] then
  return redis.error_reply('inbox record is not in the queue it was looked up in')
end
local now = tonumber(ARGV[2])
local function move(to)
  redis.call('ZREM', KEYS[IDX[status]], id)
  redis.call('ZADD', KEYS[IDX[to]], created, id)
  redis.call('HSET', KEYS[1], 'status', to)
end
local function drop_lease()
  redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_until', 'lease_token')
  redis.call('ZREM', KEYS[LEASES], id)
end
"""

# ARGV[3]: owner, ARGV[4]: lease until. Returns {'ok', token} or a refusal.
_CLAIM_LUA: Final = (
    _BUNDLE_PRELUDE
    + """
if status ~= 'queued' and status ~= 'claimed' then
  return {'closed'}
end
if not (now < resolve_by) then
  return {'due'}
end
if status == 'claimed' and now < held_until and holder ~= ARGV[3] then
  return {'held'}
end
local next_token = redis.call('HINCRBY', KEYS[1], 'fence', 1)
move('claimed')
redis.call('HSET', KEYS[1], 'lease_owner', ARGV[3], 'lease_until', ARGV[4],
  'lease_token', next_token)
redis.call('ZADD', KEYS[LEASES], ARGV[4], id)
return {'ok', next_token}
"""
)

# ARGV[3]: fencing token. Returns {'ok'} or {'stale'}.
_RELEASE_LUA: Final = (
    _BUNDLE_PRELUDE
    + """
if status ~= 'claimed' or token ~= tonumber(ARGV[3]) or not (now < held_until) then
  return {'stale'}
end
drop_lease()
move('queued')
return {'ok'}
"""
)

# ARGV[3]: fencing token, ARGV[4]: version, ARGV[5]: decision.
# Returns {'ok', record fields} or {'stale', reason}; the checks are SqliteInboxStore.decide's.
_DECIDE_LUA: Final = (
    _BUNDLE_PRELUDE
    + """
if status ~= 'claimed' then
  return {'stale', 'bundle is ' .. status .. ', not claimed'}
end
if token ~= tonumber(ARGV[3]) then
  return {'stale', "fencing token is not the current lease's"}
end
if not (now < held_until) then
  return {'stale', 'the lease lapsed'}
end
if version ~= tonumber(ARGV[4]) then
  return {'stale', 'version is not current'}
end
if not (now < resolve_by) then
  return {'stale', 'bundle is past its resolve_by'}
end
drop_lease()
move('decided')
redis.call('ZREM', KEYS[DUE], id)
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'decision', ARGV[5])
return {'ok', redis.call('HGETALL', KEYS[1])}
"""
)

_FROM: Final = {
    target: _lua_table((s, "true") for s in sources)
    for target, sources in STATUS_TRANSITIONS.items()
}

# ARGV[3]: target status. Returns {'ok', record fields}, {'illegal'} or {'early'}.
_STATUS_LUA: Final = (
    _BUNDLE_PRELUDE
    + f"""
local FROM = {_lua_table(_FROM.items())}
local target = ARGV[3]
if not (FROM[target] and FROM[target][status]) then
  return {{'illegal'}}
end
if target == 'expired' and now < resolve_by then
  return {{'early'}}
end
if status == 'claimed' then
  drop_lease()
end
if target == 'expired' or target == 'cancelled' then
  redis.call('ZREM', KEYS[DUE], id)
end
move(target)
redis.call('HINCRBY', KEYS[1], 'version', 1)
return {{'ok', redis.call('HGETALL', KEYS[1])}}
"""
)

# Returns {'ok', record fields} when the lease had lapsed, else {'skip'}.
_REQUEUE_LUA: Final = (
    _BUNDLE_PRELUDE
    + """
if status ~= 'claimed' or now < held_until then
  return {'skip'}
end
drop_lease()
move('queued')
return {'ok', redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS: record, idempotency hash, all, queued, due.
# ARGV: idempotency key, bundle id, created_at, resolve_by, then the record's field/value pairs.
# Returns {'created'}, {'exists', stored bundle id} or {'duplicate'} (bundle id taken).
_CREATE_LUA: Final = """
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then
  return {'exists', existing}
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'duplicate'}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[2])
return {'created'}
"""

# KEYS: record, events   ARGV: seq, event   Returns 1 appended, 0 conflict, -1 no such bundle.
_APPEND_EVENT_LUA: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""

_LEASE_FIELDS: Final = (b"lease_owner", b"lease_until", b"lease_token")


def _inbox_base(prefix: str) -> str:
    return f"{prefix}inbox:{INBOX_TAG}"


def inbox_record_key(prefix: str, bundle_id: str) -> str:
    return f"{_inbox_base(prefix)}:b:{key_part(bundle_id)}"


def inbox_events_key(prefix: str, bundle_id: str) -> str:
    return f"{_inbox_base(prefix)}:ev:{key_part(bundle_id)}"


def inbox_idempotency_key(prefix: str, queue: str) -> str:
    """The hash of ``queue``: idempotency key -> bundle id."""
    return f"{_inbox_base(prefix)}:idem:{key_part(queue)}"


def inbox_index_key(prefix: str, queue: str, index: str) -> str:
    """A sorted set of ``queue``'s bundle ids: ``all`` and each status scored by
    ``created_at``, ``due`` by ``resolve_by``, ``leases`` by lease expiry."""
    if index != "all" and index not in INBOX_INDEXES:
        raise ValueError(f"unknown inbox index {index!r}")
    return f"{_inbox_base(prefix)}:q:{key_part(queue)}:{index}"


def inbox_keys(prefix: str, bundle_id: str, queue: str) -> list[str]:
    """Every key a step on one bundle touches (its record and its queue's indexes)."""
    indexes = (inbox_index_key(prefix, queue, index) for index in INBOX_INDEXES)
    return [inbox_record_key(prefix, bundle_id), *indexes]


class RedisInboxStore:
    """:class:`~protocol.ports.InboxStore` on Redis, shared fleet-wide (ADR 0010, inbox).

    Invariants: a bundle's record hash holds every :class:`InboxRecord` field
    (numbers as Python ``repr``, so floats round-trip exactly), ``fence`` (the
    last fencing token issued) and the ``lease_*`` fields exactly while the
    status is ``claimed``; the bundle id is in exactly one of its queue's
    status indexes (the one its status names), in ``all`` always, in ``due``
    while open and in ``leases`` while claimed. Only the scripts here write
    these keys, one script per atomic step; each decides with the caller's
    ``now``. No inbox key has a TTL.

    Steps on one bundle first read its (immutable) queue with one ``HMGET``
    to name the queue's index keys, so every key a script touches is passed
    in ``KEYS``; the script checks the queue again. All inbox keys share the
    hash tag ``{inbox}`` and so one Cluster slot.
    """

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = _checked_prefix(prefix)
        self._create = client.register_script(_CREATE_LUA)
        self._claim = client.register_script(_CLAIM_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._decide = client.register_script(_DECIDE_LUA)
        self._status = client.register_script(_STATUS_LUA)
        self._requeue = client.register_script(_REQUEUE_LUA)
        self._append = client.register_script(_APPEND_EVENT_LUA)

    async def create(self, record: InboxRecord) -> tuple[InboxRecord, bool]:
        """One script: look up the idempotency key, else store record and indexes."""
        check_inbox_record(record)
        prefix, queue, bundle_id = self._prefix, record.queue, record.bundle_id
        keys = [
            inbox_record_key(prefix, bundle_id),
            inbox_idempotency_key(prefix, queue),
            inbox_index_key(prefix, queue, "all"),
            inbox_index_key(prefix, queue, "queued"),
            inbox_index_key(prefix, queue, "due"),
        ]
        created_at, resolve_by = repr(record.created_at), repr(record.resolve_by)
        args = [record.idempotency_key, bundle_id, created_at, resolve_by]
        args += [part for field in _record_fields(record) for part in field]
        with _translated("inbox create"):
            outcome = await self._create(keys=keys, args=args)
        verdict = _verdict(outcome)
        if verdict == b"created":
            return record, True
        if verdict == b"duplicate":
            raise DuplicateBundle("bundle id is stored under another idempotency key")
        stored = await self.get(_owner_text(outcome[1]))
        if stored is None:
            raise StoreUnavailable("idempotency key names a missing bundle (edited keys?)")
        return stored, False

    async def get(self, bundle_id: str) -> InboxRecord | None:
        """One ``HGETALL``."""
        if not storable_inbox_id(bundle_id):
            return None
        with _translated("inbox read"):
            fields = await self._client.hgetall(inbox_record_key(self._prefix, bundle_id))
        return _inbox_record(cast("dict[bytes, bytes]", fields)) if fields else None

    async def list(
        self, queue: str, *, status: InboxStatus | None = None, limit: int = 100
    ) -> Sequence[InboxRecord]:
        """``ZRANGE`` of the index, then the records in one ``MULTI``/``EXEC``;
        a record that left ``status`` in between is dropped."""
        check_inbox_page(queue, limit=limit, status=status)
        if limit <= 0:
            return ()
        index = inbox_index_key(self._prefix, queue, status or "all")
        with _translated("inbox list"):
            members = cast("Sequence[bytes]", await self._client.zrange(index, 0, limit - 1))
            if not members:
                return ()
            async with self._client.pipeline(transaction=True) as pipe:
                for member in members:
                    pipe.hgetall(inbox_record_key(self._prefix, _owner_text(member)))
                rows: Sequence[dict[bytes, bytes]] = await pipe.execute()
        if not all(rows):
            raise StoreUnavailable("inbox index names a missing bundle (edited keys?)")
        records = (_inbox_record(row) for row in rows)
        return tuple(r for r in records if status is None or r.status == status)

    async def claim(self, bundle_id: str, owner: str, *, lease_s: float, now: float) -> Lease:
        """One script: take, take over or renew the lease; ``HINCRBY fence``."""
        check_inbox_call(bundle_id, now=now, owner=owner, lease_s=lease_s)
        until = float(now + lease_s)
        outcome = await self._step(self._claim, bundle_id, now, [owner, repr(until)], "claim")
        verdict = _verdict(outcome)
        if verdict == b"ok":
            return Lease(owner, until, int(outcome[1]))
        if verdict == b"held":
            raise Conflict("another owner holds a live lease")
        if verdict == b"due":
            raise Conflict("bundle is past its resolve_by")
        raise Conflict("bundle is no longer open")

    async def release(self, bundle_id: str, *, fencing_token: int, now: float) -> None:
        """One script: drop the live lease named by ``fencing_token``."""
        check_inbox_call(bundle_id, now=now)
        if not counter_in_range(fencing_token):
            raise Conflict("fencing token is not current")
        outcome = await self._step(self._release, bundle_id, now, [fencing_token], "release")
        if _verdict(outcome) != b"ok":
            raise Conflict("fencing token is not the live lease's")

    async def decide(
        self, bundle_id: str, *, fencing_token: int, version: int, decision: str, now: float
    ) -> InboxRecord:
        """One script: check lease, token, version and deadline, then record."""
        check_inbox_call(bundle_id, now=now)
        check_opaque("decision", decision)
        if not (counter_in_range(fencing_token) and counter_in_range(version)):
            raise StaleDecision("fencing token or version is not current")
        args: Sequence[str | int] = [fencing_token, version, decision]
        outcome = await self._step(self._decide, bundle_id, now, args, "decide")
        if _verdict(outcome) != b"ok":
            raise StaleDecision(_owner_text(outcome[1]))
        return _inbox_record(_pairs(outcome[1]))

    async def set_status(self, bundle_id: str, status: InboxStatus, *, now: float) -> None:
        """One script along :data:`~protocol.ports.STATUS_TRANSITIONS`."""
        check_inbox_call(bundle_id, now=now)
        check_status_target(status)
        outcome = await self._step(self._status, bundle_id, now, [status], "status")
        verdict = _verdict(outcome)
        if verdict == b"early":
            raise Conflict("bundle is not due yet")
        if verdict != b"ok":
            raise Conflict(f"the bundle cannot become {status} from its status")

    async def append_event(self, bundle_id: str, event: str, *, seq: int) -> None:
        """One script: ``LLEN`` must equal ``seq``, then ``RPUSH``."""
        check_inbox_call(bundle_id)
        check_opaque("event", event)
        if not counter_in_range(seq):
            raise ChainConflict(f"event seq {seq} is not the next position")
        keys = [
            inbox_record_key(self._prefix, bundle_id),
            inbox_events_key(self._prefix, bundle_id),
        ]
        with _translated("inbox event append"):
            result = await self._append(keys=keys, args=[seq, event])
        if result == -1:
            raise NotFound("no such bundle")
        if result != 1:
            raise ChainConflict(f"event seq {seq} is not the next position; re-read and retry")

    async def events(self, bundle_id: str) -> Sequence[str]:
        """One ``LRANGE``."""
        if not storable_inbox_id(bundle_id):
            return ()
        with _translated("inbox events"):
            items = await self._client.lrange(inbox_events_key(self._prefix, bundle_id), 0, -1)
        return tuple(_owner_text(item) for item in items)

    async def requeue_lapsed(
        self, queue: str, *, now: float, limit: int = 100
    ) -> Sequence[InboxRecord]:
        """The ``leases`` index up to ``now``, then one requeue script per bundle
        (pipelined); each script re-checks the lease, so a bundle renewed in
        between is left alone."""
        check_inbox_page(queue, limit=limit, now=now)
        index = inbox_index_key(self._prefix, queue, "leases")
        return await self._sweep(
            self._requeue, queue=queue, index=index, now=now, limit=limit, args=[], what="requeue"
        )

    async def expire_due(
        self, queue: str, *, now: float, limit: int = 100
    ) -> Sequence[InboxRecord]:
        """The ``due`` index up to ``now``, then the status script (``expired``)
        per bundle, pipelined; each re-checks status and deadline."""
        check_inbox_page(queue, limit=limit, now=now)
        index = inbox_index_key(self._prefix, queue, "due")
        return await self._sweep(
            self._status,
            queue=queue,
            index=index,
            now=now,
            limit=limit,
            args=["expired"],
            what="expiry",
        )

    async def _step(
        self,
        script: AsyncScript,
        bundle_id: str,
        now: float,
        args: Sequence[str | int],
        what: str,
    ) -> Sequence[Any]:
        """Look up the bundle's queue, then run ``script`` on its keys.

        The queue never changes after create, so reading it first is safe;
        the script checks it again. :class:`NotFound` for an unknown bundle.
        """
        with _translated(f"inbox {what}"):
            queue, stored_id = await self._client.hmget(
                inbox_record_key(self._prefix, bundle_id), ["queue", "bundle_id"]
            )
            if queue is None and stored_id is None:
                raise NotFound("no such bundle")
            if queue is None or stored_id is None:
                raise StoreUnavailable("inbox record is malformed (edited key?)")
            queue_name = _owner_text(queue)
            keys = inbox_keys(self._prefix, bundle_id, queue_name)
            outcome = await script(keys=keys, args=[queue_name, repr(now), *args])
        if _verdict(outcome) == b"missing":
            raise NotFound("no such bundle")
        return cast("Sequence[Any]", outcome)

    async def _sweep(
        self,
        script: AsyncScript,
        *,
        queue: str,
        index: str,
        now: float,
        limit: int,
        args: Sequence[str],
        what: str,
    ) -> tuple[InboxRecord, ...]:
        """Run ``script`` on the bundles of ``index`` scored up to ``now``; the
        records of those it moved."""
        if limit <= 0:
            return ()
        with _translated(f"inbox {what}"):
            members = cast(
                "Sequence[bytes]",
                await self._client.zrangebyscore(index, "-inf", repr(now), start=0, num=limit),
            )
            if not members:
                return ()
            async with self._client.pipeline(transaction=False) as pipe:
                for member in members:
                    keys = inbox_keys(self._prefix, _owner_text(member), queue)
                    await script(keys=keys, args=[queue, repr(now), *args], client=pipe)
                outcomes: Sequence[Any] = await pipe.execute()
        return tuple(
            _inbox_record(_pairs(outcome[1])) for outcome in outcomes if _verdict(outcome) == b"ok"
        )


def _record_fields(record: InboxRecord) -> list[tuple[str, str]]:
    """The record hash of a new bundle (numbers as ``repr``: exact round trip)."""
    return [
        ("bundle_id", record.bundle_id),
        ("queue", record.queue),
        ("conversation", record.conversation),
        ("idempotency_key", record.idempotency_key),
        ("origin", record.origin),
        ("status", record.status),
        ("version", str(record.version)),
        ("bundle_digest", record.bundle_digest),
        ("sealed_bundle", record.sealed_bundle),
        ("created_at", repr(record.created_at)),
        ("resolve_by", repr(record.resolve_by)),
        ("fence", "0"),
    ]


def _verdict(outcome: Any) -> bytes:
    """The first element of a script's reply (its verdict word)."""
    if not isinstance(outcome, list) or not outcome or not isinstance(outcome[0], bytes):
        raise StoreUnavailable("unexpected reply from an inbox script")
    return outcome[0]


def _pairs(flat: Any) -> dict[bytes, bytes]:
    """``HGETALL`` as a Lua script returns it (a flat list) as a dict."""
    items = list(flat)
    return dict(zip(items[::2], items[1::2], strict=True))


def _inbox_record(fields: dict[bytes, bytes]) -> InboxRecord:
    """A record hash as a record; a hash the scripts could not have written
    (missing or malformed field, lease without ``claimed``) fails closed."""
    try:
        text = {name: fields[name.encode()].decode("utf-8") for name in _TEXT_FIELDS}
        status = text["status"]
        lease = None
        if any(name in fields for name in _LEASE_FIELDS):
            owner, until, token = (fields[name] for name in _LEASE_FIELDS)
            lease = Lease(owner.decode("utf-8"), float(until), int(token))
        if status not in INBOX_STATUSES or (lease is not None) != (status == "claimed"):
            raise ValueError("status and lease disagree")
        decision = fields.get(b"decision")
        return InboxRecord(
            bundle_id=text["bundle_id"],
            queue=text["queue"],
            conversation=text["conversation"],
            idempotency_key=text["idempotency_key"],
            origin=text["origin"],
            status=status,
            version=int(fields[b"version"]),
            bundle_digest=text["bundle_digest"],
            sealed_bundle=text["sealed_bundle"],
            created_at=float(fields[b"created_at"]),
            resolve_by=float(fields[b"resolve_by"]),
            lease=lease,
            decision=None if decision is None else decision.decode("utf-8"),
        )
    except (KeyError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise StoreUnavailable("inbox record is malformed (edited key?)") from exc


_TEXT_FIELDS: Final = (
    "bundle_id",
    "queue",
    "conversation",
    "idempotency_key",
    "origin",
    "status",
    "bundle_digest",
    "sealed_bundle",
)
