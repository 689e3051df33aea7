"""The handoff request: what an agent sends when it escalates to a person.

An agent escalates with an A2A ``SendMessage`` to ``/a2a/inbox/<queue>``
whose data part has media type ``application/baton-handoff+json`` and this
shape (see ``research/handoff.md`` §3-§4 for why each field exists):

* ``reason_code``/``reason_text`` and a coded ``trigger`` (the Agentforce
  taxonomy: user request, low confidence, out of scope, policy,
  authorization, technical failure);
* ``failure``: structured failure metadata (status, exit reason, error type,
  retries, failed step, tool trace) instead of free text;
* ``requested_action`` with ``args_digest`` (SHA-256 of the RFC 8785 form of
  the arguments), so an approval is bound to exact arguments;
* ``allowed_decisions``, an optional ``response_schema``, ``priority``,
  ``sla`` (fail closed: ``on_expiry`` defaults to ``reject``). The schema
  must be in the subset of JSON Schema that ``protocol/schema.py`` checks: a
  request asking for any other keyword is refused (:class:`InvalidSchema`,
  raised as it is, not wrapped), so no check it asks for is skipped;
* ``idempotency_key``: the same key returns the same bundle and task;
* ``pii_paths``: JSON Pointers (``*`` allowed) into the bundle document to mask;
* an optional ``capsule`` for the operators (``application/baton-capsule+jose``).
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field, model_validator

from protocol.canonical import canonical_digest
from protocol.errors import BindingMismatch
from protocol.model import BatonModel, Digest, JsonData, JsonPointer, Name, ShortText, Text
from protocol.schema import check_schema

__all__ = [
    "DECISION_TYPES",
    "HANDOFF_MEDIA_TYPE",
    "DecisionType",
    "Failure",
    "HandoffRequest",
    "RequestedAction",
    "Sla",
    "ToolTraceStep",
    "Trigger",
    "check_request_digests",
]

HANDOFF_MEDIA_TYPE: Final = "application/baton-handoff+json"

Trigger = Literal[
    "user_request",
    "low_confidence",
    "out_of_scope",
    "policy",
    "authorization",
    "technical_failure",
    "other",
]
DecisionType = Literal["approve", "edit", "reject", "respond", "reroute"]
DECISION_TYPES: Final = ("approve", "edit", "reject", "respond", "reroute")


class ToolTraceStep(BatonModel):
    """One step of the tool trace that led to the failure."""

    tool: ShortText
    status: Literal["ok", "error", "timeout", "denied", "held"]
    seq: int | None = Field(default=None, ge=0)
    error_type: ShortText | None = None
    duration_ms: int | None = Field(default=None, ge=0)


class Failure(BatonModel):
    """Structured failure metadata (``research/handoff.md`` §3 item 5)."""

    status: Literal["blocked", "failed", "partial", "uncertain"]
    exit_reason: ShortText
    error_type: ShortText | None = None
    retry_count: int = Field(default=0, ge=0, le=10_000)
    failed_step: ShortText | None = None
    tool_trace: tuple[ToolTraceStep, ...] = Field(default=(), max_length=256)


class RequestedAction(BatonModel):
    """What the agent wants a person to allow or answer.

    ``target`` names the tool (``<upstream>/<tool>``) or skill; ``args_digest``
    is ``canonical_digest(arguments)``.
    """

    kind: Literal["tool_call", "skill_call", "answer", "other"]
    target: ShortText | None = None
    arguments: JsonData = None
    args_digest: Digest | None = None

    @model_validator(mode="after")
    def _check(self) -> RequestedAction:
        needs_target = self.kind in ("tool_call", "skill_call")
        if needs_target and (self.target is None or self.args_digest is None):
            raise ValueError(f"a {self.kind} needs 'target' and 'args_digest'")
        return self


class Sla(BatonModel):
    """Deadlines relative to creation, in seconds. Silence is never consent."""

    ack_within_s: int | None = Field(default=None, ge=1, le=30 * 86400)
    resolve_within_s: int = Field(ge=60, le=30 * 86400)
    on_expiry: Literal["reject", "cancel"] = "reject"


class HandoffRequest(BatonModel):
    """The ``application/baton-handoff+json`` data part."""

    schema_: Literal["baton.handoff-request/v1"] = Field(
        default="baton.handoff-request/v1", alias="schema"
    )
    reason_code: Name
    reason_text: Text
    trigger: Trigger
    failure: Failure | None = None
    requested_action: RequestedAction | None = None
    allowed_decisions: tuple[DecisionType, ...] = Field(min_length=1, max_length=5)
    response_schema: dict[str, JsonData] | None = None
    priority: int = Field(default=3, ge=1, le=4)
    sla: Sla
    idempotency_key: str = Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")
    pii_paths: tuple[JsonPointer, ...] = Field(default=(), max_length=64)
    capsule: dict[str, JsonData] | None = None

    @model_validator(mode="after")
    def _check(self) -> HandoffRequest:
        if len(set(self.allowed_decisions)) != len(self.allowed_decisions):
            raise ValueError("allowed_decisions lists a decision twice")
        if "edit" in self.allowed_decisions and (
            self.requested_action is None or self.requested_action.args_digest is None
        ):
            raise ValueError("'edit' needs a requested_action with arguments")
        if self.response_schema is not None:
            check_schema(self.response_schema)  # InvalidSchema: not a ValueError, not wrapped
        return self


def check_request_digests(request: HandoffRequest) -> None:
    """On receipt (before any masking): ``args_digest`` must be the digest of
    ``arguments`` when the agent sent the arguments along."""
    action = request.requested_action
    if action is None or action.arguments is None:
        return
    if action.args_digest != canonical_digest(action.arguments):
        raise BindingMismatch("args_digest is not the digest of the arguments")
