"""Rules both store backends share, so SQLite and Redis cannot drift apart.

* :func:`require_extends`: the compare half of compare-and-append;
  :func:`require_hash` refuses a record whose hash does not recompute.
* :func:`load_record`: stored bytes back to a chained record, checked to be
  canonical and in its place (a stored record that fails is an integrity
  error, never silently skipped).
* :func:`seal_body` / :func:`open_body`: bodies at rest, AES-GCM via
  :class:`keys.atrest.StoreCipher`, bound to ``(conversation, seq)`` by the
  associated data so a sealed body copied onto another entry does not open.
* :class:`Window` and :func:`decide`: fixed-window rate limiting arithmetic.

Nothing here does I/O; the backends call these around their own atomic step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, TypeVar

from keys.atrest import StoreCipher
from keys.errors import KeysError
from protocol.chain import ChainedRecord, ChainHead, parse_record
from protocol.errors import BatonError, ChainBreak, ChainConflict, DigestInvalid
from protocol.ports import RateDecision

__all__ = [
    "Window",
    "body_aad",
    "check_rate_args",
    "check_ttl",
    "decide",
    "load_record",
    "open_body",
    "read_span",
    "require_extends",
    "require_hash",
    "seal_body",
    "stored_seq",
]

_BODY_AAD_LABEL: Final = b"baton/transcript-body/v1\x00"
#: bounds reads so that no backend sees an integer it cannot represent (SQLite: int64).
_MAX_SEQ: Final = (1 << 62) - 1

R = TypeVar("R", bound=ChainedRecord)


def require_hash(record: ChainedRecord) -> None:
    """Refuse (:class:`ChainBreak`) a record whose ``hash`` does not recompute:
    storing it would poison every later link. Checked before anything is written."""
    if record.compute_hash() != record.hash:
        raise ChainBreak(f"record {record.seq}: hash does not match its content")


def require_extends(head: ChainHead, record: ChainedRecord) -> None:
    """Raise :class:`ChainConflict` unless ``record`` is the next link after ``head``."""
    if record.seq != head.next_seq or record.prev != head.hash:
        raise ChainConflict(
            f"append at seq {record.seq} does not extend head seq {head.seq}; re-read and retry"
        )


def check_ttl(ttl_s: int) -> None:
    """A nonce must live at least one second (Redis ``EX`` refuses less)."""
    if ttl_s < 1:
        raise ValueError("ttl_s must be >= 1")


def load_record(cls: type[R], data: bytes, *, seq: int, scope: str | None = None) -> R:
    """Parse stored bytes; they must be canonical, at ``seq`` and in chain ``scope``.

    The record's own ``hash`` is *not* recomputed here (it costs as much again
    as parsing): content edited behind the store's back is caught by
    :func:`~protocol.chain.verify_links` / ``verify_transcript``, which every
    consumer that relies on a chain runs.
    """
    try:
        record = parse_record(cls, data)
    except BatonError as exc:
        raise ChainBreak(f"stored record {seq} does not parse: {exc.diagnostics()}") from exc
    key = cls.chain_key
    if record.seq != seq or (scope is not None and key and getattr(record, key) != scope):
        raise ChainBreak(f"stored record {seq} is out of place")
    return record


def read_span(after_seq: int, limit: int) -> tuple[int, int] | None:
    """``(first seq, last seq)`` inclusive for a read, or None when it is empty."""
    first = max(after_seq + 1, 0)
    if limit <= 0 or first > _MAX_SEQ:
        return None
    return first, min(first + limit - 1, _MAX_SEQ)


def stored_seq(seq: int) -> bool:
    """Whether ``seq`` could name a stored record (reads of others find nothing)."""
    return 0 <= seq <= _MAX_SEQ


def body_aad(conversation: str, seq: int) -> bytes:
    """Associated data binding a sealed body to its conversation and position.

    Unambiguous: ``seq`` is decimal digits after the last NUL, so no other
    ``(conversation, seq)`` pair gives the same bytes.
    """
    return _BODY_AAD_LABEL + conversation.encode("utf-8") + b"\x00" + str(seq).encode("ascii")


def seal_body(cipher: StoreCipher, conversation: str, seq: int, body: bytes) -> bytes:
    """The at-rest form of ``body`` for entry ``seq`` of ``conversation``."""
    return cipher.seal(body, aad=body_aad(conversation, seq))


def open_body(cipher: StoreCipher, conversation: str, seq: int, sealed: bytes) -> bytes:
    """Decrypt a stored body; :class:`DigestInvalid` if it was altered, moved or
    sealed under a key this cipher does not hold."""
    try:
        return cipher.open(sealed, aad=body_aad(conversation, seq))
    except KeysError as exc:
        raise DigestInvalid(
            f"stored body {seq} of a conversation does not decrypt: {exc.detail}"
        ) from exc


@dataclass(frozen=True, slots=True)
class Window:
    """The fixed window that ``now`` falls in: ``[index * size, (index + 1) * size)``."""

    index: int
    size: float
    now: float

    @classmethod
    def at(cls, now: float, window_s: float) -> Window:
        if not window_s > 0 or not math.isfinite(window_s) or not math.isfinite(now):
            raise ValueError("window_s must be a positive finite number and now finite")
        index = math.floor(now / window_s)
        if abs(index) > _MAX_SEQ:
            raise ValueError("now / window_s is out of range")
        return cls(index, window_s, now)

    @property
    def seconds_left(self) -> float:
        """Time until the window closes; always > 0."""
        return max((self.index + 1) * self.size - self.now, 1e-6)

    @property
    def keep_ms(self) -> int:
        """How long a backend keeps the counter: the rest of the window plus one
        more window of grace (for clock skew between gateways), in ms."""
        return max(math.ceil((self.seconds_left + self.size) * 1000), 1)


def check_rate_args(limit: int, cost: int) -> None:
    """Programming errors, not store failures."""
    if limit < 0 or cost < 0:
        raise ValueError("limit and cost must be >= 0")


def decide(used: int, *, cost: int, limit: int, window: Window) -> tuple[RateDecision, bool]:
    """Given ``used`` units already counted in ``window``, the decision and
    whether to count ``cost``. A refused hit is not counted, so a large
    request that does not fit does not eat the room smaller ones still have."""
    if used + cost > limit:
        return RateDecision(False, max(limit - used, 0), window.seconds_left), False
    return RateDecision(True, limit - used - cost, 0.0), True
