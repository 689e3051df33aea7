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

import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from ipaddress import ip_network
from typing import Any, Final

from aiohttp import web

from adapters import a2a
from adapters.agent_card import sign_card
from adapters.jsonrpc import Call
from gateway.config import QueueConfig
from gateway.dialects import Dialect, Rendered, lowered_headers, render_a2a
from gateway.handoffs import GATE_KEY_PREFIX, Handoffs
from gateway.proxy import RequestContext, Timer
from gateway.push import WebhookDelivery
from keys.b64 import b64url_decode, b64url_encode
from keys.errors import KeysError
from keys.strictjson import loads, loads_object
from protocol.bundle import participants
from protocol.canonical import digest
from protocol.errors import (
    BatonError,
    Conflict,
    InvalidRequest,
    PolicyDenied,
    TaskNotFound,
    UnsafeWebhook,
)
from protocol.handoff import HANDOFF_MEDIA_TYPE, HandoffRequest, check_request_digests
from protocol.ports import MAX_BINDING_TEXT, InboxRecord
from protocol.webhooks import check_webhook_url

__all__ = ["ACK_MEDIA_TYPE", "DECISION_MEDIA_TYPE", "EVENTS_MEDIA_TYPE", "Inbox", "task_json"]

log = logging.getLogger("baton.inbox")

DECISION_MEDIA_TYPE: Final = "application/baton-decision+jws"
#: The gateway-signed lifecycle events (a list of compact JWS, oldest first).
EVENTS_MEDIA_TYPE: Final = "application/baton-events+json"
#: An agent's report of what it did with a decision.
ACK_MEDIA_TYPE: Final = "application/baton-ack+json"
#: Binding kind: bundle id -> the escalating agent's webhook (token sealed).
PUSH_KIND: Final = "inbox-push"
#: Statuses a subscriber waits through, and the outcomes it is delivered.
_OPEN: Final = frozenset({"queued", "claimed"})
_OUTCOMES: Final = frozenset({"decided", "expired", "cancelled"})
#: A subscription outlives the handoff's deadline by this much, for the expiry.
_SUBSCRIBE_GRACE_S: Final = 30.0
#: The longest one subscription stream stays open; the agent subscribes again
#: (or polls ``GetTask``) after it ends, so idle streams cannot pile up for days.
_MAX_SUBSCRIPTION_S: Final = 3600.0
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


class _A2aErrors(Dialect):
    """Errors in A2A's own shape (the inbox speaks A2A JSON-RPC)."""

    def render(
        self, error: BatonError, *, call: Call | None, trace_id: str, http_method: str, path: str
    ) -> Rendered:
        return render_a2a(error, call=call, trace_id=trace_id, http_method=http_method, tail="")


