"""Pinned MCP tool definitions: a tool that changes after it was first seen
needs an administrator's approval again (threat I04, the "rug pull").

A tool's **definition** is the whole object a ``tools/list`` answer gives for
it (name, title, description, input and output schemas, annotations, ...);
its digest is ``sha256:`` of its RFC 8785 form (:func:`tool_digest`), so key
order and number spelling do not count as change and anything else does.

State, in the shared :class:`~protocol.ports.BindingStore` (fleet-wide on
Redis), per ``(upstream, tool name)``:

* ``mcp-tool-pin`` -> the approved digest. Trust on first use: the first
  listing that shows a tool pins it (the store's first-writer-wins bind, so
  concurrent gateways agree on one pin).
* ``mcp-tool-changed`` -> the first digest seen that differs from the pin.
  While it exists the tool is left out of every listing (the model never
  reads the new description, where poisoning lives) and ``tools/call`` of it
  is refused ``403 tool_changed`` before anything is forwarded.

``baton tools approve UPSTREAM TOOL`` (:meth:`ToolPins.approve`) makes the
changed digest the pin and clears the mark. Both bindings live
:data:`PIN_TTL_S`; a pin that lapses is taken again at the next listing.
A changed tool that changes back keeps its mark until approved: a definition
that moved once is not trusted again by itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from protocol.canonical import canonical_digest
from protocol.errors import Conflict
from protocol.ports import BindingStore

__all__ = ["CHANGED_KIND", "PIN_KIND", "PIN_TTL_S", "Approval", "Seen", "ToolPins", "tool_digest"]

PIN_KIND: Final = "mcp-tool-pin"
CHANGED_KIND: Final = "mcp-tool-changed"
#: How long a pin (and a change mark) lives: ten years, so in practice until approved.
PIN_TTL_S: Final = 10 * 365 * 24 * 3600


def tool_digest(tool: Mapping[str, Any]) -> str:
    """``sha256:`` of the RFC 8785 form of one ``tools/list`` entry."""
    return canonical_digest(dict(tool))


def _key(upstream: str, name: str) -> str:
    """Binding key: per upstream; a long tool name is hashed to stay bounded."""
    if len(name) > 200:
        name = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    return f"{upstream}/{name}"


@dataclass(frozen=True, slots=True)
class Seen:
    """What one listed definition is against the pin."""

    #: The pinned (approved) digest; equal to ``digest`` when unchanged.
    pinned: str
    digest: str
    #: No change mark existed when this observation looked: the change is news
    #: (gateways racing may each think so; the ``tool.changed`` audit event is
    #: written under a ``once`` key, so it is still one event).
    first: bool = False

    @property
    def changed(self) -> bool:
        return self.pinned != self.digest


@dataclass(frozen=True, slots=True)
class Approval:
    """What :meth:`ToolPins.approve` replaced."""

    previous: str
    approved: str


class ToolPins:
    """The pins and change marks of one store (see the module docstring)."""

    def __init__(self, bindings: BindingStore) -> None:
        self._bindings = bindings

    async def observe(self, upstream: str, tool: Mapping[str, Any], *, now: float) -> Seen:
        """Pin ``tool`` if it is new; mark it changed if it differs from its pin."""
        name = str(tool["name"])
        key = _key(upstream, name)
        digest = tool_digest(tool)
        pinned = await self._bindings.bind(PIN_KIND, key, digest, ttl_s=PIN_TTL_S, now=now)
        if pinned == digest:
            return Seen(pinned, digest)
        if await self._bindings.owner(CHANGED_KIND, key, now=now) is not None:
            return Seen(pinned, digest)
        marked = await self._bindings.bind(CHANGED_KIND, key, digest, ttl_s=PIN_TTL_S, now=now)
        return Seen(pinned, digest, first=marked == digest)

    async def changed(self, upstream: str, name: str, *, now: float) -> str | None:
        """The changed digest awaiting approval, or None (the tool may be used)."""
        return await self._bindings.owner(CHANGED_KIND, _key(upstream, name), now=now)

    async def approve(self, upstream: str, name: str, *, now: float) -> Approval | None:
        """Make the changed definition the pin; None when nothing awaits approval."""
        key = _key(upstream, name)
        changed = await self._bindings.owner(CHANGED_KIND, key, now=now)
        if changed is None:
            return None
        previous = await self._bindings.owner(PIN_KIND, key, now=now)
        if previous is not None:
            await self._bindings.unbind(PIN_KIND, key, previous, now=now)
        bound = await self._bindings.bind(PIN_KIND, key, changed, ttl_s=PIN_TTL_S, now=now)
        if bound != changed:  # a listing pinned yet another definition meanwhile
            raise Conflict(f"{upstream} tool {name!r} changed again while being approved")
        await self._bindings.unbind(CHANGED_KIND, key, changed, now=now)
        return Approval(previous or "", changed)
