"""Fuzz entry points shared by the Hypothesis properties (``tests/fuzz``) and
the atheris harnesses (``fuzz/``).

Every entry point takes attacker bytes and feeds them to one parser family the
way the gateway (or ``baton verify``, or ``baton check-config``) does. The
property is the same everywhere: the parser either accepts, or raises the
error type its package documents -- :class:`protocol.errors.BatonError` above
``keys/``, :class:`keys.errors.KeysError` inside ``keys/``,
:class:`gateway.config.ConfigError` for configuration. Anything else
(``TypeError``, ``KeyError``, ``RecursionError``, ``UnicodeError``...) escapes
the entry point, which Hypothesis reports as a failure and atheris as a crash.

Keys are derived from fixed seeds so that a crash input saved by atheris (a
signed object with one byte changed) reproduces on another machine. Valid
samples (:data:`SAMPLES`) are the seeds both fuzzers mutate.

Several entry points take a small "HTTP message" format so one byte string can
carry a method, a path, headers and a body::

    POST /u/payments/mcp
    mcp-protocol-version: 2025-11-25
    content-type: application/json

    {"jsonrpc":"2.0",...}
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from adapters import a2a, agent_card, jsonrpc, mcp, sse
from gateway import config as gateway_config
from gateway.verify import verify_artifact
from keys import httpsig, jose, sfv, strictjson
from keys.errors import KeysError
from keys.httpsig import HttpRequest, SignaturePolicy
from keys.keyset import KeySet, PrivateKeySet
from keys.material import ENCRYPTION_ALG, PrivateKey
from protocol import bundle
from protocol.errors import BatonError

__all__ = ["SAMPLES", "TARGETS", "Target", "split_message"]

#: Every input is cut to this size first: fuzzing must never hang on a big input.
MAX_INPUT = 1 << 16
DEPTH = 32

# --------------------------------------------------------------------------- keys

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _seed(label: str) -> bytes:
    return hashlib.sha256(b"baton-fuzz/" + label.encode()).digest()


def fixed_key(label: str, alg: str) -> PrivateKey:
    """A key derived from ``label``: the same on every machine (test use only)."""
    if alg == "Ed25519":
        return PrivateKey(ed25519.Ed25519PrivateKey.from_private_bytes(_seed(label)), alg)
    scalar = int.from_bytes(_seed(label), "big") % (_P256_ORDER - 1) + 1
    return PrivateKey(ec.derive_private_key(scalar, ec.SECP256R1()), alg)


ED = fixed_key("ed", "Ed25519")
ES = fixed_key("es", "ES256")
ENC = fixed_key("enc", ENCRYPTION_ALG)
SIG_KEYS = KeySet([ED.public, ES.public])
ENC_KEYS = PrivateKeySet([ENC])
TYP = "fuzz+jws"
JWE_TYP = "fuzz+jwe"

# --------------------------------------------------------------------------- helpers


def _cut(data: bytes) -> bytes:
    return data[:MAX_INPUT]


def _text(data: bytes) -> str:
    """Header-ish text: bytes as aiohttp hands them over (latin-1, never fails)."""
    return data.decode("latin-1")


@dataclass(frozen=True, slots=True)
class Message:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def header_map(self) -> dict[str, str]:
        """Lower-case names, last value wins (the gateway joins repeats; either is fine here)."""
        return {name.lower(): value for name, value in self.headers}


def split_message(data: bytes) -> Message:
    """Parse the small message format of the module docstring; never fails."""
    head, _, body = data.partition(b"\n\n")
    lines = _text(head).split("\n")
    method, _, path = lines[0].partition(" ")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip(" \t")))
    return Message(method, path, tuple(headers), body)


def join_message(method: str, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path}", *(f"{name}: {value}" for name, value in headers.items())]
    return "\n".join(lines).encode("latin-1") + b"\n\n" + body


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True, slots=True)
class Target:
    """One parser family: ``run(data)`` raises only ``allowed`` (or nothing)."""

    name: str
    run: Callable[[bytes], None]
    allowed: tuple[type[BaseException], ...]
    samples: Callable[[], list[bytes]]

    def __call__(self, data: bytes) -> None:
        with contextlib.suppress(self.allowed):
            self.run(_cut(data))


# strictjson ---------------------------------------------------------------


def run_strictjson(data: bytes) -> None:
    try:
        value = strictjson.loads(data, max_bytes=MAX_INPUT, max_depth=DEPTH)
    except KeysError:
        return
    # What the strict parser accepts, the standard one reads the same way.
    assert json.loads(data) == value or value != value  # noqa: PLR0124 - NaN never accepted
    assert strictjson.loads(_dumps(value), max_depth=DEPTH + 1) == value


def strictjson_samples() -> list[bytes]:
    return [
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}',
        b'[1, -2.5e10, "\\u00e9\\ud83d\\ude00", true, false, null, {"a": [[], {}]}]',
        b'"caf\xc3\xa9"',
        b"  123456789012345678901234567890  ",
    ]


# adapters -----------------------------------------------------------------


def run_jsonrpc(data: bytes) -> None:
    msg = split_message(data)
    jsonrpc.parse_call(
        msg.body,
        http_method=msg.method,
        path=msg.path,
        content_type=msg.header_map.get("content-type", ""),
        max_depth=DEPTH,
    )


def _mcp_call(rpc_id: int, method: str, params: Mapping[str, Any]) -> bytes:
    return _dumps({"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params})


def jsonrpc_samples() -> list[bytes]:
    json_headers = {"content-type": "application/json"}
    return [
        join_message("POST", "/rpc", json_headers, _mcp_call(1, "tools/call", {"name": "x"})),
        join_message("POST", "/rpc", json_headers, b'{"jsonrpc":"2.0","id":"a","result":{}}'),
        join_message("POST", "/rpc", json_headers, b'{"jsonrpc":"2.0","method":"notify"}'),
        join_message("GET", "/status", {}, b""),
    ]


def run_mcp(data: bytes) -> None:
    msg = split_message(data)
    headers = msg.header_map
    for value in headers.values():
        with contextlib.suppress(BatonError):
            mcp.decode_header_value(value)
    with contextlib.suppress(BatonError):
        mcp.mcp_session_id(headers)
    for method in mcp.LIST_TARGETS:
        mcp.filter_listing(method, msg.body, lambda kind, name: name != "secret", max_depth=DEPTH)
    with contextlib.suppress(BatonError):
        mcp.mrtr_result_state(msg.body, max_depth=DEPTH)
    with contextlib.suppress(BatonError):
        mcp.mrtr_request_state(msg.body, max_depth=DEPTH)
    mcp.parse_mcp(msg.body, http_method=msg.method, headers=headers, max_depth=DEPTH)


def mcp_samples() -> list[bytes]:
    legacy = {
        "content-type": "application/json",
        "mcp-protocol-version": "2025-11-25",
        "mcp-session-id": "session-0123456789",
    }
    modern = {
        "content-type": "application/json",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": "=?base64?cmVmdW5kIMOp?=",
    }
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
    listing = {
        "jsonrpc": "2.0",
        "id": 3,
        "result": {"tools": [{"name": "lookup"}, {"name": "secret"}], "nextCursor": "c"},
    }
    state = {"jsonrpc": "2.0", "id": 4, "result": {"resultType": "input_required",
                                                   "requestState": "st-1"}}  # fmt: skip
    return [
        join_message("POST", "/mcp", legacy, _mcp_call(1, "tools/call", {"name": "lookup"})),
        join_message(
            "POST",
            "/mcp",
            modern,
            _mcp_call(2, "tools/call", {"name": "refund é", "_meta": meta, "requestState": "s"}),
        ),
        join_message("POST", "/mcp", legacy, _dumps(listing)),
        join_message("POST", "/mcp", legacy, _dumps(state)),
        join_message("GET", "/mcp", legacy, b""),
        join_message("DELETE", "/mcp", {"mcp-session-id": "abc"}, b""),
    ]


_A2A_SEND = a2a.parse_a2a(
    b'{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{}}',
    http_method="POST",
    path="/a2a",
    headers={"a2a-version": "1.0"},
    max_depth=DEPTH,
)
_A2A_GET = a2a.parse_a2a(
    b"", http_method="GET", path="/tasks/t-1", headers={"a2a-version": "1.0"}, max_depth=DEPTH
)


def run_a2a(data: bytes) -> None:
    msg = split_message(data)
    headers = msg.header_map
    a2a.error_binding(msg.method, msg.path)
    for event in (msg.body, *msg.body.split(b"\n")):
        with contextlib.suppress(BatonError):
            a2a.task_ids_in_event(event, max_depth=DEPTH)
    call = a2a.parse_a2a(
        msg.body, http_method=msg.method, path=msg.path, headers=headers, max_depth=DEPTH
    )
    for asked in (call, _A2A_SEND, _A2A_GET):
        with contextlib.suppress(BatonError):
            a2a.task_ids_in_result(asked, msg.body, max_depth=DEPTH)
    if call.push_urls:
        replaced = a2a.replace_push_urls(
            msg.body, {url: "https://gw.example/relay/1" for url in call.push_urls}, max_depth=DEPTH
        )
        strictjson.loads(replaced, max_bytes=len(replaced) + 1, max_depth=DEPTH + 1)


def a2a_samples() -> list[bytes]:
    v1 = {"content-type": "application/json", "a2a-version": "1.0"}
    message = {
        "role": "ROLE_USER",
        "messageId": "m-1",
        "contextId": "ctx-1",
        "parts": [{"text": "hi"}, {"url": "https://files.example/a.txt"}],
        "metadata": {"skill": "echo"},
    }
    push = {"url": "https://hooks.example/cb", "token": "t"}
    send = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "SendMessage",
        "params": {"message": message, "configuration": {"pushNotificationConfig": push}},
    }
    task = {"task": {"id": "task-1", "contextId": "ctx-1", "status": {"state": "working"}}}
    return [
        join_message("POST", "/a2a", v1, _dumps(send)),
        join_message("POST", "/message:send", v1, _dumps({"message": message})),
        join_message("POST", "/tasks/task-1/pushNotificationConfigs", v1, _dumps(push)),
        join_message("GET", "/v1/tasks/task-1", {"a2a-version": "0.3"}, b""),
        join_message("GET", "/.well-known/agent-card.json", {}, b""),
        join_message("POST", "/a2a", v1, _dumps({"jsonrpc": "2.0", "id": 7, "result": task})),
        join_message(
            "POST",
            "/a2a",
            {},
            b'{"jsonrpc":"2.0","id":1,"result":{"kind":"task","id":"t","contextId":"c"}}',
        ),
    ]


def run_sse(data: bytes) -> None:
    splitter = sse.EventSplitter(max_event_bytes=4096)
    events: list[bytes] = []
    step = 1 + (data[0] % 97 if data else 0)
    for start in range(0, len(data), step):
        events.extend(splitter.feed(data[start : start + step]))
    rest = splitter.flush()
    assert b"".join(events) + rest == data
    for event in events:
        payload = sse.event_data(event)
        assert (
            b"\n"
            not in sse.with_data(event, payload.replace(b"\n", b" "))[:-2].split(b"data: ")[-1]
        )


def sse_samples() -> list[bytes]:
    return [
        b'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n',
        b"id: 1\r\ndata: a\r\ndata: b\r\n\r\n: comment\r\rdata:x\n\n",
    ]


def run_agent_card(data: bytes) -> None:
    card = agent_card.parse_card(data)
    agent_card.verify_card(card, SIG_KEYS)


def agent_card_samples() -> list[bytes]:
    card = {
        "name": "Echo",
        "description": "Echoes what it is told",
        "version": "1.2.0",
        "supportedInterfaces": [
            {
                "url": "https://echo.internal:9000/a2a",
                "protocolBinding": "JSONRPC",
                "protocolVersion": "1.0",
            },
        ],
        "capabilities": {"streaming": True},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [{"id": "echo", "name": "echo", "description": "echo", "tags": ["x"]}],
    }
    signed = agent_card.sign_card(card, ES)
    return [_dumps(card), _dumps(signed)]


# RFC 9421 / RFC 8941 --------------------------------------------------------


def run_sfv(data: bytes) -> None:
    text = _text(data)
    try:
        parsed = sfv.parse_dictionary(text, max_members=64, max_inner_items=64)
    except KeysError:
        pass
    else:
        again = sfv.parse_dictionary(sfv.serialize_dictionary(parsed))
        assert again == parsed, (parsed, again)
    try:
        inner = sfv.parse_inner_list(text, max_items=64)
    except KeysError:
        pass
    else:
        assert sfv.parse_inner_list(sfv.serialize_inner_list(inner)) == inner


def sfv_samples() -> list[bytes]:
    return [
        b'baton=("@method" "@target-uri" "content-digest");created=1700000000;keyid="k1";'
        b'nonce="n-1";alg="ed25519", other=?0;a=1.5',
        b"sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:, sha-512=:AAAA:",
        b'a=(1 2.25 "x" tok :YQ==: ?1);p=%"\\u00e9"',
        b'("@method" "@path");created=1;keyid="x"',
    ]


_URI = "https://gw.example:8443/u/payments/mcp?x=1"
_BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}'
_COMPONENTS = ("@method", "@target-uri", "@authority", "content-digest", "mcp-method")
_POLICY = SignaturePolicy(required_components=frozenset(_COMPONENTS))


def run_httpsig(data: bytes) -> None:
    msg = split_message(data)
    request = HttpRequest(msg.method, _URI if not msg.path else msg.path, list(msg.headers))
    digest = msg.header_map.get("content-digest")
    if digest is not None:
        with contextlib.suppress(KeysError):
            httpsig.check_content_digest(digest, msg.body)
    httpsig.verify(request, SIG_KEYS, _POLICY, body=msg.body)


def httpsig_samples() -> list[bytes]:
    out = []
    for key in (ED, ES):
        headers = [
            ("Host", "gw.example:8443"),
            ("Content-Type", "application/json"),
            ("Content-Digest", httpsig.content_digest(_BODY)),
            ("Mcp-Method", "tools/call"),
        ]
        request = HttpRequest("POST", _URI, headers)
        sig_input, signature = httpsig.sign(
            request, key, components=_COMPONENTS, created=1_700_000_000, nonce="n-1"
        )
        full = {**dict(headers), "Signature-Input": sig_input, "Signature": signature}
        out.append(join_message("POST", _URI, full, _BODY))
    return out


# JOSE ---------------------------------------------------------------------


_JWS_PAYLOAD = b'{"sub":"spiffe://baton.local/agent/support","n":1}'


def run_jws(data: bytes) -> None:
    # Only the samples were ever signed with these keys: whatever verifies
    # must carry their payload (a mutation that verifies is a forgery).
    try:
        verified = jose.verify_compact(data, SIG_KEYS, typ=TYP, max_bytes=MAX_INPUT)
    except KeysError:
        pass
    else:
        assert verified.payload == _JWS_PAYLOAD
    for each in jose.verify_general(data, SIG_KEYS, typ=TYP, max_bytes=MAX_INPUT):
        assert each.payload == _JWS_PAYLOAD


def jws_samples() -> list[bytes]:
    payload = _JWS_PAYLOAD
    return [
        jose.sign_compact(payload, ED, typ=TYP).encode(),
        jose.sign_compact(payload, ES, typ=TYP, cty="json").encode(),
        _dumps(jose.sign_general(payload, [ED, ES], typ=TYP)),
    ]


def run_jwe(data: bytes) -> None:
    try:
        obj = strictjson.loads_object(data, max_bytes=MAX_INPUT)
    except KeysError:
        obj = None
    if obj is not None:
        with contextlib.suppress(KeysError):
            jose.recipient_key(obj, ENC_KEYS)
    # AEAD: whatever decrypts is what was encrypted (no mutation forges a tag).
    for value in (data, data.decode("latin-1")):
        with contextlib.suppress(KeysError):
            assert jose.decrypt(value, ENC, typ=JWE_TYP, max_bytes=MAX_INPUT).plaintext == _SECRET
    if obj is not None:
        assert jose.decrypt(obj, ENC, typ=JWE_TYP, max_bytes=MAX_INPUT).plaintext == _SECRET


_SECRET = b"secret"


def jwe_samples() -> list[bytes]:
    other = fixed_key("enc-2", ENCRYPTION_ALG)
    general = jose.encrypt_general(_SECRET, [ENC.public, other.public], typ=JWE_TYP)
    return [_dumps(general), _compact_jwe(_SECRET)]


def _compact_jwe(plaintext: bytes) -> bytes:
    from joserfc import jwe as rfc_jwe

    header = {"alg": ENCRYPTION_ALG, "enc": "A256GCM", "kid": ENC.kid, "typ": JWE_TYP}
    registry = rfc_jwe.JWERegistry(algorithms=[ENCRYPTION_ALG, "A256GCM"])
    token = rfc_jwe.encrypt_compact(header, plaintext, ENC.public.jose_key, registry=registry)
    return token.encode("ascii")


_CAPSULE_SENDER = "spiffe://baton.local/agent/support"
_CAPSULE_ME = "spiffe://baton.local/agent/billing"
_CAPSULE_NOW = 1_700_000_000.0


def run_capsule(data: bytes) -> None:
    from protocol.capsule import open_capsule_at
    from protocol.directory import KeyDirectory

    opened = open_capsule_at(
        data,
        me=_CAPSULE_ME,
        my_keys=ENC_KEYS,
        senders=KeyDirectory({_CAPSULE_SENDER: KeySet([ED.public])}),
        now=_CAPSULE_NOW,
    )
    assert opened.claims.iss == _CAPSULE_SENDER


def capsule_samples() -> list[bytes]:
    from protocol.capsule import seal_capsule_at

    sealed = seal_capsule_at(
        {"amount": 40, "order": "A-1"},
        sender=_CAPSULE_SENDER,
        signing_key=ED,
        recipients={_CAPSULE_ME: KeySet([ENC.public])},
        conversation="a2a:ctx-1",
        now=_CAPSULE_NOW,
    )
    return [_dumps(sealed)]


# bundles and exports --------------------------------------------------------


@functools.cache
def _handoff() -> Any:
    """One real handoff (tests/gateway/test_verify.py builds it), with fixed keys."""
    from tests.gateway.test_verify import Keys, _handoff

    keys = Keys(
        gateway=fixed_key("gateway", "Ed25519"),
        alice_sig=fixed_key("alice-sig", "ES256"),
        bob_sig=fixed_key("bob-sig", "ES256"),
        carol_sig=fixed_key("carol-sig", "ES256"),
        alice_enc=PrivateKeySet([fixed_key("alice-enc", ENCRYPTION_ALG)]),
        bob_enc=PrivateKeySet([fixed_key("bob-enc", ENCRYPTION_ALG)]),
        carol_enc=PrivateKeySet([fixed_key("carol-enc", ENCRYPTION_ALG)]),
    )
    return _handoff(keys)


def run_bundle(data: bytes) -> None:
    handoff = _handoff()
    keys = handoff.keys
    # Only one bundle was ever signed with the gateway key: whatever opens is it.
    try:
        opened = bundle.verify_bundle_jws(data, keys.gateway_keys)
    except BatonError:
        pass
    else:
        assert opened.bundle_digest == handoff.sealed.bundle_digest
    try:
        obj = strictjson.loads_object(data, max_bytes=MAX_INPUT)
    except KeysError:
        return
    opened = bundle.open_bundle(obj, keys.alice_enc, keys.gateway_keys)
    assert opened.bundle_digest == handoff.sealed.bundle_digest


def bundle_samples() -> list[bytes]:
    handoff = _handoff()
    return [handoff.jws.encode("ascii"), _dumps(handoff.sealed.jwe)]


def run_verify(data: bytes) -> None:
    from tests.gateway.test_verify import LATER, QUEUE_OPERATORS

    keys = _handoff().keys
    verify_artifact(
        data,
        gateway_keys=keys.gateway_keys,
        operator_keys=keys.directory(),
        operator_private=keys.alice_enc,
        now=LATER,
        queue_operators=QUEUE_OPERATORS,
    )


def verify_samples() -> list[bytes]:
    handoff = _handoff()
    return [
        handoff.export(encrypted=False),
        handoff.decision.encode("ascii"),
        handoff.jws.encode("ascii"),
    ]


# config -------------------------------------------------------------------


def run_config(data: bytes) -> None:
    gateway_config.parse(data.decode("utf-8", "replace"))


def config_samples() -> list[bytes]:
    from gateway.devdata import _config_text

    return [
        _config_text("baton.local", ("support", "billing"), sample=True).encode(),
        _config_text("example.org", ("a",)).encode(),
    ]


_B = (BatonError,)
_K = (KeysError,)
TARGETS: Mapping[str, Target] = {
    t.name: t
    for t in (
        Target("strictjson", run_strictjson, _K, strictjson_samples),
        Target("jsonrpc", run_jsonrpc, _B, jsonrpc_samples),
        Target("mcp", run_mcp, _B, mcp_samples),
        Target("a2a", run_a2a, _B, a2a_samples),
        Target("sse", run_sse, _B, sse_samples),
        Target("agent_card", run_agent_card, _B, agent_card_samples),
        Target("sfv", run_sfv, _K, sfv_samples),
        Target("httpsig", run_httpsig, _K, httpsig_samples),
        Target("jws", run_jws, _K, jws_samples),
        Target("jwe", run_jwe, _K, jwe_samples),
        Target("capsule", run_capsule, _B, capsule_samples),
        Target("bundle", run_bundle, _B, bundle_samples),
        Target("verify", run_verify, _B, verify_samples),
        Target("config", run_config, (gateway_config.ConfigError,), config_samples),
    )
}


@functools.cache
def samples(name: str) -> tuple[bytes, ...]:
    return tuple(TARGETS[name].samples())


SAMPLES = samples
