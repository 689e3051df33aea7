"""The approval gate: ``require_approval`` calls wait for a person, then pass once.

For a call the allow-list admitted and a ``[[policy.require_approval]]`` rule
holds (an MCP ``tools/call`` or an A2A message naming a skill), the gateway
looks up the handoff of *exactly this call*: caller, upstream, target and the
digest of its arguments (``args_digest``: RFC 8785 + SHA-256 of the tool
arguments; of the message parts for A2A). Its id is derived from those five
facts, so the same call always finds the same handoff, from any gateway.

* No handoff yet: the held request is recorded in the conversation, a handoff
  (``trigger = authorization``) is opened on the rule's queue, and the caller
  gets :class:`~protocol.errors.ApprovalRequired` naming it (rendered as MCP
  2026-07-28 ``input_required``, or a structured JSON-RPC error).
* Open (queued or claimed): :class:`ApprovalRequired` again; nothing written.
  Past its deadline it is expired on the spot (fail closed).
* Approved: the status moves ``decided -> delivered`` (compare-and-set in
  every store), and only the call that made that move is forwarded: **exactly
  once**, however many gateways race. After the upstream answers, the gateway
  acknowledges the handoff (``executed`` or ``failed``).
* Edited: the operator's edit binds an ``approval-grant`` to the *edited*
  arguments' digest; only a call with those arguments passes, once. The
  original arguments never pass.
* Rejected, answered, rerouted, expired, cancelled or already used:
  :class:`~protocol.errors.ApprovalRefused`; the call never passes.

A hold never allows anything: the gate runs after the policy check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from adapters.jsonrpc import Call
from gateway.handoffs import GATE_KEY_PREFIX, GRANT_KIND, Gated, Handoffs, gate_key
from gateway.proxy import RequestContext
from keys.jose import verify_compact
from keys.strictjson import loads
from protocol.canonical import canonical_digest
from protocol.decision import DECISION_TYP, HandoffDecision
from protocol.errors import (
    ApprovalRefused,
    ApprovalRequired,
    BatonError,
    Conflict,
    InvalidRequest,
    translating,
)
from protocol.handoff import HandoffRequest
from protocol.policy import Hold
from protocol.ports import InboxRecord

__all__ = ["GATE_KEY_PREFIX", "GRANT_KIND", "Gate", "Release", "bundle_id_for", "call_args_digest"]

#: ``requestState`` prefix of the gateway's own ``input_required`` answers.
STATE_PREFIX: Final = "baton-hold."


@dataclass(frozen=True, slots=True)
class Release:
    """A held call that may pass now, once; acknowledge it after the upstream answers."""

    record: InboxRecord
    body: bytes


def call_args_digest(call: Call, body: bytes, max_depth: int) -> str:
    """The digest an approval binds to: MCP's ``params.arguments`` (from the
    adapter) or, for A2A, the RFC 8785 digest of the message's parts."""
    if call.args_digest is not None:
        return call.args_digest
    value = loads(body, max_bytes=len(body), max_depth=max_depth)
    params = value.get("params") if isinstance(value, dict) else None
    message = params.get("message") if isinstance(params, dict) else None
    parts = message.get("parts") if isinstance(message, dict) else None
    if parts is None:
        raise InvalidRequest("a held call carries its arguments")
    return canonical_digest(parts)


