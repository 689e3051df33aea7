"""What ``baton inbox`` prints: the human and JSON views of what
:mod:`gateway.inbox_client` fetched, opened and verified.

Text that agents wrote is printed with control and bidirectional-formatting
characters escaped (:func:`safe_text`), so a transcript cannot drive the
operator's terminal. Nothing here verifies anything: it renders a
:class:`~gateway.inbox_client.Shown`, which exists only once verified.
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, Final

from gateway.inbox_client import Shown, decision_payload, format_time
from keys.b64 import b64url_decode
from keys.errors import KeysError
from protocol.transcript import TranscriptEntry

__all__ = [
    "render_claim",
    "render_decided",
    "render_list",
    "render_released",
    "render_show",
    "safe_text",
    "show_json",
]

#: Transcript bodies in the human view: at most this many characters each.
BODY_PREVIEW_CHARS: Final = 1200
BODY_PREVIEW_LINES: Final = 30


def safe_text(text: str, *, newlines: bool = False) -> str:
    """``text`` with control, format (bidi overrides) and separator characters
    escaped as ``\\uXXXX``; ``newlines`` keeps ``\\n``."""
    out = []
    for char in text:
        if (char == "\n" and newlines) or unicodedata.category(char)[0] not in "CZ" or char == " ":
            out.append(char)
        else:
            out.append(f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}")
    return "".join(out)


def _span(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{math.floor(seconds / size)}{unit}"
    return f"{math.floor(seconds)}s"


def _relative(ts: object, now: float) -> str:
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return "-"
    return f"in {_span(ts - now)}" if ts >= now else f"{_span(now - ts)} ago"


def _json_text(value: Any, *, indent: int | None = None) -> str:
    separators = None if indent is not None else (", ", ": ")
    return json.dumps(value, indent=indent, separators=separators, ensure_ascii=False)


def _clip(text: str, *, chars: int = BODY_PREVIEW_CHARS, lines: int = BODY_PREVIEW_LINES) -> str:
    kept = text.split("\n")
    clipped = "\n".join(kept[:lines])
    if len(clipped) > chars:
        clipped = clipped[:chars]
    if clipped != text:
        clipped += f"\n... ({len(text) - len(clipped)} more characters; --json shows all)"
    return clipped


def _cell(value: object) -> str:
    return "-" if value is None else safe_text(str(value))


def render_list(summaries: Iterable[Mapping[str, Any]], now: float) -> list[str]:
    """The ``baton inbox list`` table, oldest first."""
    rows = [["ID", "QUEUE", "STATUS", "PRI", "TRIGGER", "REASON", "AGE", "RESOLVE BY", "LEASE"]]
    ordered = sorted(summaries, key=lambda s: (s.get("created_at") or 0, str(s.get("bundle_id"))))
    for summary in ordered:
        lease = summary.get("lease")
        owner = lease.get("owner") if isinstance(lease, dict) else None
        created = summary.get("created_at")
        rows.append(
            [
                _cell(summary.get("bundle_id")),
                _cell(summary.get("queue")),
                _cell(summary.get("status")),
                _cell(summary.get("priority")),
                _cell(summary.get("trigger")),
                _cell(summary.get("reason_code")),
                _span(now - created) if isinstance(created, int | float) else "-",
                _relative(summary.get("resolve_by"), now),
                _cell(owner),
            ]
        )
    if len(rows) == 1:
        return ["no handoffs"]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def render_claim(summary: Mapping[str, Any], now: float) -> list[str]:
    lease = summary.get("lease") or {}
    return [
        f"{_cell(summary.get('bundle_id'))}: claimed by {_cell(lease.get('owner'))} "
        f"until {format_time(lease.get('until'))} ({_relative(lease.get('until'), now)})",
        f"  fencing token {_cell(lease.get('fencing_token'))}",
    ]


def render_released(summary: Mapping[str, Any]) -> list[str]:
    return [
        f"{_cell(summary.get('bundle_id'))}: released; {_cell(summary.get('status'))} "
        f"in queue {_cell(summary.get('queue'))}"
    ]


def render_decided(shown: Shown, summary: Mapping[str, Any], token: str) -> list[str]:
    decision = decision_payload(token)
    return [
        f"{shown.bundle_id}: {decision.decision.type} recorded "
        f"({_cell(summary.get('status'))}), signed by {decision.operator}",
        f"  bound to bundle digest {decision.bundle_digest} v{decision.bundle_version}, "
        f"fencing token {decision.fencing_token}",
    ]


def render_show(shown: Shown, now: float) -> list[str]:
    """The human view of ``baton inbox show`` (see the module docstring)."""
    bundle = shown.opened.bundle
    summary = shown.summary
    out = [
        f"{bundle.bundle_id}  queue {bundle.queue}  status {_cell(summary.get('status'))}"
        f"  version {bundle.version}",
        f"  verified    decrypted with your key; signed by gateway key {shown.opened.signer_kid};"
        f" transcript chain, bodies and views intact; digest {shown.opened.bundle_digest}"
        " matches the gateway's listing",
        f"  conversation {safe_text(bundle.conversation)}",
        f"  origin      {bundle.origin}",
        f"  created     {format_time(bundle.created_at)} ({_relative(bundle.created_at, now)})",
        f"  resolve by  {format_time(bundle.resolve_by)} ({_relative(bundle.resolve_by, now)})",
    ]
    lease = summary.get("lease")
    if isinstance(lease, dict):
        out.append(
            f"  lease       {_cell(lease.get('owner'))} until {format_time(lease.get('until'))}, "
            f"fencing token {_cell(lease.get('fencing_token'))}"
        )
    out.extend(_request_lines(shown))
    out.extend(_transcript_lines(shown))
    out.append("agent views")
    for view in bundle.agent_views:
        out.append(f"  {view.agent} saw through #{view.saw_through_seq} (head {view.head})")
    if bundle.masked:
        out.append("masked fields (tokens shown; reveal with --reveal POINTER --reason TEXT)")
        for item in bundle.masked:
            entity = f" [{safe_text(item.entity)}]" if item.entity else ""
            out.append(f"  {item.path}  {safe_text(item.token)}{entity}")
    if shown.revealed:
        out.append("revealed (each matches the signed salted commitment)")
        for item, value in shown.revealed:
            out.append(f"  {item.path} = {safe_text(_json_text(value))}")
    out.extend(_lifecycle_lines(shown))
    out.extend(_decision_lines(shown))
    return out


def _request_lines(shown: Shown) -> list[str]:
    request = shown.opened.bundle.request
    out = [
        "request",
        f"  reason      {safe_text(request.reason_code)}: {safe_text(request.reason_text)}",
        f"  trigger     {request.trigger}, priority {request.priority}",
    ]
    action = request.requested_action
    if action is not None:
        target = f" {safe_text(action.target)}" if action.target else ""
        out.append(f"  action      {action.kind}{target}")
        if action.arguments is not None:
            out.append(f"  arguments   {safe_text(_json_text(action.arguments))}")
        if action.args_digest is not None:
            out.append(f"  args digest {action.args_digest}")
    failure = request.failure
    if failure is not None:
        step = f", failed step {safe_text(failure.failed_step)}" if failure.failed_step else ""
        out.append(
            f"  failure     {failure.status}: {safe_text(failure.exit_reason)}"
            f" (retries {failure.retry_count}{step})"
        )
    out.append(f"  allowed     {', '.join(request.allowed_decisions)}")
    sla = request.sla
    ack = f", acknowledge within {sla.ack_within_s}s" if sla.ack_within_s else ""
    out.append(
        f"  sla         resolve within {sla.resolve_within_s}s{ack}; on expiry {sla.on_expiry}"
    )
    if request.response_schema is not None:
        out.append(f"  response schema {safe_text(_json_text(request.response_schema))}")
    return out


def _entry_line(entry: TranscriptEntry) -> str:
    method = f" {safe_text(entry.method)}" if entry.method else ""
    status = f" -> {entry.status}" if entry.status is not None else ""
    if entry.verified:
        signed = f"signed by {safe_text(entry.signer or '?')}, verified"
    else:
        signed = "not signed: the gateway attests the sender by mTLS"
    return (
        f"  #{entry.seq}  {format_time(entry.ts / 1000)}  {entry.sender} -> {entry.to}  "
        f"{entry.protocol} {entry.kind}{method}{status}  ({signed})"
    )


def _transcript_lines(shown: Shown) -> list[str]:
    bundle = shown.opened.bundle
    bodies = {body.seq: body for body in bundle.bodies}
    out = [
        f"transcript ({len(bundle.transcript)} entries, head {bundle.integrity.transcript_head})"
    ]
    for entry in bundle.transcript:
        out.append(_entry_line(entry))
        body = bodies.get(entry.seq)
        if body is None:
            continue
        text = _raw_text(body.raw) if body.raw is not None else _json_text(body.json_, indent=2)
        out.extend("      " + line for line in safe_text(_clip(text), newlines=True).split("\n"))
    return out


def _raw_text(raw: str) -> str:
    try:
        data = b64url_decode(raw)
    except KeysError:  # pragma: no cover - verify_integrity checked it
        return "<raw body>"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(data)} bytes, not UTF-8>"


def _lifecycle_lines(shown: Shown) -> list[str]:
    out = [f"lifecycle ({len(shown.events)} gateway-signed events, one chain)"]
    for event in shown.events:
        extra = []
        if event.fencing_token is not None:
            extra.append(f"fencing token {event.fencing_token}")
        if event.lease_until is not None:
            extra.append(f"lease until {format_time(event.lease_until)}")
        if event.decision_digest is not None:
            extra.append(f"decision {event.decision_digest}")
        if event.outcome is not None:
            extra.append(f"outcome {event.outcome}")
        if event.reason is not None:
            extra.append(safe_text(event.reason))
        if event.note is not None:
            extra.append(f"note {safe_text(event.note)}")
        tail = f"  ({'; '.join(extra)})" if extra else ""
        out.append(
            f"  #{event.seq}  {format_time(event.ts / 1000)}  {event.type:<12} {event.actor}{tail}"
        )
    return out


def _decision_lines(shown: Shown) -> list[str]:
    decision = shown.decision
    if decision is None:
        return ["decision    none yet"]
    body = decision.decision
    out = [
        f"decision    {body.type} by {decision.operator} (signature verified; bound to this "
        f"bundle's digest, v{decision.bundle_version}, fencing token {decision.fencing_token}; "
        "the one the lifecycle records)"
    ]
    if body.arguments is not None:
        out.append(f"  arguments   {safe_text(_json_text(body.arguments))}")
    if body.response is not None:
        out.append(f"  response    {safe_text(_json_text(body.response))}")
    if body.reroute_queue is not None:
        out.append(f"  reroute to  {body.reroute_queue}")
    if body.message is not None:
        out.append(f"  message     {safe_text(body.message)}")
    return out


def show_json(shown: Shown) -> str:
    """``baton inbox show --json``: the verified, decrypted bundle and its history.
    ASCII-only (every non-ASCII character escaped), so safe on any terminal."""
    document = {
        "summary": dict(shown.summary),
        "bundle_digest": shown.opened.bundle_digest,
        "signed_by": shown.opened.signer_kid,
        "bundle": shown.opened.bundle.to_json(),
        "events": [event.to_json() for event in shown.events],
        "decision": None if shown.decision is None else shown.decision.to_json(),
        "revealed": {item.path: value for item, value in shown.revealed},
    }
    return json.dumps(document, indent=2, ensure_ascii=True)
