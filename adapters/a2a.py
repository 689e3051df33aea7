"""A2A requests as typed :class:`~adapters.jsonrpc.Call` values, and Baton errors in A2A's shapes.

One HTTP request to an A2A agent arrives in one of four dialects: the v1.0
JSON-RPC binding (spec §9), the v1.0 HTTP+JSON binding (§11), and their v0.3
forms (JSON-RPC ``message/send`` ..., REST under ``/v1/...``), all served on the
same endpoints by a2a-sdk 1.3.0 with ``enable_v0_3_compat``. :func:`parse_a2a`
turns each into one :class:`Call` whose ``method`` is always the v1.0 name, so
policy is written once (``message/send`` and ``POST /message:send`` are both
``SendMessage``).

The gateway enforces task ownership on ``Call.task_id`` (§13.1: tasks are
visible only to their creator, existence is not revealed), uses
``Call.context_id`` as the conversation, and checks ``Call.push_urls`` against
its webhook allow-list (§13.2, SSRF). So the parser must read every field the
upstream would read, under every name the upstream accepts:

* protobuf's ``ParseDict`` (v1.0, and v0.3 REST) accepts a field under its
  JSON name *and* its proto name (``taskId`` and ``task_id``); pydantic (v0.3
  JSON-RPC) accepts alias and name. The a2a-sdk v0.3 REST client really sends
  ``{"request": {"task_id": ...}}``. Every logical field is looked up under all
  its names, and a field given under two names is refused (the upstream would
  pick one; Baton cannot know which).
* REST routes are matched the way Starlette matches them: on the
  percent-decoded path, a task id being one whole segment. A segment that
  decodes to something containing ``/``, a ``.``/``..`` segment, malformed
  percent-encoding and non-UTF-8 bytes are refused, so the structure Baton
  sees is the structure the upstream routes on. The routes may sit under any
  prefix and ``/{tenant}``; a path whose meaning depends on where the routes
  are mounted (``GET /x/tasks/tasks``: a task called ``tasks``, or the task
  list under ``/x/tasks``?) is refused as ambiguous. ``HEAD`` is matched as
  ``GET``, as Starlette does, so a ``HEAD`` cannot probe task existence.
* Task and context ids are strings of 1..256 characters without control
  characters; anything else is :class:`~protocol.errors.InvalidRequest`.

Nothing is parsed with :func:`json.loads`: bodies go through
:func:`keys.strictjson.loads` (duplicate keys, depth, NaN; threats J15, X02).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from adapters.jsonrpc import PARSE_ERROR, RPC_CODES, Call, RpcId
from keys.errors import KeysError
from keys.strictjson import loads
from protocol.errors import (
    BatonError,
    InvalidRequest,
    TaskNotFound,
    UnsupportedVersion,
    from_keys_error,
)

__all__ = [
    "GRPC_STATUS",
    "HTTP_JSON",
    "JSONRPC",
    "MAX_ID_CHARS",
    "MAX_REFERENCE_TASKS",
    "STREAMING_METHODS",
    "V03_TO_V1",
    "V1_METHODS",
    "a2a_version",
    "error_binding",
    "parse_a2a",
    "render_a2a_error",
    "replace_push_urls",
    "task_ids_in_event",
    "task_ids_in_result",
]

JSONRPC: Final = "JSONRPC"
HTTP_JSON: Final = "HTTP+JSON"

#: The v1.0 operations (spec §5.3; a2a-sdk ``JsonRpcDispatcher.METHOD_TO_MODEL``).
V1_METHODS: Final[frozenset[str]] = frozenset(
    {
        "SendMessage",
        "SendStreamingMessage",
        "GetTask",
        "ListTasks",
        "CancelTask",
        "SubscribeToTask",
        "CreateTaskPushNotificationConfig",
        "GetTaskPushNotificationConfig",
        "ListTaskPushNotificationConfigs",
        "DeleteTaskPushNotificationConfig",
        "GetExtendedAgentCard",
    }
)

#: v0.3 JSON-RPC method -> v1.0 name (a2a-sdk ``JSONRPC03Adapter.METHOD_TO_MODEL``).
#: v0.3 has no ``tasks/list`` (not in the v0.3 spec; the SDK omits it on purpose).
V03_TO_V1: Final[Mapping[str, str]] = MappingProxyType(
    {
        "message/send": "SendMessage",
        "message/stream": "SendStreamingMessage",
        "tasks/get": "GetTask",
        "tasks/cancel": "CancelTask",
        "tasks/resubscribe": "SubscribeToTask",
        "tasks/pushNotificationConfig/set": "CreateTaskPushNotificationConfig",
        "tasks/pushNotificationConfig/get": "GetTaskPushNotificationConfig",
        "tasks/pushNotificationConfig/list": "ListTaskPushNotificationConfigs",
        "tasks/pushNotificationConfig/delete": "DeleteTaskPushNotificationConfig",
        "agent/getAuthenticatedExtendedCard": "GetExtendedAgentCard",
    }
)

#: Methods whose response is an SSE stream (§3.1.2, §9.4.2, §11.7).
STREAMING_METHODS: Final[frozenset[str]] = frozenset({"SendStreamingMessage", "SubscribeToTask"})

_MESSAGE_METHODS: Final = frozenset({"SendMessage", "SendStreamingMessage"})

MAX_ID_CHARS: Final = 256
_MAX_METHOD_CHARS: Final = 200
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_V1_HEADER: Final = re.compile(r"1\.0(?:\.[0-9]+)?")
_V03_HEADER: Final = re.compile(r"0\.3(?:\.[0-9]+)?")
_NO_IDS: Final[tuple[None, None]] = (None, None)

# Field names: JSON name first, then the proto/pydantic name the upstream also accepts.
_TASK_ID: Final = ("taskId", "task_id")
_REFERENCE_TASK_IDS: Final = ("referenceTaskIds", "reference_task_ids")
#: More referenced tasks than this in one message is refused (each is a store read).
MAX_REFERENCE_TASKS: Final = 32
_CONTEXT_ID: Final = ("contextId", "context_id")
# v0.3 REST's SendMessageRequest names its message field ``request`` (json_name "message").
_MESSAGE: Final = ("message", "request")
# Where a SendMessage configuration carries its webhook, per dialect:
# v1.0 ``taskPushNotificationConfig``, v0.3 JSON-RPC ``pushNotificationConfig``,
# v0.3 REST ``pushNotification``.
_SEND_PUSH_CONFIG: Final = (
    ("taskPushNotificationConfig", "task_push_notification_config"),
    ("pushNotificationConfig", "push_notification_config"),
    ("pushNotification", "push_notification"),
)
_SKILL_KEYS: Final = ("skill", "skillId")

#: The key that names the task in a JSON-RPC request's params, by wire method name.
#: v0.3 push-config get/list/delete name the task ``id``; v1.0 names it ``taskId``
#: and uses ``id`` for the config (a2a-sdk ``compat/v0_3/conversions.py``).
_TASK_ID_PARAM: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "GetTask": ("id",),
        "CancelTask": ("id",),
        "SubscribeToTask": ("id",),
        "CreateTaskPushNotificationConfig": _TASK_ID,
        "GetTaskPushNotificationConfig": _TASK_ID,
        "ListTaskPushNotificationConfigs": _TASK_ID,
        "DeleteTaskPushNotificationConfig": _TASK_ID,
        "tasks/get": ("id",),
        "tasks/cancel": ("id",),
        "tasks/resubscribe": ("id",),
        "tasks/pushNotificationConfig/set": _TASK_ID,
        "tasks/pushNotificationConfig/get": ("id",),
        "tasks/pushNotificationConfig/list": ("id",),
        "tasks/pushNotificationConfig/delete": ("id",),
    }
)


# --------------------------------------------------------------------------- version
def a2a_version(headers: Mapping[str, str]) -> str:
    """The A2A version in force: ``"1.0"`` or ``"0.3"`` (spec §3.2.6, §3.6).

    An absent or empty ``A2A-Version`` means 0.3. ``1.0``/``1.0.N`` is 1.0;
    ``0.3``/``0.3.N`` is 0.3 (a2a-sdk's v0.3 client transports send ``0.3``
    explicitly). Anything else is :class:`UnsupportedVersion`.
    """
    value = headers.get("a2a-version", "").strip(" \t")
    if not value or _V03_HEADER.fullmatch(value):
        return "0.3"
    if _V1_HEADER.fullmatch(value):
        return "1.0"
    raise UnsupportedVersion(f"A2A-Version {value[:40]!r}")


# --------------------------------------------------------------------------- REST routes
@dataclass(frozen=True, slots=True)
class _Route:
    """One HTTP+JSON route: methods, path suffix template, v1.0 operation.

    Template segments: a literal, ``{id}`` (the task id, a whole segment),
    ``{id}:verb`` (the task id followed by a custom verb, AIP-136) or ``{cid}``
    (a push-config id).
    """

    methods: frozenset[str]
    template: tuple[str, ...]
    name: str


def _route(methods: str, template: str, name: str) -> _Route:
    return _Route(frozenset(methods.split()), tuple(template.split("/")), name)


#: The a2a-sdk 1.3.0 route table (``server/routes/rest_routes.py``), in its order:
#: Starlette tries routes in order, so ``GET /tasks/x:subscribe`` is a
#: subscription, not ``GetTask("x:subscribe")``. The v0.3 routes are the same
#: suffixes under ``/v1`` (``compat/v0_3/rest_adapter.py``), plus ``/v1/card``.
_ROUTES: Final[tuple[_Route, ...]] = (
    _route("POST", "message:send", "SendMessage"),
    _route("POST", "message:stream", "SendStreamingMessage"),
    _route("POST", "tasks/{id}:cancel", "CancelTask"),
    _route("GET POST", "tasks/{id}:subscribe", "SubscribeToTask"),
    _route("GET", "tasks/{id}", "GetTask"),
    _route("GET", "tasks/{id}/pushNotificationConfigs/{cid}", "GetTaskPushNotificationConfig"),
    _route(
        "DELETE", "tasks/{id}/pushNotificationConfigs/{cid}", "DeleteTaskPushNotificationConfig"
    ),
    _route("POST", "tasks/{id}/pushNotificationConfigs", "CreateTaskPushNotificationConfig"),
    _route("GET", "tasks/{id}/pushNotificationConfigs", "ListTaskPushNotificationConfigs"),
    _route("GET", "tasks", "ListTasks"),
    _route("GET", "extendedAgentCard", "GetExtendedAgentCard"),
    _route("GET", "v1/card", "GetExtendedAgentCard"),
    _route("GET", ".well-known/agent-card.json", "GetAgentCard"),
)


@dataclass(frozen=True, slots=True)
class _RouteMatch:
    name: str
    task_id: str | None


_PERCENT: Final = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_PERCENT: Final = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _decode_segment(raw: str) -> str:
    """One path segment percent-decoded once (RFC 3986 §2.1), as strict UTF-8."""
    if "%" not in raw:
        return raw
    try:
        data = raw.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("path is not encodable as UTF-8") from None
    if _BAD_PERCENT.search(data):
        raise InvalidRequest("malformed percent-encoding in path")
    decoded = _PERCENT.sub(lambda match: bytes([int(match.group(1), 16)]), data)
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("percent-encoded path is not UTF-8") from None


def _path_segments(path: str) -> list[str]:
    """The decoded segments of ``path``; refuses what would re-split or normalise upstream."""
    segments = [_decode_segment(raw) for raw in path.removeprefix("/").split("/")]
    for segment in segments:
        if "/" in segment:
            raise InvalidRequest("path segment contains an encoded '/'")
        if segment in (".", ".."):
            raise InvalidRequest("dot segment in path")
    return segments


def _match_template(template: tuple[str, ...], tail: list[str]) -> tuple[bool, str | None]:
    """Whether ``tail`` fits ``template``, and the task id it names (Starlette ``[^/]+``)."""
    task_id: str | None = None
    for pattern, segment in zip(template, tail, strict=True):
        if pattern in ("{id}", "{cid}"):
            if not segment:
                return False, None
            if pattern == "{id}":
                task_id = segment
        elif pattern.startswith("{id}:"):
            verb = pattern.removeprefix("{id}")
            if len(segment) <= len(verb) or not segment.endswith(verb):
                return False, None
            task_id = segment.removesuffix(verb)
        elif pattern != segment:
            return False, None
    return True, task_id


def _candidates(method: str, segments: list[str]) -> Iterator[tuple[int, _RouteMatch]]:
    for route in _ROUTES:
        size = len(route.template)
        if method not in route.methods or size > len(segments):
            continue
        matched, task_id = _match_template(route.template, segments[-size:])
        if matched:
            yield len(segments) - size, _RouteMatch(route.name, task_id)


def _match_route(http_method: str, path: str) -> _RouteMatch | None:
    """The HTTP+JSON operation at ``path`` (any prefix, any tenant), or None.

    The first route in table order wins among those that fit with the same
    prefix (as in Starlette); fits with different prefixes are ambiguous.
    """
    method = http_method.upper()
    if method == "HEAD":
        method = "GET"
    found = list(_candidates(method, _path_segments(path)))
    if not found:
        return None
    if len({prefix for prefix, _ in found}) > 1:
        raise InvalidRequest("REST path is ambiguous without its mount point")
    return found[0][1]


def error_binding(http_method: str, path: str) -> str:
    """The binding to render an error in when :func:`parse_a2a` could not finish.

    ``HTTP+JSON`` for anything that is not a ``POST`` or that is a ``POST`` to
    a REST route; ``JSONRPC`` otherwise. Never raises.
    """
    if http_method.upper() != "POST":
        return HTTP_JSON
    try:
        return HTTP_JSON if _match_route(http_method, path) is not None else JSONRPC
    except BatonError:
        return JSONRPC


# --------------------------------------------------------------------------- field access
def _field(obj: Mapping[str, Any], names: tuple[str, ...], what: str) -> Any:
    """The value of the field called any of ``names``; None when absent or null.

    Refuses a field present under more than one of its names: protobuf and
    pydantic each accept both, and which one wins is theirs to decide.
    """
    present = [name for name in names if name in obj]
    if len(present) > 1:
        raise InvalidRequest(f"{what} given as both {present[0]!r} and {present[1]!r}")
    return obj[present[0]] if present else None


def _object(value: Any, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be an object")
    return value


def _valid_id(value: Any) -> bool:
    return (
        isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS and _CONTROL.search(value) is None
    )


def _required_id(value: Any, what: str) -> str:
    """An A2A id (task, context, skill): a string of 1..256 characters, no control characters."""
    if not _valid_id(value):
        raise InvalidRequest(f"{what} must be a string of 1..{MAX_ID_CHARS} characters")
    result: str = value
    return result


def _checked_id(value: Any, what: str) -> str | None:
    """Like :func:`_required_id`, but absent (None) is allowed."""
    return None if value is None else _required_id(value, what)


def _url(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string")
    return value


# --------------------------------------------------------------------------- extraction
@dataclass(frozen=True, slots=True)
class _Fields:
    """What the gateway needs from one request's parameters."""

    task_id: str | None = None
    context_id: str | None = None
    push_urls: tuple[str, ...] = ()
    skill: str | None = None
    reference_task_ids: tuple[str, ...] = ()