class Gate:
    """Holds, releases and refuses calls (see the module docstring)."""

    def __init__(self, handoffs: Handoffs) -> None:
        self._handoffs = handoffs
        self._gateway = handoffs.gateway
        self._max_depth = self._gateway.runtime.config.limits.max_json_depth

    async def check(
        self,
        ctx: RequestContext,
        *,
        call: Call,
        body: bytes,
        caller: str,
        upstream: str,
        hold: Hold,
        conversation: str,
        now: float,
    ) -> Release:
        """Release the call (once) or raise :class:`ApprovalRequired` /
        :class:`ApprovalRefused`."""
        if call.target_kind is None or call.target is None:  # pragma: no cover - rules need one
            raise InvalidRequest("a held call names its target")
        gated = Gated(
            caller=caller,
            upstream=upstream,
            target_kind=call.target_kind,
            target=call.target,
            args_digest=call_args_digest(call, body, self._max_depth),
        )
        key = gate_key(gated)
        store = self._handoffs.store
        granted = await self._gateway.stores.bindings.owner(GRANT_KIND, key, now=now)
        if granted is not None:
            record = await store.get(granted)
            if record is not None:
                return await self._release(record, gated, body, call, now, edited=True)
        bundle_id = bundle_id_for(key)
        record = await store.get(bundle_id)
        if record is None:
            record = await self._open(
                ctx, call=call, body=body, gated=gated, hold=hold,
                conversation=conversation, bundle_id=bundle_id, key=key, now=now,
            )  # fmt: skip
        return await self._release(record, gated, body, call, now, edited=False)

    async def _open(
        self,
        ctx: RequestContext,
        *,
        call: Call,
        body: bytes,
        gated: Gated,
        hold: Hold,
        conversation: str,
        bundle_id: str,
        key: str,
        now: float,
    ) -> InboxRecord:
        """Record the held request and open its handoff (idempotent under races)."""
        gateway = self._gateway
        await gateway.record_held(ctx, call=call, body=body, conversation=conversation, now=now)
        handoff = HandoffRequest.build(
            reason_code="approval_required",
            reason_text=hold.reason
            or f"{gated.caller} calls {gated.target_kind} {gated.target!r} on {gated.upstream}",
            trigger="authorization",
            requested_action={
                "kind": "tool_call" if gated.target_kind == "tool" else "skill_call",
                "target": f"{gated.upstream}/{gated.target}",
                "arguments": _arguments(call, body, self._max_depth),
                "args_digest": gated.args_digest,
            },
            allowed_decisions=("approve", "edit", "reject")
            if gated.target_kind == "tool"
            else ("approve", "reject"),
            sla={"resolve_within_s": max(60, hold.resolve_within_s), "on_expiry": "reject"},
            idempotency_key=key,
        )
        queue = self._handoffs.queue(hold.queue)
        try:
            record, _ = await self._handoffs.open(
                ctx, handoff=handoff, queue=queue, conversation=conversation,
                origin=gated.caller, now=now, bundle_id=bundle_id, gated=gated,
            )  # fmt: skip
        except Conflict:  # another gateway opened it first, from another conversation
            found = await self._handoffs.store.get(bundle_id)
            if found is None:
                raise
            record = found
        return record

    async def _release(
        self, record: InboxRecord, gated: Gated, body: bytes, call: Call, now: float, *,
        edited: bool,
    ) -> Release:  # fmt: skip
        handle = {
            "handoff": record.bundle_id,
            "queue": record.queue,
            "status": record.status,
            "inbox": f"/a2a/inbox/{record.queue}",
        }
        if record.status in ("queued", "claimed"):
            if now >= record.resolve_by:
                with contextlib.suppress(BatonError):  # expired concurrently: same outcome
                    await self._handoffs.expire(record, now)
                raise ApprovalRefused(f"{record.bundle_id} expired undecided", public_data=handle)
            state = STATE_PREFIX + record.bundle_id
            await self._gateway.bind_held_state(
                call, state, caller=gated.caller, upstream=gated.upstream, now=now
            )
            raise ApprovalRequired(
                f"{record.bundle_id} waits for a decision",
                public_data={**handle, "request_state": state},
            )
        if record.status != "decided" or record.decision is None:
            raise ApprovalRefused(f"{record.bundle_id} is {record.status}", public_data=handle)
        decision = self._decision(record)
        body_ = decision.decision
        if body_.type == "approve" and not edited:
            allowed = body_.args_digest in (None, gated.args_digest)
        elif body_.type == "edit" and edited:
            allowed = body_.args_digest == gated.args_digest
        else:
            allowed = False
        if not allowed:
            raise ApprovalRefused(
                f"{record.bundle_id}: {body_.type} does not allow these arguments",
                public_data={**handle, "decision": body_.type},
            )
        try:
            released = await self._handoffs.deliver(record, now, note="held call released")
        except Conflict as exc:  # another call used this approval first
            raise ApprovalRefused(
                f"{record.bundle_id}: approval already used", public_data=handle
            ) from exc
        return Release(released, _without_our_state(body, call, self._max_depth))

    def _decision(self, record: InboxRecord) -> HandoffDecision:
        """The stored decision (verified when it was recorded; checked again here,
        with the queue's deciders' keys, before it releases anything)."""
        deciders = self._gateway.runtime.queue_deciders[record.queue]
        with translating():
            verified = verify_compact(record.decision or "", deciders.all_keys, typ=DECISION_TYP)
        return HandoffDecision.parse(verified.payload)

    async def acknowledge(self, release: Release, *, executed: bool, now: float) -> None:
        """The gateway reports the outcome of the call it let through."""
        await self._handoffs.acknowledge(
            release.record,
            actor=self._gateway.runtime.identity,
            outcome="executed" if executed else "failed",
            now=now,
            note="forwarded by the gateway",
        )


def bundle_id_for(key: str) -> str:
    """The handoff id of a gate key: the same call -> the same id, everywhere."""
    return "hb_g" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _arguments(call: Call, body: bytes, max_depth: int) -> Any:
    """The call's arguments, for the operator (inside the encrypted bundle only)."""
    value = loads(body, max_bytes=len(body), max_depth=max_depth)
    params = value.get("params") if isinstance(value, dict) else None
    if not isinstance(params, dict):
        return None
    if call.protocol == "mcp":
        return params.get("arguments", {})
    message = params.get("message")
    return message.get("parts") if isinstance(message, dict) else None


def _without_our_state(body: bytes, call: Call, max_depth: int) -> bytes:
    """The body to forward: a ``requestState`` the gateway minted is not the
    upstream's and is removed; anything else is forwarded as sent."""
    state = call.request_state
    if state is None or not state.startswith(STATE_PREFIX):
        return body
    value = loads(body, max_bytes=len(body), max_depth=max_depth)
    params = value.get("params") if isinstance(value, dict) else None
    if isinstance(params, dict):
        params.pop("requestState", None)
        params.pop("inputResponses", None)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
