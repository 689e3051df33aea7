"""``baton inbox``: an operator's client of the operator API, decrypting locally.

The gateway hands out ciphertext only (``gateway/operator_api.py``). This
client signs one :class:`~protocol.operator.OperatorCommand` per HTTP request
with the operator's own key, sends it over TLS 1.3 (the gateway's certificate,
checked against the deployment's CA), and opens what comes back with the
operator's private encryption key, on the operator's machine: end to end, the
gateway never sees plaintext.

Invariants:

* every command carries a fresh nonce, this gateway's identity as ``aud`` and a
  short lifetime; one command per request (the gateway claims each nonce once);
* nothing is shown, exported or decided unless the bundle decrypted with the
  operator's key, the gateway's signature and the bundle's integrity verified
  (:func:`protocol.bundle.open_bundle`), and its id, queue, conversation,
  origin, version and digest equal the gateway's clear-text summary; the
  lifecycle events verify as one gateway-signed chain of this bundle;
* a decision binds to what the operator was shown: the opened bundle's digest
  and version, the lease's fencing token, and, for an approval, the signed
  request's ``args_digest`` (which must equal the gateway's clear copy); the
  client refuses to sign unless this operator holds the live lease, or a
  ``respond`` whose response does not fit the signed request's
  ``response_schema`` (``protocol/schema.py``, as the gateway checks it);
* a revealed PII value is printed only after it matched the signed salted
  commitment (:func:`protocol.pii.verify_reveal`);
* text that agents wrote is printed with control and bidirectional-formatting
  characters escaped, so a transcript cannot drive the operator's terminal.

Errors are :mod:`protocol.errors` classes: a refusal by the gateway is
re-raised as the class of the stable code it answered with.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from gateway.config import BatonConfig, ConfigError, split_host_port
from gateway.config import load as load_config
from gateway.devdata import DataFolder, InitError, OperatorMaterial
from gateway.verify import (
    VerificationKeys,
    build_export,
    decision_digest,
    load_verification_keys,
)
from keys import strictjson
from keys.b64 import b64url_decode
from keys.errors import KeysError
from protocol.bundle import MAX_BUNDLE_BYTES, OpenedBundle, open_bundle, open_reveals
from protocol.canonical import canonical_digest
from protocol.decision import (
    DecisionBinding,
    DecisionBody,
    HandoffDecision,
    make_decision_at,
    sign_decision,
    verify_decision_at,
)
from protocol.errors import (
    ERRORS_BY_CODE,
    BatonError,
    BindingMismatch,
    Conflict,
    InvalidRequest,
    MalformedJws,
    PolicyDenied,
    ResponseInvalid,
    StaleDecision,
    TaskNotFound,
    UnknownKeyId,
    translating,
)
from protocol.identity import gateway_id
from protocol.lifecycle import LifecycleEvent, verify_events
from protocol.operator import COMMAND_MEDIA_TYPE, CommandOp, make_command_at, sign_command
from protocol.pii import MaskedField, verify_reveal
from protocol.schema import validate

__all__ = [
    "API_PATH",
    "ClientConfig",
    "InboxClient",
    "Shown",
    "connect",
    "decision_body",
    "decision_payload",
    "export",
    "format_time",
    "load_client_config",
    "operator_url",
]

API_PATH: Final = "/inbox/api"
#: The largest answer read: a ``show`` of the largest bundle (its JWE, base64url
#: of base64url) with its history.
MAX_ANSWER_BYTES: Final = 4 * MAX_BUNDLE_BYTES
_TIMEOUT_S: Final = 30.0
_WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - mapped to loopback


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Everything a command needs, read once from a ``baton init`` folder."""

    url: str
    audience: str
    operator: OperatorMaterial
    serves: tuple[str, ...]
    keys: VerificationKeys
    tls: ssl.SSLContext
    clock: Callable[[], float] = time.time