class Inbox:
    """``POST /a2a/inbox/<queue>``: escalate, follow up, acknowledge."""

    def __init__(self, handoffs: Handoffs, *, delivery: WebhookDelivery | None = None) -> None:
        self._handoffs = handoffs
        self._gateway = gateway = handoffs.gateway
        self._delivery = delivery
        settings = gateway.runtime.config.gateway
        self._trusted = tuple(ip_network(net) for net in settings.webhook_trusted_networks)
        if delivery is not None:
            handoffs.on_outcome = self._push
        self._errors = _A2aErrors(
            gateway.stores.bindings, gateway.runtime.config.limits.max_json_depth
        )
        self._max_depth = gateway.runtime.config.limits.max_json_depth

    def _queue(self, name: str, agent_name: str, *, escalating: bool) -> QueueConfig:
        queue = self._handoffs.queues.get(name)
        if queue is None or (escalating and agent_name not in queue.escalate_from):
            # The same answer for an unknown queue: queues are not enumerable.
            raise PolicyDenied(f"{agent_name} may not escalate to queue {name!r}")
        return self._handoffs.queue(name) if escalating else queue

    def card(self, request: web.Request) -> web.Response:
        """The queue's own Agent Card (A2A v1.0 s8), signed like every card the
        gateway serves (ADR 0013). Public, like any agent's card: it names the
        queue and how to escalate, nothing about its handoffs. An unknown queue
        is a plain 404."""
        name = request.match_info.get("queue", "")
        queue = self._handoffs.queues.get(name)
        if queue is None:
            raise web.HTTPNotFound()
        runtime = self._gateway.runtime
        url = f"{runtime.config.gateway.relay_base()}/a2a/inbox/{queue.name}"
        card = {
            "name": f"Baton inbox: {queue.name}",
            "description": queue.description
            or f"People who handle '{queue.name}' escalations; send a {HANDOFF_MEDIA_TYPE} part.",
            "version": "1.0.0",
            "provider": {"organization": "Baton", "url": "https://baton.invalid"},
            "supportedInterfaces": [
                {"url": url, "protocolBinding": a2a.JSONRPC, "protocolVersion": "1.0"}
            ],
            "capabilities": {"streaming": True, "pushNotifications": bool(queue.webhook_hosts)},
            "defaultInputModes": [HANDOFF_MEDIA_TYPE, ACK_MEDIA_TYPE],
            "defaultOutputModes": [DECISION_MEDIA_TYPE, EVENTS_MEDIA_TYPE],
            "skills": [
                {
                    "id": "escalate",
                    "name": "Escalate to a person",
                    "description": "Hand the conversation to an operator; the decision comes "
                    "back as this task's signed result.",
                    "tags": ["handoff", "human-in-the-loop"],
                    "inputModes": [HANDOFF_MEDIA_TYPE],
                    "outputModes": [DECISION_MEDIA_TYPE],
                }
            ],
        }
        signed = sign_card(card, runtime.card_signing or runtime.signing.active)
        return web.Response(
            body=json.dumps(signed, separators=(",", ":")), content_type="application/json"
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        gateway = self._gateway
        ctx = gateway.context(request)
        ctx.dialect = self._errors
        timer = Timer(gateway.metrics)
        try:
            agent, body, _verified, now = await gateway.admit(request, ctx, timer)
            await gateway.rate_limit(agent, now)  # a handoff flood is refused 429 (H11)
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
            name = request.match_info.get("queue", "")
            escalating = call.method == "SendMessage" and call.task_id is None
            queue = self._queue(name, agent.name, escalating=escalating)
            ctx.upstream = f"inbox:{queue.name}"
            if escalating:
                await self._escalation_quota(agent.identity, queue, now)
                result = await self._escalate(ctx, agent.identity, queue, body, now)
            elif call.method == "SendMessage":
                result = await self._acknowledge(
                    ctx, agent.identity, queue, call, body=body, now=now
                )
            elif call.method == "GetTask":
                record = await self._visible(agent.identity, queue, call.task_id)
                result = await self._task_for_origin(agent.identity, record, now)
            elif call.method == "CancelTask":
                record = await self._visible(agent.identity, queue, call.task_id)
                result = await self._cancel(ctx, agent.identity, record, now)
            elif call.method == "SubscribeToTask":
                record = await self._visible(agent.identity, queue, call.task_id)
                response = await self._subscribe(request, call, agent.identity, record)
                gateway.finish(ctx, 200, "accepted", "ok")
                return response
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
    async def _escalation_quota(self, origin: str, queue: QueueConfig, now: float) -> None:
        """``agent_escalations`` (per agent) and ``queue_escalations`` (all agents):
        counted fleet-wide before anything is read or stored (H11); retries count
        too. The per-agent quota is counted first, so one agent's flood is refused
        there without spending the queue-wide budget."""
        if queue.agent_escalations is not None:
            await self._gateway.limit(
                f"escalate:{queue.name}:{origin}", queue.agent_escalations, now,
                who=f"{origin} escalating to {queue.name}",
            )  # fmt: skip
        if queue.queue_escalations is not None:
            await self._gateway.limit(
                f"escalate:{queue.name}", queue.queue_escalations, now,
                who=f"escalations to {queue.name}",
            )  # fmt: skip

    def _params(self, body: bytes) -> dict[str, Any]:
        """``params`` of a ``SendMessage``, which must carry a message with parts."""
        value = loads(body, max_bytes=len(body), max_depth=self._max_depth)
        params = value.get("params") if isinstance(value, dict) else None
        message = params.get("message") if isinstance(params, dict) else None
        parts = message.get("parts") if isinstance(message, dict) else None
        if not isinstance(params, dict) or not isinstance(parts, list):
            raise InvalidRequest("SendMessage without a message")
        return params

    @staticmethod
    def _data_part(message: Mapping[str, Any], media_type: str) -> Any:
        found = [
            part.get("data")
            for part in message["parts"]
            if isinstance(part, dict) and part.get("mediaType") == media_type
        ]
        if len(found) != 1:
            raise InvalidRequest(f"expected one {media_type} part, got {len(found)}")
        return found[0]

    async def _escalate(
        self, ctx: RequestContext, origin: str, queue: QueueConfig, body: bytes, now: float
    ) -> dict[str, Any]:
        params = self._params(body)
        message = params["message"]
        try:
            handoff = HandoffRequest.from_value(self._data_part(message, HANDOFF_MEDIA_TYPE))
        except ValueError as exc:  # pydantic: the fields are wrong
            raise InvalidRequest(f"handoff request: {exc}") from exc
        if handoff.idempotency_key.startswith(GATE_KEY_PREFIX):
            raise InvalidRequest(f"idempotency keys starting {GATE_KEY_PREFIX!r} are the gateway's")
        check_request_digests(handoff)
        context_id = message.get("contextId")
        if not isinstance(context_id, str) or not context_id:
            raise InvalidRequest("a handoff names its conversation (message.contextId)")
        webhook = self._webhook(queue, params)  # checked before anything is stored
        stored, _created = await self._handoffs.open(
            ctx,
            handoff=handoff,
            queue=queue,
            conversation="a2a:" + context_id,
            origin=origin,
            now=now,
        )
        if webhook is not None and stored.origin == origin:
            await self._remember_webhook(stored, webhook, now)
        # A repeat, or another participant escalating the same query: one handoff.
        return {"task": await self._task(stored)}

    # ------------------------------------------------------------------ push
    def _webhook(self, queue: QueueConfig, params: Mapping[str, Any]) -> tuple[str, str] | None:
        """``params.configuration.taskPushNotificationConfig`` ``(url, token)``,
        checked against the queue's ``webhook_hosts`` (A2A s4.3, s13.2)."""
        configuration = params.get("configuration")
        push = (
            configuration.get("taskPushNotificationConfig")
            if isinstance(configuration, dict)
            else None
        )
        if push is None:
            return None
        url = push.get("url") if isinstance(push, dict) else None
        token = push.get("token", "") if isinstance(push, dict) else None
        if not isinstance(url, str) or not isinstance(token, str) or len(token) > 512:
            raise InvalidRequest("taskPushNotificationConfig needs a url (and a short token)")
        if self._delivery is None or not queue.webhook_hosts:
            raise UnsafeWebhook(f"queue {queue.name} sends no push notifications")
        check_webhook_url(url, allowed_hosts=queue.webhook_hosts, trusted_networks=self._trusted)
        return url, token

    async def _remember_webhook(
        self, record: InboxRecord, webhook: tuple[str, str], now: float
    ) -> None:
        """Keep the webhook (its token sealed with the store key) until the
        handoff's deadline and a day; the first configuration stays."""
        url, token = webhook
        sealed = self._gateway.runtime.cipher.seal(
            token.encode(), aad=f"inbox-push:{record.bundle_id}".encode()
        )
        owner = json.dumps({"url": url, "token": b64url_encode(sealed)}, separators=(",", ":"))
        if len(owner) > MAX_BINDING_TEXT:
            raise UnsafeWebhook("webhook URL too long to keep")
        ttl_s = max(1, int(record.resolve_by - now) + 86400)
        await self._gateway.stores.bindings.bind(
            PUSH_KIND, record.bundle_id, owner, ttl_s=ttl_s, now=now
        )

    async def _push(self, record: InboxRecord) -> None:
        """Push a decided or expired handoff's task to the agent's webhook,
        signed by the gateway (RFC 9421, ``gateway/push.py``); a 2xx answer is
        the delivery. Held calls are never pushed: their approval is consumed
        by the call itself. Failures are logged, never raised."""
        if self._delivery is None or record.idempotency_key.startswith(GATE_KEY_PREFIX):
            return
        now = self._gateway.clock()
        try:
            stored = await self._gateway.stores.bindings.owner(PUSH_KIND, record.bundle_id, now=now)
            if stored is None:
                return
            target = loads_object(stored.encode())
            token = self._gateway.runtime.cipher.open(
                b64url_decode(str(target["token"])), aad=f"inbox-push:{record.bundle_id}".encode()
            ).decode()
            body = json.dumps({"task": await self._task(record)}, separators=(",", ":")).encode()
            headers = [("content-type", "application/json"), ("a2a-version", "1.0")]
            if token:
                headers.append(("x-a2a-notification-token", token))
            queue = self._handoffs.queues[record.queue]
            status = await self._delivery.deliver(
                str(target["url"]), allowed_hosts=queue.webhook_hosts, body=body,
                headers=headers, sender=self._gateway.runtime.identity,
            )  # fmt: skip
            if 200 <= status < 300:
                with contextlib.suppress(Conflict):  # read by GetTask meanwhile
                    await self._handoffs.deliver(record, self._gateway.clock(), note="push")
            else:
                log.warning(
                    "handoff push refused", extra={"bundle": record.bundle_id, "status": status}
                )
        except (BatonError, KeysError, KeyError) as exc:
            log.warning(
                "handoff push failed", extra={"bundle": record.bundle_id, "reason": str(exc)[:200]}
            )

    # --------------------------------------------------------------- follow up
    async def _visible(self, caller: str, queue: QueueConfig, task_id: str | None) -> InboxRecord:
        """The handoff, for the agents of its conversation only (A2A s13.1)."""
        record = await self._handoffs.store.get(task_id or "")
        if (
            record is None
            or record.queue != queue.name
            or not await self._takes_part(caller, record)
        ):
            raise TaskNotFound("no such handoff for this agent")
        return record

    async def _task_for_origin(self, caller: str, record: InboxRecord, now: float) -> Any:
        """The task; the escalating agent reading an outcome marks it delivered
        (a held call's outcome is delivered by the gate, when the call passes)."""
        return await self._task(await self._delivered_to(caller, record, now, note="GetTask"))

    async def _subscribe(
        self, request: web.Request, call: Call, caller: str, record: InboxRecord
    ) -> web.StreamResponse:
        """``SubscribeToTask`` (A2A v1.0 s3.1.6) as server-sent events: the task
        first, then an ``artifactUpdate`` with the signed decision and a
        ``statusUpdate`` for every change, until the handoff is final (decided,
        expired, cancelled), past its deadline, or an hour has passed. Woken at once by changes in
        this process; another gateway's change is read at the next poll."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)

        async def send(result: Mapping[str, Any]) -> None:
            event = {"jsonrpc": "2.0", "id": call.rpc_id, "result": result}
            await response.write(
                b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
            )

        handoffs = self._handoffs
        await send({"task": await self._task(record)})
        shown_status, shown_decision = record.status, record.decision is not None
        deadline = min(
            record.resolve_by + _SUBSCRIBE_GRACE_S, handoffs.gateway.clock() + _MAX_SUBSCRIPTION_S
        )
        while record.status in _OPEN and handoffs.gateway.clock() < deadline:
            await handoffs.wait_for_change(record.bundle_id, timeout_s=handoffs.poll_s)
            record = await handoffs.get(record.bundle_id, record.queue)
            if record.status in _OUTCOMES:
                record = await self._delivered_to(
                    caller, record, handoffs.gateway.clock(), note="SubscribeToTask"
                )
            task = await self._task(record)
            if record.decision is not None and not shown_decision:
                shown_decision = True
                for artifact in task.get("artifacts", ()):
                    await send(
                        {"artifactUpdate": {"taskId": record.bundle_id,
                                            "contextId": task["contextId"], "artifact": artifact}}
                    )  # fmt: skip
            if record.status != shown_status:
                shown_status = record.status
                await send(
                    {"statusUpdate": {"taskId": record.bundle_id, "contextId": task["contextId"],
                                      "status": task["status"], "metadata": task["metadata"]}}
                )  # fmt: skip
        await response.write_eof()
        return response

    async def _delivered_to(
        self, caller: str, record: InboxRecord, now: float, *, note: str
    ) -> InboxRecord:
        """``record``, marked delivered if it is an outcome the escalating agent
        is now receiving (once: of concurrent readers one records the delivery)."""
        if (
            caller == record.origin
            and record.status in _OUTCOMES
            and not record.idempotency_key.startswith(GATE_KEY_PREFIX)
        ):
            try:
                return await self._handoffs.deliver(record, now, note=note)
            except Conflict:  # delivered concurrently: read what is stored now
                return await self._handoffs.get(record.bundle_id, record.queue)
        return record

    async def _cancel(
        self, ctx: RequestContext, caller: str, record: InboxRecord, now: float
    ) -> dict[str, Any]:
        """``CancelTask`` by the escalating agent, while no one has decided."""
        if caller != record.origin:
            raise TaskNotFound("no such handoff for this agent")
        if record.status not in _OPEN:
            raise Conflict(f"{record.bundle_id} is {record.status}: too late to cancel")
        record = await self._handoffs.cancel(record, actor=caller, now=now)
        await self._gateway.audit(
            ctx, now, event="handoff.cancelled", outcome="accepted", reason=None,
            detail=f"{record.bundle_id} by {caller}",
        )  # fmt: skip
        return await self._task(record)

    async def _acknowledge(
        self,
        ctx: RequestContext,
        caller: str,
        queue: QueueConfig,
        call: Call,
        *,
        body: bytes,
        now: float,
    ) -> dict[str, Any]:
        """A ``SendMessage`` on the handoff's task with an ``application/baton-ack+json``
        part ``{"outcome": "executed"|"failed", "note"?}``: the agent reports what
        it did with the decision (approval is not execution). Origin only, once."""
        record = await self._visible(caller, queue, call.task_id)
        if caller != record.origin:
            raise TaskNotFound("no such handoff for this agent")
        ack = self._data_part(self._params(body)["message"], ACK_MEDIA_TYPE)
        outcome = ack.get("outcome") if isinstance(ack, dict) else None
        note = ack.get("note") if isinstance(ack, dict) else None
        if outcome not in ("executed", "failed") or not isinstance(note, str | None):
            raise InvalidRequest('an acknowledgement says "executed" or "failed"')
        if record.idempotency_key.startswith(GATE_KEY_PREFIX):
            raise Conflict("the gateway acknowledges a held call itself")
        record = await self._delivered_to(caller, record, now, note="acknowledged")
        if record.status != "delivered":
            raise Conflict(f"{record.bundle_id} is {record.status}: nothing to acknowledge")
        record = await self._handoffs.acknowledge(
            record,
            actor=caller,
            outcome=outcome,
            now=now,
            note=None if note is None else note[:4000],
        )
        await self._gateway.audit(
            ctx, now, event="handoff.acknowledged", outcome="accepted", reason=None,
            detail=f"{record.bundle_id} {outcome} by {caller}",
        )  # fmt: skip
        return {"task": await self._task(record)}

    async def _takes_part(self, caller: str, record: InboxRecord) -> bool:
        if caller == record.origin:
            return True
        entries = await self._gateway.stores.transcripts.read(record.conversation)
        return caller in participants(entries)

    async def _task(self, record: InboxRecord) -> dict[str, Any]:
        return task_json(record, await self._handoffs.events(record.bundle_id))


def task_json(record: InboxRecord, events: Sequence[str]) -> dict[str, Any]:
    """The A2A v1.0 Task (s4.1) for a handoff: its state, the signed decision
    (operator JWS) once decided and the gateway-signed lifecycle events, so the
    agent can verify the outcome with public keys alone (``baton verify``)."""
    context_id = record.conversation.removeprefix("a2a:")
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
    artifacts = []
    if record.decision is not None:
        artifacts.append(
            {
                "artifactId": "decision-" + digest(record.decision.encode())[7:23],
                "name": "decision",
                "parts": [
                    {"data": {"decision": record.decision}, "mediaType": DECISION_MEDIA_TYPE}
                ],
            }
        )
    if events:
        artifacts.append(
            {
                "artifactId": "lifecycle",
                "name": "lifecycle",
                "parts": [{"data": {"events": list(events)}, "mediaType": EVENTS_MEDIA_TYPE}],
            }
        )
    if artifacts:
        task["artifacts"] = artifacts
    return task