def _skill(*metadatas: Any) -> str | None:
    """The skill named in ``metadata["skill"|"skillId"]`` (a Baton convention), if any.

    Non-string values are not skill ids and are ignored. Two different
    skill ids in one request are refused: the agent might act on either.
    """
    found: set[str] = set()
    for metadata in metadatas:
        if not isinstance(metadata, dict):
            continue
        for key in _SKILL_KEYS:
            value = metadata.get(key)
            if isinstance(value, str):
                found.add(_required_id(value, "skill id"))
    if len(found) > 1:
        raise InvalidRequest("conflicting skill ids in metadata")
    return next(iter(found), None)


def _push_urls_of_config(config: Any, what: str) -> list[str]:
    obj = _object(config, what)
    if obj is None:
        return []
    url = _url(obj.get("url"), f"{what}.url")
    return [] if url is None else [url]


def _message_fields(params: Mapping[str, Any]) -> _Fields:
    """SendMessage / SendStreamingMessage: every dialect at once (v1.0, v0.3, REST).

    Webhook URLs are collected from every dialect's configuration field: one
    the upstream ignores costs a needless check, one Baton missed would be an
    unchecked webhook.
    """
    message = _object(_field(params, _MESSAGE, "params.message"), "params.message") or {}
    configuration = _object(params.get("configuration"), "params.configuration") or {}
    urls: list[str] = []
    for names in _SEND_PUSH_CONFIG:
        config = _field(configuration, names, "push notification config")
        urls += _push_urls_of_config(config, "push notification config")
    return _Fields(
        task_id=_checked_id(_field(message, _TASK_ID, "message.taskId"), "message.taskId"),
        context_id=_checked_id(
            _field(message, _CONTEXT_ID, "message.contextId"), "message.contextId"
        ),
        push_urls=tuple(urls),
        skill=_skill(message.get("metadata"), params.get("metadata")),
        reference_task_ids=_reference_task_ids(message),
    )