def operator_url(config: BatonConfig) -> str:
    """``https://`` + ``gateway.operator_listen`` (a wildcard host as loopback)."""
    listen = config.gateway.operator_listen
    if not listen:
        raise ConfigError("gateway.operator_listen is empty (no operator listener): pass --url")
    host, port = split_host_port(listen)
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def _check_url(url: str) -> str:
    parsed = url.rstrip("/")
    if not parsed.startswith("https://") or "?" in parsed or "#" in parsed:
        raise InitError(f"--url {url!r}: write https://host:port")
    return parsed


def tls_context(ca_file: Path) -> ssl.SSLContext:
    """TLS 1.3, the server's certificate and host name checked against ``ca_file``."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def load_client_config(
    root: Path, operator: str, *, url: str | None = None, clock: Callable[[], float] = time.time
) -> ClientConfig:
    """Operator ``operator``'s keys, the gateway's public keys and identity,
    the queues it serves (``[[operators]]``) and the operator API's URL
    (``--url``, else ``https://`` + ``gateway.operator_listen``)."""
    folder = DataFolder(root)
    config = load_config(folder.config)
    entry = next((op for op in config.operators if op.name == operator), None)
    if entry is None:
        raise InitError(f"no operator {operator!r} in {folder.config} ([[operators]])")
    return ClientConfig(
        url=_check_url(url) if url else operator_url(config),
        audience=str(gateway_id(config.trust_domain, config.gateway.name)),
        operator=folder.load_operator(operator),
        serves=tuple(entry.queues),
        keys=load_verification_keys(root),
        tls=tls_context(folder.ca_cert),
        clock=clock,
    )


# --------------------------------------------------------------------------- what show returns


@dataclass(frozen=True, slots=True)
class Shown:
    """A bundle as the operator may act on it: opened and verified (module docstring)."""

    summary: Mapping[str, Any]
    jwe: Mapping[str, Any]
    opened: OpenedBundle
    event_tokens: tuple[str, ...]
    events: tuple[LifecycleEvent, ...]
    has_reveals: bool
    decision_token: str | None = None
    decision: HandoffDecision | None = None
    revealed: tuple[tuple[MaskedField, Any], ...] = field(default=())

    @property
    def bundle_id(self) -> str:
        return self.opened.bundle.bundle_id

    @property
    def queue(self) -> str:
        return self.opened.bundle.queue


def _check_matches(opened: OpenedBundle, summary: Mapping[str, Any]) -> None:
    """The opened bundle is the one the gateway's summary describes."""
    bundle = opened.bundle
    if opened.bundle_digest != summary.get("bundle_digest"):
        raise BindingMismatch("the decrypted bundle's digest is not the one the gateway lists")
    pairs = {
        "bundle_id": bundle.bundle_id,
        "queue": bundle.queue,
        "conversation": bundle.conversation,
        "origin": bundle.origin,
    }
    for key, value in pairs.items():
        if summary.get(key) != value:
            raise BindingMismatch(f"the decrypted bundle's {key} is not the one the gateway lists")
    version = summary.get("version")
    if not isinstance(version, int) or version < bundle.version:
        raise BindingMismatch("the gateway lists an older version than the decrypted bundle")
    action = bundle.request.requested_action
    signed_digest = None if action is None else action.args_digest
    if summary.get("args_digest") != signed_digest:
        raise BindingMismatch("the gateway's args_digest is not the signed request's")
    # The gateway checks responses against its clear copy of the schema.
    if summary.get("response_schema") != bundle.request.response_schema:
        raise BindingMismatch("the gateway's response_schema is not the signed request's")


def _verify_decision(
    token: str, opened: OpenedBundle, events: Sequence[LifecycleEvent], keys: VerificationKeys
) -> HandoffDecision:
    """The recorded decision, checked as the agent and ``baton verify`` check it:
    exactly the token the gateway-signed ``decided`` event names, signed by a
    key of the operator it names, who held the lease and serves the queue,
    bound to this bundle's digest and version and to that lease, valid when
    it was recorded, of an allowed type and, for an approval, for the
    arguments asked about."""
    decided = next((event for event in events if event.type == "decided"), None)
    if decided is None:
        raise BindingMismatch("the gateway sent a decision its lifecycle does not record")
    if decision_digest(token) != decided.decision_digest:
        raise BindingMismatch("the decision is not the one the gateway recorded")
    if keys.operators is None:
        raise UnknownKeyId("no operator public keys to check the decision with")
    bundle = opened.bundle
    decision = verify_decision_at(
        token,
        operators=keys.operators,
        binding=DecisionBinding(
            bundle.bundle_id, opened.bundle_digest, bundle.version, decided.fencing_token or 0
        ),
        request=bundle.request,
        now=decided.ts / 1000,
    )
    if decision.operator != decided.actor:
        raise BindingMismatch("decided by someone other than the lease holder")
    if decision.operator not in keys.queue_operators.get(bundle.queue, frozenset()):
        raise PolicyDenied(f"{decision.operator} does not serve queue {bundle.queue!r}")
    return decision


def decision_payload(token: str) -> HandoffDecision:
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedJws("a decision is a compact JWS")
    with translating():
        return HandoffDecision.parse(b64url_decode(parts[1]))


# --------------------------------------------------------------------------- client


def _remote_error(status: int, body: bytes, what: str) -> Exception:
    """The :mod:`protocol.errors` class of the gateway's stable code."""
    try:
        error = strictjson.loads_object(body, max_depth=8)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (KeysError, KeyError, TypeError):
        return ConnectionError(f"operator API answered HTTP {status} to {what}, not a Baton error")
    cls = ERRORS_BY_CODE.get(code)
    if cls is None:
        return BatonError(f"{code}: {message} ({what}, HTTP {status})")
    return cls(f"{message} ({what}, HTTP {status})")


class InboxClient:
    """One operator talking to one gateway's operator API over ``http``."""

    def __init__(self, config: ClientConfig, http: aiohttp.ClientSession) -> None:
        self.config = config
        self._http = http
        self._endpoint = config.url + API_PATH

    @property
    def identity(self) -> str:
        return self.config.operator.identity

    def command(
        self,
        op: CommandOp,
        *,
        queue: str,
        bundle_id: str | None = None,
        status: str | None = None,
        fencing_token: int | None = None,
        decision: str | None = None,
        reason: str | None = None,
        paths: tuple[str, ...] = (),
    ) -> str:
        """A signed command with a fresh nonce, for this gateway, issued now."""
        command = make_command_at(
            op,
            operator=self.identity,
            audience=self.config.audience,
            queue=queue,
            now=self.config.clock(),
            bundle_id=bundle_id,
            status=status,
            fencing_token=fencing_token,
            decision=decision,
            reason=reason,
            paths=paths,
        )
        return sign_command(command, self.config.operator.signing.active)

    async def send(self, token: str, *, what: str = "command") -> dict[str, Any]:
        """POST one signed command; the JSON answer, or the gateway's refusal raised."""
        try:
            async with self._http.post(
                self._endpoint,
                data=token.encode("ascii"),
                headers={"Content-Type": COMMAND_MEDIA_TYPE},
                allow_redirects=False,
            ) as response:
                body = await _read_limited(response, MAX_ANSWER_BYTES)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ConnectionError(
                f"cannot reach the operator API at {self.config.url}: {reason}"
            ) from exc
        if status != 200:
            raise _remote_error(status, body, what)
        with translating():
            return strictjson.loads_object(body, max_bytes=MAX_ANSWER_BYTES)

    async def call(self, op: CommandOp, *, queue: str, **fields: Any) -> dict[str, Any]:
        bundle = fields.get("bundle_id")
        what = f"{op} {bundle}" if bundle else f"{op} on queue {queue}"
        return await self.send(self.command(op, queue=queue, **fields), what=what)

    # ------------------------------------------------------------ operations
    async def list(
        self, queue: str | None = None, *, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Summaries in ``queue``, or in every queue this operator serves."""
        found: list[dict[str, Any]] = []
        for name in (queue,) if queue else self.config.serves:
            answer = await self.call("list", queue=name, status=status)
            found.extend(_summaries(answer.get("bundles")))
        return found

    async def locate(self, bundle_id: str, queue: str | None) -> str:
        """The queue holding ``bundle_id`` (``queue`` if given)."""
        if queue:
            return queue
        for summary in await self.list():
            if summary.get("bundle_id") == bundle_id:
                return str(summary["queue"])
        raise TaskNotFound(f"no handoff {bundle_id} in the queues {self.identity} serves")

    async def show(self, bundle_id: str, queue: str) -> Shown:
        """Fetch, decrypt and verify one bundle with its lifecycle and decision."""
        answer = await self.call("show", queue=queue, bundle_id=bundle_id)
        summary, jwe = answer.get("bundle"), answer.get("jwe")
        tokens, decision = answer.get("events"), answer.get("decision")
        if not isinstance(summary, dict) or not isinstance(jwe, dict):
            raise InvalidRequest("the gateway's show answer has no bundle")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise InvalidRequest("the gateway's show answer has no lifecycle")
        if decision is not None and not isinstance(decision, str):
            raise InvalidRequest("the gateway's show answer has a malformed decision")
        if summary.get("bundle_id") != bundle_id:
            raise BindingMismatch("the gateway answered with another bundle")
        keys = self.config.keys
        opened = open_bundle(jwe, self.config.operator.encryption, keys.gateway)
        _check_matches(opened, summary)
        events, _head = verify_events(tokens, keys.gateway, bundle_id=bundle_id)
        shown = Shown(
            summary=summary,
            jwe=jwe,
            opened=opened,
            event_tokens=tuple(tokens),
            events=tuple(events),
            has_reveals=bool(answer.get("has_reveals")),
        )
        if decision is None:
            if any(event.type == "decided" for event in events):
                raise BindingMismatch("the lifecycle records a decision the gateway did not send")
            return shown
        verified = _verify_decision(decision, opened, events, keys)
        return dataclasses.replace(shown, decision_token=decision, decision=verified)

    async def claim(self, bundle_id: str, queue: str) -> dict[str, Any]:
        """Take (or renew) the lease; on refusal, say who holds it."""
        try:
            answer = await self.call("claim", queue=queue, bundle_id=bundle_id)
        except Conflict as exc:
            held = await self._holder(bundle_id, queue)
            if held:
                raise type(exc)(f"{exc.detail}; {held}") from None
            raise
        return _summary_of(answer)

    async def _holder(self, bundle_id: str, queue: str) -> str | None:
        for summary in await self.list(queue):
            if summary.get("bundle_id") == bundle_id:
                lease = summary.get("lease")
                if isinstance(lease, dict):
                    return f"held by {lease.get('owner')} until {format_time(lease.get('until'))}"
                return f"it is {summary.get('status')}"
        return None

    async def release(self, bundle_id: str, queue: str) -> dict[str, Any]:
        """Give the lease back (the fencing token is read from the current summary)."""
        summary = await self._summary(bundle_id, queue)
        lease = summary.get("lease")
        if not isinstance(lease, dict) or lease.get("owner") != self.identity:
            raise Conflict(f"{self.identity} holds no lease on {bundle_id}")
        token = lease.get("fencing_token")
        if not isinstance(token, int):
            raise InvalidRequest("the gateway's summary has no fencing token")
        answer = await self.call("release", queue=queue, bundle_id=bundle_id, fencing_token=token)
        return _summary_of(answer)

    async def _summary(self, bundle_id: str, queue: str) -> dict[str, Any]:
        for summary in await self.list(queue):
            if summary.get("bundle_id") == bundle_id:
                return summary
        raise TaskNotFound(f"no handoff {bundle_id} in queue {queue}")

    async def decide(
        self, bundle_id: str, queue: str, build: Callable[[Shown], DecisionBody]
    ) -> tuple[Shown, dict[str, Any], str]:
        """Open and verify the bundle, check this operator's lease, then sign
        ``build(shown)`` bound to what was opened and send it."""
        shown = await self.show(bundle_id, queue)
        lease = _own_lease(shown, self.identity, self.config.clock())
        body = build(shown)
        binding = DecisionBinding(
            bundle_id=shown.bundle_id,
            bundle_digest=shown.opened.bundle_digest,
            bundle_version=shown.opened.bundle.version,
            fencing_token=lease,
        )
        decision = make_decision_at(binding, body, operator=self.identity, now=self.config.clock())
        token = sign_decision(decision, self.config.operator.signing.active)
        answer = await self.call("decide", queue=queue, bundle_id=bundle_id, decision=token)
        return shown, _summary_of(answer), token

    async def reveal(self, shown: Shown, pointers: Sequence[str], reason: str) -> Shown:
        """The originals behind the masked fields ``pointers`` select, each
        checked against the signed commitment; the gateway audits ``reason``."""
        if not reason.strip():
            raise InvalidRequest("a reveal needs a reason: --reason TEXT")
        masked = shown.opened.bundle.masked
        if not masked or not shown.has_reveals:
            raise InvalidRequest(f"{shown.bundle_id} has no masked fields")
        chosen = [item for item in masked if any(_selects(p, item.path) for p in pointers)]
        for pointer in pointers:
            if not any(_selects(pointer, item.path) for item in masked):
                listed = ", ".join(item.path for item in masked)
                raise InvalidRequest(f"{pointer} selects no masked field (masked: {listed})")
        answer = await self.call(
            "reveal", queue=shown.queue, bundle_id=shown.bundle_id, reason=reason,
            paths=tuple(pointers),
        )  # fmt: skip
        jwe = answer.get("reveals")
        if not isinstance(jwe, dict):
            raise InvalidRequest(f"the gateway holds no originals for {shown.bundle_id}")
        reveals = open_reveals(jwe, self.config.operator.encryption, shown.bundle_id)
        by_path = {item.path: item for item in reveals.items}
        revealed = []
        for item in chosen:
            original = by_path.get(item.path)
            if original is None:
                raise BindingMismatch(f"the reveal set has no original for {item.path}")
            revealed.append((item, verify_reveal(item, original)))
        return dataclasses.replace(shown, revealed=tuple(revealed))


@asynccontextmanager
async def connect(config: ClientConfig) -> AsyncIterator[InboxClient]:
    """An :class:`InboxClient` on its own HTTP session (closed on exit)."""
    connector = aiohttp.TCPConnector(ssl=config.tls, limit=4)
    timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        yield InboxClient(config, http)


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if (response.content_length or 0) > limit:
        raise InvalidRequest(f"operator API answer over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise InvalidRequest(f"operator API answer over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _summaries(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InvalidRequest("the gateway's list answer has no bundles")
    return value


def _summary_of(answer: Mapping[str, Any]) -> dict[str, Any]:
    summary = answer.get("bundle")
    if not isinstance(summary, dict):
        raise InvalidRequest("the gateway's answer has no bundle summary")
    return summary


def _own_lease(shown: Shown, identity: str, now: float) -> int:
    """The fencing token of ``identity``'s live lease, as the gateway lists it
    and its signed lifecycle records it; otherwise tell the operator to claim."""
    summary = shown.summary
    lease = summary.get("lease")
    if summary.get("version") != shown.opened.bundle.version:
        raise StaleDecision(f"{shown.bundle_id} already has an outcome ({summary.get('status')})")
    if summary.get("status") != "claimed" or not isinstance(lease, dict):
        raise StaleDecision(
            f"{shown.bundle_id} is {summary.get('status')}: claim it first "
            f"(baton inbox claim {shown.bundle_id})"
        )
    if lease.get("owner") != identity:
        raise StaleDecision(f"{shown.bundle_id} is claimed by {lease.get('owner')}, not you")
    token, until = lease.get("fencing_token"), lease.get("until")
    if not isinstance(token, int) or not isinstance(until, int | float) or until <= now:
        raise StaleDecision(f"your lease on {shown.bundle_id} has lapsed: claim it again")
    last_claim = next((e for e in reversed(shown.events) if e.type == "claimed"), None)
    if last_claim is None or (last_claim.actor, last_claim.fencing_token) != (identity, token):
        raise StaleDecision("the signed lifecycle does not record your lease: claim it again")
    return token


def _selects(pointer: str, path: str) -> bool:
    """Whether ``pointer`` (``*`` segments allowed) names ``path`` or an ancestor of it."""
    want = pointer.split("/")
    have = path.split("/")
    if len(want) > len(have):
        return False
    return all(w in ("*", h) for w, h in zip(want, have, strict=False))


# --------------------------------------------------------------------------- decisions


def decision_body(
    kind: str,
    shown: Shown,
    *,
    arguments: str | None = None,
    response: str | None = None,
    to_queue: str | None = None,
    message: str | None = None,
) -> DecisionBody:
    """The decision body for ``kind`` on the opened bundle's signed request.
    ``arguments`` and ``response`` are JSON text (parsed strictly)."""
    request = shown.opened.bundle.request
    if kind not in request.allowed_decisions:
        allowed = ", ".join(request.allowed_decisions)
        raise PolicyDenied(f"{kind} is not allowed for {shown.bundle_id} (allowed: {allowed})")
    if arguments is not None and kind != "edit":
        raise InvalidRequest("--arguments goes with edit only")
    if response is not None and kind != "respond":
        raise InvalidRequest("--response goes with respond only")
    if to_queue is not None and kind != "reroute":
        raise InvalidRequest("--to-queue goes with reroute only")
    fields: dict[str, Any] = {
        "type": kind,
        "commitment": "refused" if kind == "reject" else "agreed",
        "message": message,
    }
    action = request.requested_action
    if kind == "approve":
        fields["args_digest"] = None if action is None else action.args_digest
    elif kind == "edit":
        if arguments is None:
            raise InvalidRequest("edit needs the new arguments: --arguments JSON")
        parsed = _json_option(arguments, "--arguments")
        fields["arguments"] = parsed
        fields["args_digest"] = canonical_digest(parsed)
    elif kind == "respond":
        if response is None:
            raise InvalidRequest("respond needs the answer: --response JSON")
        answer = _json_option(response, "--response")
        if request.response_schema is not None:
            _check_response(answer, request.response_schema)
        fields["response"] = answer
    elif kind == "reroute":
        if not to_queue:
            raise InvalidRequest("reroute needs the queue: --to-queue QUEUE")
        fields["reroute_queue"] = to_queue
    return DecisionBody.build(**fields)


def _check_response(answer: Any, schema: Mapping[str, Any]) -> None:
    """Refuse to sign a response the gateway and the agent would refuse: it
    must fit the signed request's ``response_schema`` (``protocol/schema.py``)."""
    try:
        validate(answer, schema)
    except ResponseInvalid as exc:  # the detail names the JSON Pointer and the keyword
        raise ResponseInvalid(
            f"--response does not fit the response schema: {exc.detail}",
            pointer=exc.pointer,
            keyword=exc.keyword,
        ) from None


def _json_option(text: str, option: str) -> Any:
    try:
        return strictjson.loads(text)
    except KeysError as exc:
        raise InvalidRequest(f"{option} is not JSON: {exc.detail}") from exc


# --------------------------------------------------------------------------- export


def export(shown: Shown, *, decision: str | None = None) -> bytes:
    """The ``baton verify`` export of a shown bundle: its JWE, lifecycle and
    decision, with the signed queue and conversation."""
    return build_export(
        bundle=shown.jwe,
        events=shown.event_tokens,
        decision=decision if decision is not None else shown.decision_token,
        queue=shown.opened.bundle.queue,
        conversation=shown.opened.bundle.conversation,
    )


def format_time(ts: object) -> str:
    """A Unix time as UTC ``YYYY-MM-DD HH:MM:SSZ`` (``-`` for anything else)."""
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
