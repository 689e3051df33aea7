"""Server-sent event framing (WHATWG HTML s9.2.6), bytes in, whole events out.

The gateway relays a ``text/event-stream`` response event by event: each
event is recorded in the transcript and only then written to the caller, so
nothing reaches a caller unrecorded. :class:`EventSplitter` cuts the byte
stream at event boundaries (a blank line: ``\\n\\n``, ``\\r\\n\\r\\n`` or
``\\r\\r``) without decoding or re-encoding anything: the bytes written are the
bytes received. A single event larger than ``max_event_bytes`` is an error
(the upstream is misbehaving; the stream is cut).
"""

from __future__ import annotations

import re
from typing import Final

from protocol.errors import PayloadTooLarge

__all__ = ["EventSplitter", "event_data", "is_event_stream", "with_data"]

_BOUNDARY: Final = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def is_event_stream(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


class EventSplitter:
    """Feed chunks; get complete events (each with its terminating blank line)."""

    __slots__ = ("_buffer", "_max")

    def __init__(self, max_event_bytes: int = 1 << 20) -> None:
        self._buffer = b""
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._buffer + chunk
        events: list[bytes] = []
        start = 0
        for match in _BOUNDARY.finditer(data):
            events.append(data[start : match.end()])
            start = match.end()
        self._buffer = data[start:]
        if len(self._buffer) > self._max:
            raise PayloadTooLarge(f"server-sent event over {self._max} bytes")
        return events

    def flush(self) -> bytes:
        """What is left when the stream ends (an unterminated last event), once."""
        rest, self._buffer = self._buffer, b""
        return rest


def _lines(event: bytes) -> list[bytes]:
    return event.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")


def event_data(event: bytes) -> bytes:
    """The ``data`` of one event: its ``data:`` lines joined by LF (WHATWG s9.2.6)."""
    lines = []
    for line in _lines(event):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines)


def with_data(event: bytes, data: bytes) -> bytes:
    """``event`` with its data replaced by ``data`` (one line); its other fields kept.

    ``data`` must hold no line break (compact JSON never does).
    """
    if b"\n" in data or b"\r" in data:
        raise ValueError("event data must be one line")
    kept = [line for line in _lines(event) if line and not line.startswith(b"data:")]
    return b"\n".join([*kept, b"data: " + data]) + b"\n\n"