def _reference_task_ids(message: Mapping[str, Any]) -> tuple[str, ...]:
    """``Message.referenceTaskIds`` (A2A v1.0 ``Message``; "task refinements" in
    life-of-a-task): a list of task ids, each checked
    like ``taskId``; at most :data:`MAX_REFERENCE_TASKS`, duplicates once."""
    value = _field(message, _REFERENCE_TASK_IDS, "message.referenceTaskIds")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidRequest("message.referenceTaskIds must be a list")
    if len(value) > MAX_REFERENCE_TASKS:
        raise InvalidRequest(f"more than {MAX_REFERENCE_TASKS} referenceTaskIds")
    return tuple(dict.fromkeys(_required_id(item, "message.referenceTaskIds[]") for item in value))


def _push_config_urls(params: Mapping[str, Any]) -> tuple[str, ...]:
    """Webhook URLs of a Create/Set push config in any dialect.

    v1.0: ``{url}``; v0.3 JSON-RPC: ``{pushNotificationConfig: {url}}``;
    v0.3 REST: ``{config: {pushNotificationConfig: {url}}}``.
    """
    names = ("pushNotificationConfig", "push_notification_config")
    urls = _push_urls_of_config(params, "push notification config")
    urls += _push_urls_of_config(_field(params, names, "config"), "push notification config")
    inner = _object(params.get("config"), "config")
    if inner is not None:
        urls += _push_urls_of_config(_field(inner, names, "config"), "push notification config")
    return tuple(urls)


