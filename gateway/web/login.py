"""Local-account login for the web inbox: scrypt, bounded, rate-limited, uniform.

Invariants (OWASP Authentication Cheat Sheet, "Authentication responses" and
"Protect against automated attacks"):

* the answer to a wrong password and to an unknown name is the same
  :class:`~protocol.errors.InvalidCredentials`, after the same work: an
  unknown name is verified against a fixed dummy hash with the default
  parameters, so neither the answer nor its timing says which names exist;
* every attempt is counted *before* the password is checked, per name
  (``inbox.login_attempts``) and per client address
  (``inbox.login_attempts_per_address``) in the shared
  :class:`~protocol.ports.RateLimiter` (fleet-wide on Redis); over either
  limit the answer is :class:`~protocol.errors.RateLimited` and no password
  is checked, so parallel guesses cannot outrun the counter;
* scrypt (128 MiB, ~0.4 s, ``keys/passwords.py``) runs in the default thread
  pool, at most :data:`CONCURRENCY` at once; at most :data:`MAX_WAITING`
  logins wait for a slot, the rest are refused at once (429), so a flood of
  logins bounds memory and never blocks the event loop;
* the hashes are the operators' ``password`` files *as they are now*
  (:class:`LoginHashes`): ``baton operators passwd`` takes effect at the next
  login without a restart, and a file that is removed or no longer decodes
  is no local login (fail closed).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from gateway.devdata import LOGIN_HASH_FILE, DataFolder
from keys.errors import KeysError
from keys.passwords import DEFAULT_PARAMS, HASH_BYTES, SALT_BYTES, PasswordHash, verify_password
from protocol.errors import InvalidCredentials, RateLimited
from protocol.ports import RateLimiter

__all__ = ["CONCURRENCY", "DUMMY_HASH", "MAX_WAITING", "LocalLogin", "LoginHashes"]

log = logging.getLogger("baton.web")

#: scrypt verifications running at once (each allocates 128 MiB).
CONCURRENCY: Final = 2
#: Logins that may wait for a verification slot.
MAX_WAITING: Final = 64
#: What an unknown name is verified against: the default parameters, so it
#: costs what a real account costs. Its digest matches no password.
DUMMY_HASH: Final = PasswordHash(
    DEFAULT_PARAMS, b"baton-no-account"[:SALT_BYTES], bytes(HASH_BYTES)
).encode()


@dataclass(frozen=True, slots=True)
class _Read:
    #: ``(inode, size, mtime_ns)`` of the file when read; None: there was none.
    stamp: tuple[int, int, int] | None
    #: The PHC string; None: no file, or one that does not decode.
    encoded: str | None


class LoginHashes(Mapping[str, str]):
    """Operator name -> scrypt PHC string, read from each operator's
    ``password`` file as it is now.

    Every lookup costs one ``os.stat``; the file is read again only when its
    ``(inode, size, mtime_ns)`` changed (``baton operators passwd`` replaces
    the file, so a new password always shows in one of them). A password
    session whose credential tag is not that of the current hash ends
    (``gateway/web/webapp.py``).
    """

    def __init__(self, folder: DataFolder, names: Iterable[str], loaded: Mapping[str, str]) -> None:
        self._folder = folder
        self._reads: dict[str, _Read] = {}
        for name in names:
            stamp = self._stamp(name)
            self._reads[name] = _Read(stamp, loaded.get(name) if stamp else None)

    def _stamp(self, name: str) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self._folder.operator(name) / LOGIN_HASH_FILE)
        except OSError:
            return None
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def _current(self, name: str) -> _Read | None:
        read = self._reads.get(name)
        if read is None:
            return None  # not a configured operator
        stamp = self._stamp(name)
        if stamp == read.stamp:
            return read
        encoded = None
        if stamp is not None:
            try:
                encoded = self._folder.load_login_hash(name)
                PasswordHash.decode(encoded)
            except (KeysError, OSError, ValueError) as exc:
                log.error(
                    "an operator's password file does not load: no local login for it",
                    extra={"operator": name, "error": type(exc).__name__},
                )
                encoded = None
        read = _Read(stamp, encoded)
        self._reads[name] = read
        return read

    def __getitem__(self, name: str) -> str:
        read = self._current(name)
        if read is None or read.encoded is None:
            raise KeyError(name)
        return read.encoded

    def __iter__(self) -> Iterator[str]:
        return (name for name in list(self._reads) if name in self)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _key(kind: str, value: str) -> str:
    """A rate-limit key: hashed, so any name or address fits the store."""
    return f"web-login:{kind}:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


class LocalLogin:
    """Check a name and password (see the module docstring)."""

    def __init__(
        self,
        hashes: Mapping[str, str],
        limiter: RateLimiter,
        *,
        attempts: int,
        attempts_per_address: int,
        window_s: float,
    ) -> None:
        #: Looked up at every attempt (a :class:`LoginHashes` re-reads changed files).
        self._hashes = hashes
        self._limiter = limiter
        self._attempts = attempts
        self._per_address = attempts_per_address
        self._window_s = window_s
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._waiting = 0

    async def verify(self, name: str, password: str, *, address: str, now: float) -> str:
        """The stored hash ``password`` matched, if it is ``name``'s password;
        else raise :class:`InvalidCredentials` or (over a limit)
        :class:`RateLimited`. The hash is the one checked, read once: a
        ``passwd`` racing the check cannot give the session the new one."""
        for key, limit in ((_key("address", address), self._per_address),
                           (_key("name", name), self._attempts)):  # fmt: skip
            decision = await self._limiter.hit(key, limit=limit, window_s=self._window_s, now=now)
            if not decision.allowed:
                raise RateLimited(
                    "too many login attempts for this name or address",
                    retry_after=max(1, math.ceil(decision.retry_after_s)),
                )
        encoded = self._hashes.get(name)
        matched = await self._check(password, encoded or DUMMY_HASH)
        if not matched or encoded is None:
            raise InvalidCredentials("wrong password" if encoded else "no such local account")
        return encoded

    async def _check(self, password: str, encoded: str) -> bool:
        if self._waiting >= MAX_WAITING:
            raise RateLimited("too many logins waiting for a password check", retry_after=1.0)
        self._waiting += 1
        try:
            async with self._slots:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(None, verify_password, password, encoded)
        finally:
            self._waiting -= 1
