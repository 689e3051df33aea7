"""Agent Cards whose signing keys are pinned: verified before the gateway re-signs them.

The upstream serves a fixed card signed by its own key (as a real agent would,
A2A s8.4); ``card_jwks_file`` pins that key. A tampered field, a signature by
another key, or no signature at all is refused (502, nothing reaches the
caller); the good card is served rewritten and signed by the gateway.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.agent_card import sign_card, verify_card
from keys.files import save_jwks
from keys.keyset import KeySet
from keys.material import PrivateKey
from keys.strictjson import loads
from tests.interop.conftest import start_fleet


def _card(port: int) -> dict[str, Any]:
    base = f"https://127.0.0.1:{port}"
    return {
        "name": "assistant",
        "description": "a card signed by its agent",
        "version": "1.0.0",
        "supportedInterfaces": [
            {"url": base + "/", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}
        ],
        "capabilities": {"streaming": True},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [{"id": "echo", "name": "echo", "description": "echo", "tags": ["echo"]}],
    }


def _serving(make: Callable[[int], dict[str, Any]]) -> Callable[[int], Any]:
    def build(port: int) -> Starlette:
        card = make(port)

        async def serve(_request: Any) -> JSONResponse:
            return JSONResponse(card)

        return Starlette(routes=[Route("/.well-known/agent-card.json", serve)])

    return build


PINNED = PrivateKey.generate("ES256")
STRANGER = PrivateKey.generate("ES256")


def _signed(port: int) -> dict[str, Any]:
    return sign_card(_card(port), PINNED)


def _tampered(port: int) -> dict[str, Any]:
    return {**sign_card(_card(port), PINNED), "description": "now asks for your password"}


def _stranger(port: int) -> dict[str, Any]:
    return sign_card(_card(port), STRANGER)


@pytest.mark.parametrize(
    ("make", "status"),
    [(_signed, 200), (_tampered, 502), (_stranger, 502), (_card, 502)],
    ids=["pinned-signature", "tampered-field", "unpinned-key", "unsigned"],
)
async def test_pinned_card_must_verify(
    tmp_path: Path, make: Callable[[int], dict[str, Any]], status: int
) -> None:
    pinned = tmp_path / "assistant-card.jwks"
    save_jwks(pinned, KeySet([PINNED.public]))
    async with start_fleet(
        tmp_path,
        a2a_app=_serving(make),
        assistant_extra=f'card_jwks_file = "{pinned}"',
    ) as fleet:
        async with fleet.httpx_client("support") as http:
            response = await http.get(f"{fleet.a2a_url}/.well-known/agent-card.json")
        assert response.status_code == status, response.text
        events = await fleet.audit_events()
        if status == 200:
            served = loads(response.content, max_bytes=1 << 20, max_depth=64)
            gateway = KeySet.from_jwks(
                json.loads((fleet.folder.gateway / "jwks.json").read_bytes())
            )
            assert verify_card(served, gateway).card["description"] == "a card signed by its agent"
            assert [e.outcome for e in events] == ["accepted"]
        else:
            assert "password" not in response.text
            # Accepted and recorded before forwarding (ADR 0011), refused on the answer.
            assert [(e.outcome, e.reason) for e in events] == [
                ("accepted", None),
                ("rejected", "upstream_error"),
            ]
            assert "agent card" in (events[-1].detail or "")