def _jsonrpc_fields(wire_method: str, name: str, params: Mapping[str, Any]) -> _Fields:
    if name in _MESSAGE_METHODS:
        return _message_fields(params)
    skill = _skill(params.get("metadata"))
    keys = _TASK_ID_PARAM.get(wire_method)
    if keys is None:
        return _Fields(skill=skill)
    task_id = _checked_id(_field(params, keys, "task id"), "task id")
    if task_id is None:
        raise InvalidRequest(f"{wire_method} without a task id")
    urls = _push_config_urls(params) if name == "CreateTaskPushNotificationConfig" else ()
    return _Fields(task_id=task_id, push_urls=urls, skill=skill)


def _rest_create_push_fields(task_id: str, body: Mapping[str, Any]) -> _Fields:
    """REST push-config create: the task is the path's; a body naming another is refused."""
    named = _field(body, _TASK_ID, "taskId")
    parent = body.get("parent")
    if (named is not None and named != task_id) or (
        parent is not None and parent != f"tasks/{task_id}"
    ):
        raise InvalidRequest("body names a different task than the path")
    return _Fields(task_id=task_id, push_urls=_push_config_urls(body))


# --------------------------------------------------------------------------- parsing
def _load(data: bytes, max_depth: int) -> Any:
    try:
        return loads(data, max_bytes=len(data), max_depth=max_depth)
    except KeysError as exc:
        raise from_keys_error(exc) from None


