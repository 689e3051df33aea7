"""JSON log lines: one object per line, extras included, injection escaped."""

from __future__ import annotations

import json
import logging

from gateway.logs import JsonFormatter


def test_one_json_object_per_line_with_extras() -> None:
    record = logging.LogRecord("baton.gateway", logging.INFO, __file__, 1, "request", None, None)
    record.peer = "spiffe://baton.local/agent/support\r\nFAKE LINE \x1b[31m"
    record.status = 401
    record.code = "bad_signature"
    line = JsonFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    entry = json.loads(line)
    assert entry["msg"] == "request" and entry["level"] == "info"
    assert (entry["status"], entry["code"]) == (401, "bad_signature")
    assert entry["peer"].endswith("FAKE LINE \x1b[31m"), "kept, but escaped on the wire"
