"""Carry end-to-end capsules in A2A messages and MCP tool calls, and find them again.

A capsule (protocol/capsule.py) is a JWE in general JSON serialization: the
gateway records it but cannot read it. DESIGN.md "End-to-end context
capsules" fixes where it travels; this module is the one place that knows the
conventions, so senders and recipients agree:

* **A2A v1.0**: a data ``Part`` (``lf.a2a.v1.Part``: oneof ``text | raw | url |
  data`` plus ``mediaType``, ``filename``, ``metadata``) whose ``data`` is the
  capsule object and whose ``mediaType`` is :data:`CAPSULE_MEDIA_TYPE`
  (``application/baton-capsule+jose``). The JWE holds only strings, objects
  and arrays, so it survives the ``google.protobuf.Value`` round trip intact.
* **MCP, tool arguments**: the capsule under the argument name
  :data:`CAPSULE_ARGUMENT` (``"baton_capsule"``), either one capsule object or
  an array of them: ``{"text": "...", **mcp_capsule_argument(capsule)}``.
* **MCP, tool results**: the same member in ``structuredContent``, or an
  embedded resource content block (``{"type": "resource", "resource":
  {"uri": "urn:baton:capsule", "mimeType": CAPSULE_MEDIA_TYPE, "text": <JWE
  JSON>}}``) from :func:`mcp_capsule_content`. Text blocks are never parsed:
  the SDK mirrors ``structuredContent`` into one, and reading both would
  count a capsule twice.

The finders only recognise and shape-check (a JSON object with a string
``ciphertext`` and a ``recipients`` array; :class:`~protocol.errors.InvalidEnvelope`
otherwise): anything claiming to be a capsule that is not one is an error,
never silently dropped. Decryption and every signature, audience,
conversation and time check is :func:`protocol.capsule.open_capsule_at`,
which :func:`open_capsules` applies to each capsule found.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from keys import strictjson
from keys.errors import KeysError
from keys.keyset import PrivateKeySet
from protocol.capsule import CAPSULE_MEDIA_TYPE, OpenedCapsule, open_capsule_at
from protocol.directory import KeyDirectory
from protocol.errors import InvalidEnvelope, PayloadTooLarge

__all__ = [
    "CAPSULE_ARGUMENT",
    "CAPSULE_MEDIA_TYPE",
    "CAPSULE_RESOURCE_URI",
    "MAX_CAPSULES",
    "a2a_capsule_part",
    "find_a2a_capsules",
    "find_mcp_capsules",
    "mcp_capsule_argument",
    "mcp_capsule_content",
    "open_capsules",
]

#: The MCP tool argument (and ``structuredContent`` member) that holds capsules.
CAPSULE_ARGUMENT: Final = "baton_capsule"
#: The URI of an MCP embedded-resource block holding a capsule.
CAPSULE_RESOURCE_URI: Final = "urn:baton:capsule"
#: Most capsules one message may carry: bounds the work an attacker can ask for.
MAX_CAPSULES: Final = 32
_MAX_TEXT_BYTES: Final = 4 << 20  # protocol/capsule.py's cap on one capsule
_MAX_JWE_DEPTH: Final = 8
#: Members of an A2A object that lead to parts: Message, Artifact, Task, the
#: SendMessage params / response and the streaming events. ``history`` is left
#: out on purpose: it repeats messages already delivered.
_A2A_CONTAINERS: Final = (
    "message",
    "task",
    "params",
    "result",
    "status",
    "artifact",
    "statusUpdate",
    "artifactUpdate",
)
_A2A_LISTS: Final = ("artifacts",)
_A2A_MAX_DEPTH: Final = 6


# --------------------------------------------------------------------------- shape


def _capsule(value: object) -> dict[str, Any]:
    """``value`` if it has the shape of a JWE general JSON serialization (RFC 7516 s7.2.1)."""
    if not isinstance(value, Mapping):
        raise InvalidEnvelope("a capsule must be a JSON object")
    if not isinstance(value.get("ciphertext"), str):
        raise InvalidEnvelope("a capsule needs a string 'ciphertext'")
    recipients = value.get("recipients")
    if not isinstance(recipients, list) or not recipients:
        raise InvalidEnvelope("a capsule needs a non-empty 'recipients' array")
    return dict(value)


def _is_capsule_media_type(value: object) -> bool:
    """RFC 9110 s8.3.1: type and subtype compare case-insensitively; no parameters."""
    return isinstance(value, str) and value.strip().lower() == CAPSULE_MEDIA_TYPE


def _collect(found: list[dict[str, Any]], capsule: dict[str, Any]) -> None:
    if capsule in found:  # the same capsule in two places is one capsule
        return
    if len(found) >= MAX_CAPSULES:
        raise PayloadTooLarge(f"more than {MAX_CAPSULES} capsules in one message")
    found.append(capsule)


# --------------------------------------------------------------------------- A2A


def a2a_capsule_part(capsule: Mapping[str, Any]) -> dict[str, Any]:
    """An A2A v1.0 data ``Part`` carrying ``capsule`` (a2a.proto ``Part``, JSON names)."""
    return {"data": _capsule(capsule), "mediaType": CAPSULE_MEDIA_TYPE}


def _a2a_parts(value: object, depth: int = 0) -> Iterator[object]:
    """Every part reachable from a part list, Message, Artifact, Task or envelope."""
    if depth > _A2A_MAX_DEPTH:
        return
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        yield from value
        return
    if not isinstance(value, Mapping):
        return
    parts = value.get("parts")
    if isinstance(parts, Sequence) and not isinstance(parts, str | bytes):
        yield from parts
    for name in _A2A_CONTAINERS:
        inner = value.get(name)
        if isinstance(inner, Mapping):
            yield from _a2a_parts(inner, depth + 1)
    for name in _A2A_LISTS:
        items = value.get(name)
        if isinstance(items, Sequence) and not isinstance(items, str | bytes):
            for item in items:
                if isinstance(item, Mapping):
                    yield from _a2a_parts(item, depth + 1)


def find_a2a_capsules(message_or_parts: Mapping[str, Any] | Sequence[Any]) -> list[dict[str, Any]]:
    """Capsules in A2A v1.0 data parts whose ``mediaType`` is the capsule media type.

    Accepts a list of parts, a ``Message``, an ``Artifact``, a ``Task``
    (its artifacts and status message, not its history), ``SendMessage``
    params, a JSON-RPC request or result, or a ``StreamResponse`` event
    (``statusUpdate``/``artifactUpdate``). Returns them in order, each once.
    """
    found: list[dict[str, Any]] = []
    for part in _a2a_parts(message_or_parts):
        if isinstance(part, Mapping) and _is_capsule_media_type(part.get("mediaType")):
            if "data" not in part:
                raise InvalidEnvelope("capsule part without 'data'")
            _collect(found, _capsule(part["data"]))
    return found


# --------------------------------------------------------------------------- MCP


def mcp_capsule_argument(capsule: Mapping[str, Any]) -> dict[str, Any]:
    """``{"baton_capsule": capsule}``: merge it into a tool's arguments (or
    ``structuredContent``). The tool's input schema must allow that member."""
    return {CAPSULE_ARGUMENT: _capsule(capsule)}