def _load_body_object(body: bytes, max_depth: int) -> dict[str, Any]:
    if not body.strip():
        raise InvalidRequest("request body required")
    value = _load(body, max_depth)
    if not isinstance(value, dict):
        raise InvalidRequest("request body must be a JSON object")
    return value


def _looks_like_json(body: bytes, content_type: str) -> bool:
    """Whether the upstream could read ``body`` as JSON (it ignores the content type).

    Python's ``json.loads`` also detects UTF-16/32 by NUL bytes, and a
    byte-order mark announces JSON too; such bodies go to the strict parser,
    which refuses them.
    """
    start = body.lstrip(b" \t\r\n")[:1]
    return (
        "json" in content_type.lower()
        or start in (b"{", b"[")
        or b"\x00" in body[:4]
        or body.startswith(b"\xef\xbb\xbf")
    )


def _build_call(
    name: str,
    fields: _Fields,
    *,
    version: str,
    binding: str,
    rpc_id: RpcId = None,
    is_notification: bool = False,
) -> Call:
    return Call(
        name,
        rpc_id,
        is_jsonrpc=binding == JSONRPC,
        is_notification=is_notification,
        protocol="a2a",
        version=version,
        binding=binding,
        target_kind=None if fields.skill is None else "skill",
        target=fields.skill,
        context_id=fields.context_id,
        task_id=fields.task_id,
        reference_task_ids=fields.reference_task_ids,
        streaming=name in STREAMING_METHODS,
        push_urls=fields.push_urls,
    )


def _rest_call(route: _RouteMatch, body: bytes, version: str, max_depth: int) -> Call:
    """An HTTP+JSON call (§11.3): the task id is the path's, the body a bare request."""
    task_id = _checked_id(route.task_id, "task id in path")
    if route.name in _MESSAGE_METHODS:
        fields = _message_fields(_load_body_object(body, max_depth))
    elif route.name == "CreateTaskPushNotificationConfig":
        task = _required_id(task_id, "task id in path")
        fields = _rest_create_push_fields(task, _load_body_object(body, max_depth))
    else:
        fields = _Fields(task_id=task_id)
    return _build_call(route.name, fields, version=version, binding=HTTP_JSON)


def _rpc_id(request: Mapping[str, Any]) -> RpcId:
    rpc_id = request.get("id")
    if rpc_id is None or (isinstance(rpc_id, int) and not isinstance(rpc_id, bool)):
        return rpc_id
    if isinstance(rpc_id, str) and len(rpc_id) <= MAX_ID_CHARS:
        return rpc_id
    raise InvalidRequest("JSON-RPC id must be a string of up to 256 characters, an integer or null")


