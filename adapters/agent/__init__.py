"""Agent-side helpers for the official SDKs: sign to the gateway, verify the gateway.

* :class:`RequestSigner` - an ``auth=`` callable for ``httpx.AsyncClient``
  (a2a-sdk) and ``httpx2.AsyncClient`` (mcp) that adds ``Content-Digest`` and
  an RFC 9421 signature to every request the agent sends to the gateway.
* :class:`GatewayVerifier` - ASGI middleware in front of the agent's own app
  that admits only requests the gateway signed, fresh and once, and exposes
  the verified caller (``request.state.baton_caller``).
* Capsule helpers - put end-to-end capsules in A2A parts and MCP tool
  arguments/results, find them again, open them.

Like all of ``adapters/``, nothing here does I/O: keys are loaded by the caller.
"""

from __future__ import annotations

from adapters.agent.capsules import (
    CAPSULE_ARGUMENT,
    CAPSULE_MEDIA_TYPE,
    CAPSULE_RESOURCE_URI,
    a2a_capsule_part,
    find_a2a_capsules,
    find_mcp_capsules,
    mcp_capsule_argument,
    mcp_capsule_content,
    open_capsules,
)
from adapters.agent.signer import DEFAULT_COVER, RequestSigner, SignableRequest
from adapters.agent.verifier import (
    CALLER_HEADER,
    GATEWAY_POLICY,
    GatewayVerifier,
    NonceCache,
    VerifiedCall,
)

__all__ = [
    "CALLER_HEADER",
    "CAPSULE_ARGUMENT",
    "CAPSULE_MEDIA_TYPE",
    "CAPSULE_RESOURCE_URI",
    "DEFAULT_COVER",
    "GATEWAY_POLICY",
    "GatewayVerifier",
    "NonceCache",
    "RequestSigner",
    "SignableRequest",
    "VerifiedCall",
    "a2a_capsule_part",
    "find_a2a_capsules",
    "find_mcp_capsules",
    "mcp_capsule_argument",
    "mcp_capsule_content",
    "open_capsules",
]
