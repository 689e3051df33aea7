"""The operator API: ``POST /inbox/api`` on the operator listener.

Each request body is one signed operator command (``protocol/operator.py``,
media type ``application/baton-operator-command+jws``); there is no session
and no password: the operator's signing key is the credential. Per request:

1. size cap, then the command's signature against the configured operators'
   keys, its signer, audience (this gateway), freshness;
2. its nonce claimed once in the shared nonce store (a replay is refused
   across every gateway on the store);
3. the operator must serve the command's queue (403 otherwise);
4. the action, through :class:`~gateway.handoffs.Handoffs`; one audit event.

The web inbox (``gateway/web/webapp.py``) sends the same commands to
``POST /inbox/web/command`` behind a login session; :meth:`OperatorApi.handle`
runs the same steps for it with ``session_operator`` set, and refuses (403,
audited, before the nonce is claimed or anything else happens) a command
whose signer is not the session's operator.

Answers are JSON. The gateway hands out ciphertext only: ``show`` returns the
bundle JWE encrypted to the queue's operators, ``reveal`` the encrypted PII
originals after auditing the reason; the operator's client decrypts locally.
Errors are ``{"error": {code, message, retryable}}`` with the error's status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from gateway.handoffs import Handoffs, sealed_parts, summary
from gateway.proxy import RequestContext
from protocol.directory import KeyDirectory
from protocol.errors import BatonError, Forbidden, InvalidRequest, PayloadTooLarge, ReplayDetected
from protocol.operator import (
    COMMAND_MEDIA_TYPE,
    MAX_COMMAND_TTL_S,
    OperatorCommand,
    verify_command_at,
)

__all__ = ["OperatorApi"]

_MAX_BODY: Final = 256 * 1024
_NONCE_SCOPE: Final = "operator-command"


class OperatorApi:
    """Serves signed operator commands (see the module docstring)."""

    def __init__(self, handoffs: Handoffs, *, serves: Mapping[str, frozenset[str]]) -> None:
        self._handoffs = handoffs
        self._gateway = handoffs.gateway
        runtime = self._gateway.runtime
        self._operators = KeyDirectory(runtime.operator_keys)
        self._serves = serves  # operator identity -> queues

    async def handle(
        self, request: web.Request, *, session_operator: str | None = None
    ) -> web.Response:
        """One signed command: admission, dispatch, audit (the module docstring).

        ``session_operator``: the web inbox's logged-in operator; the command
        must then be signed by that operator (:class:`Forbidden` otherwise).
        """
        gateway = self._gateway
        ctx = gateway.context(request)
        ctx.peer = session_operator
        try:
            command = await self._admit(request, ctx, session_operator)
            result = await self._dispatch(ctx, command)
        except BatonError as exc:
            return await self._refuse(ctx, exc)
        gateway.finish(ctx, 200, "accepted", "ok")
        return web.Response(
            body=json.dumps(result, separators=(",", ":")), content_type="application/json"
        )

    async def _admit(
        self, request: web.Request, ctx: RequestContext, session_operator: str | None
    ) -> OperatorCommand:
        if request.content_type != COMMAND_MEDIA_TYPE:
            raise InvalidRequest(f"send one {COMMAND_MEDIA_TYPE} body")
        if (request.content_length or 0) > _MAX_BODY:
            raise PayloadTooLarge(f"command over {_MAX_BODY} bytes")
        body = await request.content.read(_MAX_BODY + 1)
        if len(body) > _MAX_BODY:
            raise PayloadTooLarge(f"command over {_MAX_BODY} bytes")
        now = self._gateway.clock()
        verified = verify_command_at(
            body.strip(), operators=self._operators, audience=self._gateway.runtime.identity,
            now=now,
        )  # fmt: skip
        command = verified.command
        if session_operator is not None and command.operator != session_operator:
            raise Forbidden(
                f"command signed by {command.operator} sent in {session_operator}'s session"
            )
        ctx.peer = command.operator
        ctx.upstream = f"inbox:{command.queue}"
        first = await self._gateway.stores.nonces.claim(
            _NONCE_SCOPE + ":" + verified.kid, command.nonce, ttl_s=MAX_COMMAND_TTL_S + 60, now=now
        )
        if not first:
            raise ReplayDetected(f"operator command nonce reused by {command.operator}")
        if command.queue not in self._serves.get(command.operator, frozenset()):
            raise Forbidden(f"{command.operator} does not serve queue {command.queue}")
        return command

    async def _dispatch(self, ctx: RequestContext, command: OperatorCommand) -> dict[str, Any]:
        handoffs = self._handoffs
        now = self._gateway.clock()
        operator, queue = command.operator, command.queue
        bundle_id = command.bundle_id or ""
        if command.op == "list":
            records = await handoffs.store.list(queue, status=command.status, limit=1000)
            return {"bundles": [summary(record) for record in records]}
        if command.op == "show":
            record = await handoffs.get(bundle_id, queue)
            parts = sealed_parts(record)
            await self._gateway.audit(
                ctx, now, event="handoff.shown", outcome="accepted", reason=None,
                detail=f"{bundle_id} to {operator}",
            )  # fmt: skip
            return {
                "bundle": summary(record),
                "jwe": parts["jwe"],
                "has_reveals": parts.get("reveals") is not None,
                "events": list(await handoffs.events(bundle_id)),
                "decision": record.decision,
            }
        if command.op == "claim":
            record = await handoffs.claim(ctx, operator, bundle_id, queue, now)
            return {"bundle": summary(record)}
        if command.op == "release":
            if command.fencing_token is None:  # pragma: no cover - the model requires it
                raise InvalidRequest("release needs the fencing token")
            record = await handoffs.release(
                ctx, operator, bundle_id, queue, fencing_token=command.fencing_token, now=now
            )
            return {"bundle": summary(record)}
        if command.op == "decide":
            if command.decision is None:  # pragma: no cover - the model requires it
                raise InvalidRequest("decide needs a decision")
            record, _decision = await handoffs.decide(
                ctx, operator, bundle_id, queue, token=command.decision, now=now
            )
            return {"bundle": summary(record), "decision": record.decision}
        # reveal
        reveals = await handoffs.reveal(
            ctx, operator, bundle_id, queue, reason=command.reason or "", paths=command.paths,
            now=now,
        )  # fmt: skip
        return {"reveals": reveals}

    async def _refuse(self, ctx: RequestContext, error: BatonError) -> web.Response:
        gateway = self._gateway
        try:
            await gateway.audit(
                ctx, gateway.clock(), event="operator.rejected", outcome="rejected",
                reason=error.code, detail=error.diagnostics()[:1000],
            )  # fmt: skip
        except BatonError as audit_error:
            error = audit_error
        gateway.finish(ctx, error.http_status, "rejected", error.code, detail=error.diagnostics())
        return web.Response(
            status=error.http_status,
            body=json.dumps({"error": error.public()}, separators=(",", ":")),
            content_type="application/json",
        )
