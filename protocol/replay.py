"""Replay rules: freshness windows and one-time nonces (RFC 9421 s7.2.2).

A signed message is *fresh* at time ``now`` (integer seconds) when

* ``created`` is present and ``now - W <= created <= now + S`` (``W`` the window,
  ``S`` the allowed clock skew); and
* ``expires``, if present, is not before ``now`` and not before ``created``.

These are pure functions of an injected ``now`` (threat R07: the RFC 9421
Appendix B vectors, created 2021, must fail under the real clock and pass only
under an injected one).

A fresh message is accepted once: its ``nonce`` is claimed in a shared
:class:`~protocol.ports.NonceStore`, scoped by the signer's ``keyid``, with a
time-to-live of at least ``W + S`` seconds. That bound is the invariant that
makes eviction safe (R06): a message can be fresh for at most ``W + S``
seconds (from ``now = created - S`` to ``now = created + W``), so by the time
the store forgets a nonce, any replay of it is stale. The claim is made only
*after* the signature verified (R09: a forged request must not burn a victim's
nonce); :func:`claim_nonce` takes a
:class:`~keys.httpsig.VerifiedSignature`, which only a successful
verification produces.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from protocol.errors import (
    InsufficientCoverage,
    MalformedSignature,
    NotYetValid,
    ReplayDetected,
    Stale,
    TokenExpired,
)
from protocol.model import NONCE_PATTERN

if TYPE_CHECKING:
    from keys.httpsig import VerifiedSignature
    from protocol.ports import NonceStore

__all__ = [
    "FreshnessPolicy",
    "check_freshness",
    "check_lifetime",
    "claim_nonce",
    "validate_nonce",
]

_NONCE: Final = re.compile(NONCE_PATTERN)


def check_lifetime(iat: int, exp: int, *, now: float, skew_s: int, what: str) -> None:
    """A signed artifact's own ``iat``/``exp`` (capsules, decisions, operator
    commands): good from ``iat - skew_s`` until just before ``exp``, in whole
    seconds. Raises :class:`TokenExpired` or :class:`NotYetValid` naming ``what``."""
    now_s = math.floor(now)
    if now_s >= exp:
        raise TokenExpired(f"{what} expired")
    if iat > now_s + skew_s:
        raise NotYetValid(f"{what} issued in the future")


@dataclass(frozen=True, slots=True)
class FreshnessPolicy:
    """Window ``W`` and skew ``S`` in seconds (defaults from DESIGN.md)."""

    window_s: int = 60
    skew_s: int = 5

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.skew_s < 0:
            raise ValueError("window must be positive and skew non-negative")

    @property
    def nonce_ttl_s(self) -> int:
        """How long a claimed nonce must be remembered: ``W + S`` plus one
        second for the rounding of ``now`` to whole seconds."""
        return self.window_s + self.skew_s + 1


def check_freshness(
    created: int | None,
    expires: int | None,
    *,
    now: float,
    policy: FreshnessPolicy,
) -> None:
    """Raise :class:`Stale` unless the parameters are fresh at ``now``."""
    if created is None:
        raise InsufficientCoverage("signature has no 'created' parameter")
    now_s = math.floor(now)
    if created < now_s - policy.window_s:
        raise Stale(f"created {created} is older than the {policy.window_s}s window")
    if created > now_s + policy.skew_s:
        raise Stale(f"created {created} is more than {policy.skew_s}s in the future")
    if expires is not None:
        if expires < created:
            raise Stale("expires is before created")
        if expires < now_s:
            raise Stale(f"expired at {expires}")


def validate_nonce(nonce: str | None) -> str:
    """A nonce must be 16-128 characters from a conservative alphabet (it
    becomes part of a store key, so its size and characters are bounded)."""
    if nonce is None:
        raise InsufficientCoverage("signature has no 'nonce' parameter")
    if not _NONCE.fullmatch(nonce):  # fullmatch: Python's $ would allow a trailing newline
        raise MalformedSignature("nonce must be 16-128 characters of [A-Za-z0-9._~+/=-]")
    return nonce


async def claim_nonce(
    store: NonceStore,
    verified: VerifiedSignature,
    *,
    now: float,
    policy: FreshnessPolicy,
) -> None:
    """Claim ``verified.nonce`` for ``verified.keyid`` exactly once.

    Raises :class:`ReplayDetected` if it was already claimed. A store that
    cannot answer raises :class:`~protocol.errors.StoreUnavailable` itself;
    this function never turns an outage into an acceptance.
    """
    nonce = validate_nonce(verified.nonce)
    first = await store.claim(verified.keyid, nonce, ttl_s=policy.nonce_ttl_s, now=now)
    if not first:
        raise ReplayDetected(f"nonce already used by key {verified.keyid}")
