"""The audit log: one append-only hash chain of security-relevant events.

Every rejection writes exactly one :class:`AuditEvent` (and nothing else
durable); so do claims, reveals, decisions and key rotations. Events carry
stable codes and digests, never secrets or bodies: ``artifact_sha256`` is the
digest of the offending artifact (a token, a body), which an investigator
holding the artifact can match, in the way Vault's audit log records HMACs of
sensitive values. Free-text ``detail`` is the internal reason from
:meth:`protocol.errors.BatonError.diagnostics` and is escaped by JSON
encoding (threat I07: no raw CR/LF or ANSI in log lines).

When the audit log cannot be written, the request fails closed with 503
(``audit_unavailable``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from protocol.chain import ChainedRecord
from protocol.model import Digest, Identity, ShortText, Text

__all__ = ["AuditEvent", "Outcome"]

Outcome = Literal["accepted", "rejected", "info"]


class AuditEvent(ChainedRecord):
    """One audit event. ``ts`` is Unix time in milliseconds."""

    v: Literal[1] = 1
    ts: int = Field(ge=0)
    event: ShortText
    outcome: Outcome
    reason: ShortText | None = None
    request_id: ShortText | None = None
    peer: Identity | None = None
    artifact_sha256: Digest | None = None
    detail: Text | None = None