def _jsonrpc_call(request: dict[str, Any], version: str) -> Call:
    """A JSON-RPC call (§9): v0.3 names mapped to v1.0, unknown names kept as sent."""
    if request.get("jsonrpc") != "2.0":
        raise InvalidRequest("jsonrpc must be exactly '2.0'")
    wire_method = request.get("method")
    if not isinstance(wire_method, str) or not 0 < len(wire_method) <= _MAX_METHOD_CHARS:
        raise InvalidRequest("JSON-RPC method must be a non-empty string")
    rpc_id = _rpc_id(request)
    params = _object(request.get("params"), "params") or {}
    name = V03_TO_V1.get(wire_method, wire_method)
    return _build_call(
        name,
        _jsonrpc_fields(wire_method, name, params),
        version=version,
        binding=JSONRPC,
        rpc_id=rpc_id,
        is_notification="id" not in request,
    )


def parse_a2a(
    body: bytes, *, http_method: str, path: str, headers: Mapping[str, str], max_depth: int
) -> Call:
    """The :class:`Call` one HTTP request to an A2A agent makes.

    ``path`` is below the upstream's base, still percent-encoded, without
    query; ``headers`` keys are lower-case. A request on an HTTP+JSON route
    (§11.3, matched on the path suffix) is that operation; any other ``POST``
    whose body is a JSON object with a ``jsonrpc`` member is a JSON-RPC call
    (§9); everything else is named ``"<HTTP-METHOD> <path>"``, and
    ``GET .../.well-known/agent-card.json`` is ``GetAgentCard`` (§8.2).
    Batches are refused. Raises only :class:`~protocol.errors.BatonError`.
    """
    version = a2a_version(headers)
    route = _match_route(http_method, path)
    if route is not None:
        return _rest_call(route, body, version, max_depth)
    if http_method.upper() == "POST" and _looks_like_json(body, headers.get("content-type", "")):
        value = _load(body, max_depth)
        if isinstance(value, list):
            raise InvalidRequest("JSON-RPC batches are not accepted")
        if isinstance(value, dict) and "jsonrpc" in value:
            return _jsonrpc_call(value, version)
    return _build_call(f"{http_method} {path}", _Fields(), version=version, binding=HTTP_JSON)


# --------------------------------------------------------------------------- responses
# StreamResponse / SendMessageResponse oneof members, JSON and proto names (v0.3 proto: ``msg``).
_WRAPPERS: Final = (
    ("task", ("task",)),
    ("message", ("message", "msg")),
    ("update", ("statusUpdate", "status_update")),
    ("update", ("artifactUpdate", "artifact_update")),
)
# v0.3 JSON-RPC results and events are bare objects tagged with ``kind``.
_KINDS: Final[Mapping[str, str]] = MappingProxyType(
    {"task": "task", "message": "message", "status-update": "update", "artifact-update": "update"}
)
_TASK_RESULT_METHODS: Final = frozenset({"GetTask", "CancelTask"})


