"""The inbox as an A2A agent: ``/a2a/inbox/<queue>`` (DESIGN.md "Human handoff").

Any A2A client escalates with ``SendMessage`` carrying a data part of media type
``application/baton-handoff+json`` (:class:`~protocol.handoff.HandoffRequest`);
no SDK of ours is needed. Per request, in this order:

1. admitted like every request (:meth:`Gateway.admit`): the agent's mTLS
   identity, its RFC 9421 signature, freshness and a one-time nonce;
2. the queue must exist and list the agent in ``escalate_from`` (403 otherwise,
   the same answer for an unknown queue, so queues are not enumerable);
3. the handoff request must parse and its ``args_digest`` match its arguments;
4. the conversation's recorded transcript must verify and the agent must take
   part in it (403 ``not_participant``, nothing created: H01);
5. the bundle (request, transcript with bodies, what each agent saw, integrity
   block, PII masked) is signed by the gateway and encrypted to the queue's
   operators; the gateway keeps only ciphertext;
6. the inbox stores it once per ``(queue, idempotency_key)``: the same key
   returns the same bundle and the same task, however often and from however
   many gateways it is sent; a new bundle gets its signed ``queued`` event.

The answer is an A2A task whose id is the bundle id: ``GetTask`` shows its
state (submitted, working once claimed, completed with the signed decision as
a data part once decided) to the agent that escalated and to no one else.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from adapters import a2a
from adapters.jsonrpc import Call
from gateway.config import QueueConfig
from gateway.dialects import Dialect, Rendered, lowered_headers, render_a2a
from gateway.proxy import Gateway, RequestContext, Timer
from keys.material import PublicKey
from keys.strictjson import loads
from protocol.bundle import build_bundle, participants, seal_bundle
from protocol.canonical import digest
from protocol.chain import EMPTY
from protocol.errors import (
    BatonError,
    Conflict,
    InvalidRequest,
    PolicyDenied,
    TaskNotFound,
)
from protocol.handoff import HANDOFF_MEDIA_TYPE, HandoffRequest, check_request_digests
from protocol.lifecycle import LifecycleEvent, sign_event
from protocol.ports import InboxRecord, InboxStore

__all__ = ["DECISION_MEDIA_TYPE", "Inbox"]

DECISION_MEDIA_TYPE: Final = "application/baton-decision+jws"
#: Inbox status -> A2A v1.0 task state (s4.1.3). A handoff is work in progress
#: until a person decided; an expiry or cancellation ends it (fail closed).
TASK_STATES: Final = {
    "queued": "TASK_STATE_SUBMITTED",
    "claimed": "TASK_STATE_WORKING",
    "decided": "TASK_STATE_COMPLETED",
    "delivered": "TASK_STATE_COMPLETED",
    "acknowledged": "TASK_STATE_COMPLETED",
    "expired": "TASK_STATE_FAILED",
    "cancelled": "TASK_STATE_CANCELED",
}
_BODY_MEDIA_TYPE: Final = "application/json"


class _A2aErrors(Dialect):
    """Errors in A2A's own shape (the inbox speaks A2A JSON-RPC)."""

    def render(
        self, error: BatonError, *, call: Call | None, trace_id: str, http_method: str, path: str
    ) -> Rendered:
        return render_a2a(error, call=call, trace_id=trace_id, http_method=http_method, tail="")


