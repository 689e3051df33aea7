"""JSON logs: one object per line, fields from ``extra=``, nothing else.

Messages never carry bodies, tokens or keys (the pipeline logs codes,
identities and digests). Every value goes through ``json.dumps``, so a
peer-controlled string cannot forge a log line (CR/LF and ANSI are escaped).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Final

__all__ = ["JsonFormatter", "configure"]

_STANDARD: Final = frozenset(logging.LogRecord("x", 0, "x", 0, "x", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", ...extra}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value is not None:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure(level: str = "info", *, access_log: bool = True) -> None:
    """Route Baton's and aiohttp's loggers to stderr as JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("baton.gateway").setLevel(level.upper() if access_log else logging.WARNING)
    logging.Formatter.converter = time.gmtime