def _lenient_id(obj: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    """A valid id under exactly one of ``names``, else None (responses never raise)."""
    present = [name for name in names if name in obj]
    if len(present) != 1:
        return None
    value = obj[present[0]]
    return value if _valid_id(value) else None


def _ids_of(kind: str, obj: Any) -> tuple[str | None, str | None]:
    if not isinstance(obj, dict):
        return _NO_IDS
    task_names = ("id",) if kind == "task" else _TASK_ID
    return _lenient_id(obj, task_names), _lenient_id(obj, _CONTEXT_ID)


def _ids_of_stream_response(value: Any) -> tuple[str | None, str | None]:
    """Ids in a StreamResponse / SendMessageResponse (§3.2.3) or a v0.3 ``kind``-tagged object."""
    if not isinstance(value, dict):
        return _NO_IDS
    wrapped = [(kind, value[name]) for kind, names in _WRAPPERS for name in names if name in value]
    if len(wrapped) == 1:
        return _ids_of(*wrapped[0])
    if wrapped:
        return _NO_IDS
    kind = value.get("kind")
    return _ids_of(_KINDS[kind], value) if isinstance(kind, str) and kind in _KINDS else _NO_IDS


def _ids_of_task(value: Any) -> tuple[str | None, str | None]:
    """Ids of a bare Task (GetTask, CancelTask): ``kind`` absent (v1.0, REST) or ``task`` (v0.3)."""
    if not isinstance(value, dict) or value.get("kind", "task") != "task":
        return _NO_IDS
    return _ids_of("task", value)


def _jsonrpc_result(value: Any) -> Any:
    """The ``result`` of a JSON-RPC success response; None for errors and anything else."""
    if not isinstance(value, dict) or "error" in value:
        return None
    return value.get("result")


def _is_jsonrpc_envelope(value: Any) -> bool:
    return isinstance(value, dict) and any(key in value for key in ("jsonrpc", "result", "error"))


def task_ids_in_result(
    call: Call, response_body: bytes, *, max_depth: int
) -> tuple[str | None, str | None]:
    """(task id, context id) a non-streaming response creates or returns, for ownership binding.

    SendMessage answers ``{"task": Task}`` or ``{"message": Message}`` (v1.0,
    both bindings) or a bare ``kind``-tagged Task/Message (v0.3 JSON-RPC);
    GetTask and CancelTask answer a bare Task. A JSON-RPC error, another
    method, or any unexpected shape gives ``(None, None)``; only JSON that does
    not parse raises (:class:`~protocol.errors.MalformedInput`, ``TooDeep``).
    """
    if not response_body.strip():
        return _NO_IDS
    value = _load(response_body, max_depth)
    if call.is_jsonrpc:
        value = _jsonrpc_result(value)
    if call.method in _MESSAGE_METHODS or call.method == "SubscribeToTask":
        return _ids_of_stream_response(value)
    if call.method in _TASK_RESULT_METHODS:
        return _ids_of_task(value)
    return _NO_IDS


def task_ids_in_event(event_data: bytes, *, max_depth: int) -> tuple[str | None, str | None]:
    """(task id, context id) in one SSE event's data (the text after ``data:``, lines joined).

    JSON-RPC streams carry a whole JSON-RPC response per event whose result is
    a StreamResponse (§9.4.2; v0.3: a ``kind``-tagged Task, Message or
    update event); REST streams carry the bare StreamResponse (§11.7).
    Errors and unexpected shapes give ``(None, None)``; empty data too.
    """
    if not event_data.strip():
        return _NO_IDS
    value = _load(event_data, max_depth)
    if _is_jsonrpc_envelope(value):
        value = _jsonrpc_result(value)
    return _ids_of_stream_response(value)


# --------------------------------------------------------------------------- errors
_ERROR_INFO: Final = "type.googleapis.com/google.rpc.ErrorInfo"
_A2A_DOMAIN: Final = "a2a-protocol.org"
_BATON_DOMAIN: Final = "baton.dev"
_JSON: Final = "application/json"
#: What a2a-sdk says for its own TaskNotFoundError, word for word: a task the
#: gateway hides must look exactly like a task that does not exist (§13.1).
_TASK_NOT_FOUND_MESSAGE: Final = "Task not found"
_TASK_NOT_FOUND_CODE: Final = -32001
_VERSION_NOT_SUPPORTED_CODE: Final = -32009

#: HTTP status -> google.rpc.Code name (AIP-193 and google/rpc/code.proto mappings).
GRPC_STATUS: Final[Mapping[int, str]] = MappingProxyType(
    {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        405: "UNIMPLEMENTED",
        408: "DEADLINE_EXCEEDED",
        409: "ABORTED",
        413: "RESOURCE_EXHAUSTED",
        421: "FAILED_PRECONDITION",
        422: "INVALID_ARGUMENT",
        429: "RESOURCE_EXHAUSTED",
        431: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        501: "UNIMPLEMENTED",
        502: "UNAVAILABLE",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }
)


def _error_info(reason: str, domain: str, metadata: dict[str, str]) -> dict[str, Any]:
    return {"@type": _ERROR_INFO, "reason": reason, "domain": domain, "metadata": metadata}


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _baton_metadata(error: BatonError, trace_id: str) -> dict[str, str]:
    """ErrorInfo metadata (a map of strings): trace id, retryability, retry delay,
    and the error's ``public_data`` (non-strings as compact JSON)."""
    metadata = {"trace_id": trace_id, "retryable": "true" if error.retryable else "false"}
    if error.retry_after is not None:
        metadata["retry_after"] = _seconds(error.retry_after)
    for key, value in (error.public_data or {}).items():
        metadata.setdefault(key, value if isinstance(value, str) else _dumps(value).decode())
    return metadata


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _jsonrpc_task_not_found(rpc_id: RpcId, version: str) -> bytes:
    """a2a-sdk's own JSON-RPC TaskNotFound body, member order included.

    v1.0 (``build_error_response``): one ErrorInfo with empty metadata, the
    envelope ordered error/id/jsonrpc. v0.3 (``JSONRPC03Adapter``): ``data``
    null, ordered jsonrpc/id/error and code/data/message.
    """
    if version == "0.3":
        v03: dict[str, Any] = {
            "code": _TASK_NOT_FOUND_CODE,
            "data": None,
            "message": _TASK_NOT_FOUND_MESSAGE,
        }
        return _dumps({"jsonrpc": "2.0", "id": rpc_id, "error": v03})
    v1: dict[str, Any] = {
        "code": _TASK_NOT_FOUND_CODE,
        "message": _TASK_NOT_FOUND_MESSAGE,
        "data": [_error_info("TASK_NOT_FOUND", _A2A_DOMAIN, {})],
    }
    return _dumps({"error": v1, "id": rpc_id, "jsonrpc": "2.0"})


def _jsonrpc_error(
    error: BatonError, rpc_id: RpcId, trace_id: str, version: str
) -> tuple[int, str, bytes]:
    """JSON-RPC error object (§9.5: ``data`` is an array of ``@type`` objects).

    A2A's own errors (task not found, version not supported) are answered as
    the SDK answers them, HTTP 200 with the A2A code, so clients map them to
    the protocol's errors. Every other refusal carries its HTTP status.
    """
    status: int
    body: dict[str, Any]
    if isinstance(error, TaskNotFound):
        return 200, _JSON, _jsonrpc_task_not_found(rpc_id, version)
    if isinstance(error, UnsupportedVersion):
        info = _error_info("VERSION_NOT_SUPPORTED", _A2A_DOMAIN, _baton_metadata(error, trace_id))
        status = 200
        body = {
            "code": _VERSION_NOT_SUPPORTED_CODE,
            "message": error.public_message,
            "data": [info],
        }
    else:
        code = PARSE_ERROR if error.code == "malformed_input" else RPC_CODES.get(error.http_status)
        info = _error_info(error.code.upper(), _BATON_DOMAIN, _baton_metadata(error, trace_id))
        status = error.http_status
        body = {
            "code": -32603 if code is None else code,
            "message": error.public_message,
            "data": [info],
        }
    return status, _JSON, _dumps({"jsonrpc": "2.0", "id": rpc_id, "error": body})


def _rest_error(error: BatonError, trace_id: str) -> tuple[int, str, bytes]:
    """``google.rpc.Status`` JSON with an ErrorInfo detail (§11.6), as a2a-sdk renders it."""
    if isinstance(error, TaskNotFound):
        status, message = 404, _TASK_NOT_FOUND_MESSAGE
        info = _error_info("TASK_NOT_FOUND", _A2A_DOMAIN, {})
        grpc_status = "NOT_FOUND"
    elif isinstance(error, UnsupportedVersion):
        status, message = 400, error.public_message
        info = _error_info("VERSION_NOT_SUPPORTED", _A2A_DOMAIN, _baton_metadata(error, trace_id))
        grpc_status = "FAILED_PRECONDITION"
    else:
        status, message = error.http_status, error.public_message
        info = _error_info(error.code.upper(), _BATON_DOMAIN, _baton_metadata(error, trace_id))
        grpc_status = GRPC_STATUS.get(status, "UNKNOWN")
    payload = {"code": status, "status": grpc_status, "message": message, "details": [info]}
    return status, _JSON, _dumps({"error": payload})


def render_a2a_error(
    error: BatonError, *, rpc_id: RpcId, trace_id: str, binding: str, version: str = "1.0"
) -> tuple[int, str, bytes]:
    """(HTTP status, content type, body) for ``error`` in A2A's own shape.

    ``binding`` ``"HTTP+JSON"`` gives a ``google.rpc.Status`` body (§11.6);
    anything else a JSON-RPC error response (§9.5). ``version`` (``"0.3"`` or
    ``"1.0"``, from the :class:`Call`) only changes the JSON-RPC task-not-found
    body, which is the SDK's byte for byte (for ASCII ids) so that a task the
    gateway hides cannot be told from one that does not exist (§13.1). Only the
    public message and stable code reach the caller, never ``error.detail``.
    """
    if binding == HTTP_JSON:
        return _rest_error(error, trace_id)
    return _jsonrpc_error(error, rpc_id, trace_id, version)


#: Members that hold the caller's Message: a ``url`` inside them is a file part, not a webhook.
_MESSAGE_HOLDERS: Final = frozenset({"message", "request"})


def replace_push_urls(body: bytes, replacements: Mapping[str, str], *, max_depth: int) -> bytes:
    """``body`` with each push-notification ``url`` in ``replacements`` swapped.

    The gateway delivers push notifications itself (A2A s4.3, s13.2): it hands
    the upstream a relay URL of its own instead of the caller's webhook. Only
    ``{"url": ...}`` members outside the Message are replaced (a file part's
    ``url`` is content), and only URLs :func:`parse_a2a` reported in
    ``Call.push_urls``; everything else is kept. The result is compact JSON.
    """
    if not replacements:
        return body
    value = _load(body, max_depth)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, item in node.items():
                if key == "url" and isinstance(item, str) and item in replacements:
                    out[key] = replacements[item]
                elif key in _MESSAGE_HOLDERS:
                    out[key] = item
                else:
                    out[key] = walk(item)
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return json.dumps(walk(value), separators=(",", ":"), ensure_ascii=False).encode()