def mcp_capsule_content(capsule: Mapping[str, Any]) -> dict[str, Any]:
    """An MCP ``EmbeddedResource`` content block carrying ``capsule`` as JSON text."""
    text = json.dumps(_capsule(capsule), separators=(",", ":"), ensure_ascii=True)
    return {
        "type": "resource",
        "resource": {"uri": CAPSULE_RESOURCE_URI, "mimeType": CAPSULE_MEDIA_TYPE, "text": text},
    }


def _argument_capsules(holder: object) -> Iterator[dict[str, Any]]:
    """The capsule(s) under :data:`CAPSULE_ARGUMENT` in an object, if any."""
    if not isinstance(holder, Mapping) or CAPSULE_ARGUMENT not in holder:
        return
    value = holder[CAPSULE_ARGUMENT]
    if isinstance(value, list):
        for item in value:
            yield _capsule(item)
    else:
        yield _capsule(value)


def _content_capsules(content: object) -> Iterator[dict[str, Any]]:
    """Capsules in embedded-resource blocks of a tool result's ``content``."""
    if not isinstance(content, list):
        return
    for block in content:
        if not isinstance(block, Mapping) or block.get("type") != "resource":
            continue
        resource = block.get("resource")
        if not isinstance(resource, Mapping):
            continue
        if not _is_capsule_media_type(resource.get("mimeType")):
            continue
        text = resource.get("text")
        if not isinstance(text, str):
            raise InvalidEnvelope("capsule resource without 'text'")
        try:
            parsed = strictjson.loads_object(
                text, max_bytes=_MAX_TEXT_BYTES, max_depth=_MAX_JWE_DEPTH
            )
        except KeysError as exc:  # one public answer for every envelope failure
            raise InvalidEnvelope(f"capsule resource text: {exc.detail}") from exc
        yield _capsule(parsed)


def _mcp_holders(value: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """``value`` and the objects inside it that may hold arguments or a result:
    ``params``/``result`` of a JSON-RPC message, ``arguments`` of tools/call params."""
    yield value
    for name in ("params", "result"):
        inner = value.get(name)
        if isinstance(inner, Mapping):
            yield from _mcp_holders(inner)
    arguments = value.get("arguments")
    if isinstance(arguments, Mapping):
        yield arguments


def find_mcp_capsules(arguments_or_result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Capsules in MCP tool arguments or a tool result (see the module docstring).

    Accepts the ``arguments`` object, ``tools/call`` params, a
    ``CallToolResult`` (``structuredContent`` and ``content``), or a whole
    JSON-RPC request or response holding one of those. Only the
    :data:`CAPSULE_ARGUMENT` member at the top of each is read, never nested
    deeper. Returns them in order, each once.
    """
    found: list[dict[str, Any]] = []
    for holder in _mcp_holders(arguments_or_result):
        for capsule in _argument_capsules(holder):
            _collect(found, capsule)
        for capsule in _argument_capsules(holder.get("structuredContent")):
            _collect(found, capsule)
        for capsule in _content_capsules(holder.get("content")):
            _collect(found, capsule)
    return found


# --------------------------------------------------------------------------- open


def open_capsules(
    capsules: Iterable[Mapping[str, Any]],
    *,
    me: str,
    my_keys: PrivateKeySet,
    senders: KeyDirectory,
    now: float,
    conversation: str | None = None,
    delivered_by: str | None = None,
    skew_s: int = 5,
) -> list[OpenedCapsule]:
    """:func:`protocol.capsule.open_capsule_at` on each capsule, in order.

    All or nothing: the first capsule that fails raises its error and none
    is returned. Claiming each capsule's nonce (scope ``capsule:<iss>``) is the
    caller's, in its :class:`~protocol.ports.NonceStore`.
    """
    return [
        open_capsule_at(
            capsule,
            me=me,
            my_keys=my_keys,
            senders=senders,
            now=now,
            conversation=conversation,
            delivered_by=delivered_by,
            skew_s=skew_s,
        )
        for capsule in capsules
    ]
