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
  logins bounds memory and never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Mapping
from typing import Final

from keys.passwords import DEFAULT_PARAMS, HASH_BYTES, SALT_BYTES, PasswordHash, verify_password
from protocol.errors import InvalidCredentials, RateLimited
from protocol.ports import RateLimiter

__all__ = ["CONCURRENCY", "DUMMY_HASH", "MAX_WAITING", "LocalLogin"]

#: scrypt verifications running at once (each allocates 128 MiB).
CONCURRENCY: Final = 2
#: Logins that may wait for a verification slot.
MAX_WAITING: Final = 64
#: What an unknown name is verified against: the default parameters, so it
#: costs what a real account costs. Its digest matches no password.
DUMMY_HASH: Final = PasswordHash(
    DEFAULT_PARAMS, b"baton-no-account"[:SALT_BYTES], bytes(HASH_BYTES)
).encode()


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
        self._hashes = dict(hashes)
        self._limiter = limiter
        self._attempts = attempts
        self._per_address = attempts_per_address
        self._window_s = window_s
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._waiting = 0

    async def verify(self, name: str, password: str, *, address: str, now: float) -> str:
        """``name`` if ``password`` is its password; else raise
        :class:`InvalidCredentials` or (over a limit) :class:`RateLimited`."""
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
        return name

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
