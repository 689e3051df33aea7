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
``P rate:<key>:<window index>``    string  units counted               window rest + 1 window
``P bind:<kind>:<key>``            hash    ``owner``, ``expires_at``   ``ttl_s`` + 60 s
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis
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
from protocol.errors import ChainConflict, ConfigurationError, StoreUnavailable
from protocol.ports import RateDecision, check_binding
from protocol.transcript import TranscriptEntry

__all__ = [
    "BINDING_GRACE_S",
    "DEFAULT_PREFIX",
    "ChainKeys",
    "RedisAuditLog",
    "RedisBindingStore",
    "RedisNonceStore",
    "RedisRateLimiter",
    "RedisTranscriptStore",
    "audit_keys",
    "binding_key",
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
_APPEND_LUA: Final = f"""
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
redis.call('RPUSH', KEYS[2], ARGV[4])
if #KEYS >= 3 and #ARGV >= 5 then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'hash', ARGV[3])
return 1
"""
_APPENDED: Final = 1
_CONFLICT: Final = 0

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
    """:class:`~protocol.ports.AuditLog` on Redis: one chain per prefix, appended by Lua."""

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._keys = audit_keys(_checked_prefix(prefix))
        self._chain = _RedisChain(client, "audit")

    async def head(self) -> ChainHead:
        return await self._chain.head(self._keys)

    async def append(self, event: AuditEvent) -> None:
        """Compare-and-append in one Lua script."""
        await self._chain.append(self._keys, event)

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