class Inbox:
    """``POST /a2a/inbox/<queue>``: escalate (``SendMessage``) or follow up (``GetTask``)."""

    def __init__(
        self,
        gateway: Gateway,
        store: InboxStore,
        *,
        queues: Mapping[str, QueueConfig],
        recipients: Mapping[str, Sequence[PublicKey]],
        token: Callable[[int], str] = secrets.token_urlsafe,
    ) -> None:
        self._gateway = gateway
        self._store = store
        self._queues = queues
        self._recipients = recipients
        self._token = token
        self._errors = _A2aErrors(
            gateway.stores.bindings, gateway.runtime.config.limits.max_json_depth
        )
        self._max_depth = gateway.runtime.config.limits.max_json_depth

    def _queue(self, name: str, agent_name: str) -> QueueConfig:
        queue = self._queues.get(name)
        if queue is None or agent_name not in queue.escalate_from:
            raise PolicyDenied(f"{agent_name} may not escalate to queue {name!r}")
        if not self._recipients.get(queue.name):
            raise PolicyDenied(f"queue {name!r} has no operators to encrypt to")
        return queue

    async def handle(self, request: web.Request) -> web.StreamResponse:
        gateway = self._gateway
        ctx = gateway.context(request)
        ctx.dialect = self._errors
        timer = Timer(gateway.metrics)
        try:
            agent, body, _verified, now = await gateway.admit(request, ctx, timer)
            queue = self._queue(request.match_info.get("queue", ""), agent.name)
            ctx.upstream = f"inbox:{queue.name}"
            call = a2a.parse_a2a(
                body,
                http_method=request.method,
                path="/",
                headers=lowered_headers(request),
                max_depth=self._max_depth,
            )
            ctx.call = call
            if call.binding != a2a.JSONRPC:
                raise InvalidRequest("the inbox speaks A2A JSON-RPC")
            if call.method == "SendMessage":
                result = await self._escalate(ctx, agent.identity, queue, body, now)
            elif call.method == "GetTask":
                result = await self._get_task(agent.identity, queue, call)
            else:
                raise InvalidRequest(f"the inbox does not serve {call.method}")
        except BatonError as exc:
            return await gateway.reject(ctx, exc)
        gateway.finish(ctx, 200, "accepted", "ok")
        answer = {"jsonrpc": "2.0", "id": call.rpc_id, "result": result}
        return web.Response(
            body=json.dumps(answer, separators=(",", ":")), content_type="application/json"
        )

    # -------------------------------------------------------------- escalate
    def _handoff_part(self, body: bytes) -> tuple[HandoffRequest, dict[str, Any]]:
        value = loads(body, max_bytes=len(body), max_depth=self._max_depth)
        params = value.get("params") if isinstance(value, dict) else None
        message = params.get("message") if isinstance(params, dict) else None
        parts = message.get("parts") if isinstance(message, dict) else None
        if not isinstance(message, dict) or not isinstance(parts, list):
            raise InvalidRequest("SendMessage without a message")
        found = [
            part["data"]
            for part in parts
            if isinstance(part, dict) and part.get("mediaType") == HANDOFF_MEDIA_TYPE
        ]
        if len(found) != 1:
            raise InvalidRequest(f"expected one {HANDOFF_MEDIA_TYPE} part, got {len(found)}")
        try:
            handoff = HandoffRequest.from_value(found[0])
        except ValueError as exc:  # pydantic: the fields are wrong
            raise InvalidRequest(f"handoff request: {exc}") from exc
        check_request_digests(handoff)
        return handoff, message

    async def _escalate(
        self, ctx: RequestContext, origin: str, queue: QueueConfig, body: bytes, now: float
    ) -> dict[str, Any]:
        handoff, message = self._handoff_part(body)
        context_id = message.get("contextId")
        if not isinstance(context_id, str) or not context_id:
            raise InvalidRequest("a handoff names its conversation (message.contextId)")
        conversation = "a2a:" + context_id
        transcripts = self._gateway.stores.transcripts
        entries = list(await transcripts.read(conversation))
        bodies: dict[int, tuple[str, bytes]] = {}
        for entry in entries:
            if entry.body_size:
                recorded = await transcripts.read_body(conversation, entry.seq)
                if recorded is not None:
                    bodies[entry.seq] = (_BODY_MEDIA_TYPE, recorded)
        bundle_id = "hb_" + self._token(24)
        runtime = self._gateway.runtime
        built = build_bundle(
            bundle_id=bundle_id,
            request=handoff,
            queue=queue.name,
            conversation=conversation,
            origin=origin,
            gateway=runtime.identity,
            transcript=entries,
            bodies=bodies,
            now=int(now),
        )  # raises NotParticipant before anything is stored (H01)
        sealed = seal_bundle(
            built, gateway_key=runtime.signing.active, recipients=self._recipients[queue.name]
        )
        record = InboxRecord(
            bundle_id=bundle_id,
            queue=queue.name,
            conversation=conversation,
            idempotency_key=handoff.idempotency_key,
            origin=origin,
            status="queued",
            version=1,
            bundle_digest=sealed.bundle_digest,
            sealed_bundle=json.dumps(
                {"jwe": sealed.jwe, "reveals": sealed.reveals_jwe}, separators=(",", ":")
            ),
            created_at=now,
            resolve_by=now + handoff.sla.resolve_within_s,
        )
        stored, created = await self._store.create(record)
        if created:
            event = LifecycleEvent.create(
                EMPTY,
                bundle_id=bundle_id,
                ts=int(now * 1000),
                type="queued",
                actor=runtime.identity,
                version=1,
            )
            await self._store.append_event(
                bundle_id, sign_event(event, runtime.signing.active), seq=0
            )
            await self._gateway.audit(
                ctx, now, event="handoff.created", outcome="accepted", reason=None,
                detail=f"{bundle_id} queue={queue.name} from={origin}",
            )  # fmt: skip
        elif stored.conversation != conversation:
            # The key names another conversation's handoff: never hand that one out.
            raise Conflict("idempotency key already used for another conversation")
        # A repeat, or another participant escalating the same query: one handoff.
        return {"task": self._task(stored, context_id)}

    # --------------------------------------------------------------- follow up
    async def _get_task(self, caller: str, queue: QueueConfig, call: Call) -> dict[str, Any]:
        """The handoff's task, for the agents of its conversation only (A2A s13.1)."""
        record = await self._store.get(call.task_id or "")
        if (
            record is None
            or record.queue != queue.name
            or not await self._takes_part(caller, record)
        ):
            raise TaskNotFound("no such handoff for this agent")
        return self._task(record, record.conversation.removeprefix("a2a:"))

    async def _takes_part(self, caller: str, record: InboxRecord) -> bool:
        if caller == record.origin:
            return True
        entries = await self._gateway.stores.transcripts.read(record.conversation)
        return caller in participants(entries)

    @staticmethod
    def _task(record: InboxRecord, context_id: str) -> dict[str, Any]:
        task: dict[str, Any] = {
            "id": record.bundle_id,
            "contextId": context_id,
            "status": {"state": TASK_STATES[record.status]},
            "metadata": {
                "baton": {
                    "queue": record.queue,
                    "bundleDigest": record.bundle_digest,
                    "version": record.version,
                    "status": record.status,
                    "resolveBy": int(record.resolve_by),
                }
            },
        }
        if record.decision is not None:
            task["artifacts"] = [
                {
                    "artifactId": "decision-" + digest(record.decision.encode())[7:23],
                    "name": "decision",
                    "parts": [
                        {"data": {"decision": record.decision}, "mediaType": DECISION_MEDIA_TYPE}
                    ],
                }
            ]
        return task
