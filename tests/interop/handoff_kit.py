"""What the handoff tests share: the handoff request an agent sends, the A2A
message carrying it, and an operator's client of the operator API (one signed
command per request, as ``baton inbox`` sends them)."""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import httpx

from gateway.devdata import DataFolder
from protocol.canonical import canonical_digest
from protocol.decision import DecisionBinding, DecisionBody, make_decision_at, sign_decision
from protocol.operator import COMMAND_MEDIA_TYPE, make_command_at, sign_command

HANDOFF_MEDIA_TYPE = "application/baton-handoff+json"


def handoff_request(
    key: str,
    *,
    arguments: dict[str, Any] | None = None,
    allowed: tuple[str, ...] = ("approve", "reject", "edit"),
    resolve_within_s: int = 3600,
    **extra: Any,
) -> dict[str, Any]:
    """An ``application/baton-handoff+json`` request: a refund over the limit."""
    arguments = {"order": "o-77", "amount": 250} if arguments is None else arguments
    return {
        "reason_code": "refund_over_limit",
        "reason_text": "Refund of 250 exceeds the 100 limit",
        "trigger": "authorization",
        "requested_action": {
            "kind": "tool_call",
            "target": "payments/refund",
            "arguments": arguments,
            "args_digest": canonical_digest(arguments),
        },
        "allowed_decisions": list(allowed),
        "sla": {"resolve_within_s": resolve_within_s},
        "idempotency_key": key,
        **extra,
    }


def handoff_message(key: str, context_id: str, **request: Any) -> dict[str, Any]:
    """The A2A v1.0 message (JSON) escalating ``context_id`` with that request."""
    return {
        "messageId": "m-" + key,
        "role": "ROLE_USER",
        "contextId": context_id,
        "parts": [{"data": handoff_request(key, **request), "mediaType": HANDOFF_MEDIA_TYPE}],
    }


class OperatorClient:
    """Operator ``name``'s client of the operator API at ``url``."""

    def __init__(
        self, folder: DataFolder, name: str, *, url: str, queue: str, audience: str
    ) -> None:
        self.material = folder.load_operator(name)
        self.identity = self.material.identity
        self._url = f"{url}/inbox/api"
        self._queue = queue
        self._audience = audience
        context = ssl.create_default_context(cafile=str(Path(folder.ca_cert)))
        self._http = httpx.AsyncClient(verify=context, timeout=10.0)

    async def close(self) -> None:
        await self._http.aclose()

    def command(self, op: str, **fields: Any) -> str:
        """A fresh signed command (new nonce, now)."""
        command = make_command_at(
            op,  # type: ignore[arg-type]
            operator=self.identity,
            audience=self._audience,
            queue=self._queue,
            now=time.time(),
            **fields,
        )
        return sign_command(command, self.material.signing.active)

    async def post(self, token: str) -> httpx.Response:
        return await self._http.post(
            self._url, content=token, headers={"content-type": COMMAND_MEDIA_TYPE}
        )

    async def send(self, op: str, **fields: Any) -> httpx.Response:
        return await self.post(self.command(op, **fields))

    async def ok(self, op: str, **fields: Any) -> dict[str, Any]:
        """:meth:`send`, which must succeed; the answer's JSON."""
        answer = await self.send(op, **fields)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def decision(self, bundle: dict[str, Any], body: DecisionBody) -> str:
        """A signed decision on ``bundle`` (an operator API summary with a lease)."""
        binding = DecisionBinding(
            bundle["bundle_id"],
            bundle["bundle_digest"],
            bundle["version"],
            bundle["lease"]["fencing_token"],
        )
        made = make_decision_at(binding, body, operator=self.identity, now=time.time())
        return sign_decision(made, self.material.signing.active)

    async def claim_and_decide(self, bundle_id: str, body: DecisionBody) -> str:
        """Claim ``bundle_id``, then decide ``body`` on it; the decision token."""
        bundle = (await self.ok("claim", bundle_id=bundle_id))["bundle"]
        token = self.decision(bundle, body)
        await self.ok("decide", bundle_id=bundle_id, decision=token)
        return token
