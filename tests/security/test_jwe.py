"""Catalogue 1.2, JWE (E01-E10), where capsules are consumed: through the real gateway.

Capsules are end to end: ``support`` seals context to ``billing``; the
gateway checks the outer request (mTLS, RFC 9421, nonce, policy), records the
ciphertext and forwards it, and can read none of it. So the JWE cases run the
whole path: the tampered capsule goes through the real gateway in an MCP
``tools/call`` (``arguments.baton_capsule``), and the recipient opens what the
recording upstream received with the agent-side helpers
(``adapters.agent.find_mcp_capsules`` + ``open_capsules``), naming the
delivering peer from the gateway's ``Baton-Caller`` header.

What each case pins:

* the gateway is no oracle: its answer to a tampered capsule is the answer to
  a good one (it forwards ciphertext byte for byte and never decrypts);
* the recipient refuses with ``400 invalid_envelope`` and one public body for
  every envelope failure (E01-E04, E06-E08, E10); a PBES2 header costs no
  KDF time; ``zip`` is ``compression_not_allowed``
  (E05, a subclass with the same public message);
* a validly signed capsule re-sent by someone other than its issuer is
  ``422 binding_mismatch`` (E09), one addressed to someone else
  ``403 not_recipient``.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from adapters.agent import find_mcp_capsules, mcp_capsule_argument, open_capsules
from keys.b64 import b64url_decode, b64url_encode
from protocol.capsule import seal_capsule_at
from protocol.directory import KeyDirectory
from protocol.errors import BatonError
from tests.gateway._harness import rpc
from tests.security.conftest import SecGateway

PATH = "/u/billing/mcp"
CONV = "conv-jwe-1"


def _seal(gw: SecGateway, *, sender: str = "support", to: str = "billing") -> dict[str, Any]:
    agent = gw.agent(sender)
    recipient = gw.agent(to)
    return seal_capsule_at(
        {"order": 42, "note": "context only billing may read"},
        sender=agent.identity,
        signing_key=agent.signing.active,
        recipients={recipient.identity: recipient.encryption.public()},
        conversation=CONV,
        now=gw.clock.now,
    )


async def _deliver(gw: SecGateway, capsule: dict[str, Any]) -> tuple[int, bytes, Any]:
    """Send ``capsule`` through the gateway; open what ``billing`` received.

    Returns the gateway's answer (status, body) and the recipient's outcome:
    the opened capsules, or the :class:`BatonError` it raised.
    """
    before = len(gw.upstream.received)
    body = rpc("tools/call", 1, name="lookup", arguments={"q": 1, **mcp_capsule_argument(capsule)})
    status, _, answer = await gw.send("support", PATH, body, extra=[("baton-conversation", CONV)])
    assert len(gw.upstream.received) == before + 1, "the gateway did not forward the capsule"
    received = gw.upstream.received[-1]
    assert received.body == body, "the gateway changed the ciphertext it carried"
    delivered_by = {k.lower(): v for k, v in received.headers.items()}["baton-caller"]
    billing = gw.agent("billing")
    directory = KeyDirectory(
        {gw.agent(n).identity: gw.agent(n).signing.public() for n in ("support", "chatty")}
    )
    arguments = json.loads(received.body)["params"]["arguments"]
    try:
        outcome: Any = open_capsules(
            find_mcp_capsules(arguments),
            me=billing.identity,
            my_keys=billing.encryption,
            senders=directory,
            now=gw.clock.now,
            conversation=CONV,
            delivered_by=delivered_by,
        )
    except BatonError as exc:
        outcome = exc
    return status, answer, outcome


def _flip(segment: str, index: int = 0) -> str:
    raw = bytearray(b64url_decode(segment))
    raw[index] ^= 0x01
    return b64url_encode(bytes(raw))


def _protected(capsule: dict[str, Any], **changes: object) -> dict[str, Any]:
    out = copy.deepcopy(capsule)
    header = json.loads(b64url_decode(out["protected"]))
    header.update(changes)
    out["protected"] = b64url_encode(json.dumps(header).encode())
    return out


def _recipient(capsule: dict[str, Any], **changes: object) -> dict[str, Any]:
    out = copy.deepcopy(capsule)
    out["recipients"][0]["header"].update(changes)
    return out


def _member(capsule: dict[str, Any], name: str, value: object) -> dict[str, Any]:
    out = copy.deepcopy(capsule)
    if value is None:
        del out[name]
    else:
        out[name] = value
    return out


_INVALID_EPK_X = b64url_encode(bytes(31) + b"\x01")
_P384_EPK = {
    "kty": "EC",
    "crv": "P-384",
    "x": b64url_encode(bytes(47) + b"\x01"),
    "y": b64url_encode(bytes(47) + b"\x02"),
}
_X25519_LOW_ORDER = {"kty": "OKP", "crv": "X25519", "x": b64url_encode(bytes(32))}


def _epk(capsule: dict[str, Any], **changes: str) -> dict[str, Any]:
    epk = {**capsule["recipients"][0]["header"]["epk"], **changes}
    return _recipient(capsule, epk=epk)


def _epk_y_flipped(capsule: dict[str, Any]) -> dict[str, Any]:
    return _epk(capsule, y=_flip(capsule["recipients"][0]["header"]["epk"]["y"], 31))


def _wrapped_key_flipped(capsule: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(capsule)
    out["recipients"][0]["encrypted_key"] = _flip(out["recipients"][0]["encrypted_key"])
    return out


def _pbes2(capsule: dict[str, Any]) -> dict[str, Any]:
    return _recipient(capsule, alg="PBES2-HS512+A256KW", p2c=2_000_000_000, p2s="c2FsdHNhbHQ")


CASES: dict[str, tuple[str, Any]] = {
    # E01: a point that is not on P-256 (an invalid-curve attack's probe)
    "E01-off-curve": ("E01", lambda c: _epk(c, x=_INVALID_EPK_X)),
    "E01-y-flipped": ("E01", _epk_y_flipped),
    # E02: another curve than the recipient key's; an X25519 low-order point
    "E02-p384": ("E02", lambda c: _recipient(c, epk=_P384_EPK)),
    "E02-x25519-zero": ("E02", lambda c: _recipient(c, epk=_X25519_LOW_ORDER)),
    # E03: the wrapped key tampered with (AES key-wrap integrity)
    "E03-encrypted-key": ("E03", _wrapped_key_flipped),
    # E04: tag, IV, ciphertext, protected header
    "E04-tag-modified": ("E04", lambda c: _member(c, "tag", _flip(c["tag"]))),
    "E04-tag-truncated": ("E04", lambda c: _member(c, "tag", c["tag"][:16])),
    "E04-tag-missing": ("E04", lambda c: _member(c, "tag", None)),
    "E04-tag-empty": ("E04", lambda c: _member(c, "tag", "")),
    "E04-iv": ("E04", lambda c: _member(c, "iv", _flip(c["iv"]))),
    "E04-ciphertext": ("E04", lambda c: _member(c, "ciphertext", _flip(c["ciphertext"], 3))),
    "E04-protected": ("E04", lambda c: _protected(c, cty="other")),
    "E04-unprotected-added": ("E04", lambda c: _member(c, "unprotected", {"enc": "A256GCM"})),
    # E06: downgrade to RSA1_5 (and RSA-OAEP) against an ECDH-ES key
    "E06-rsa1_5": ("E06", lambda c: _recipient(c, alg="RSA1_5")),
    "E06-rsa-oaep": ("E06", lambda c: _recipient(c, alg="RSA-OAEP")),
    # E07: wrong enc / alg pairings; dir
    "E07-enc-a128gcm": ("E07", lambda c: _protected(c, enc="A128GCM")),
    "E07-alg-dir": ("E07", lambda c: _recipient(c, alg="dir")),
    "E07-alg-ecdh-es-direct": ("E07", lambda c: _recipient(c, alg="ECDH-ES")),
    # E08: PBES2 with a huge iteration count
    "E08-pbes2": ("E08", _pbes2),
    # E10: a CBC-HS content encryption (padding-oracle probe)
    "E10-cbc-hs": ("E10", lambda c: _protected(c, enc="A128CBC-HS256")),
    "E10-cbc-hs512": ("E10", lambda c: _protected(c, enc="A256CBC-HS512")),
}


@pytest.mark.threat("E09")
async def test_a_good_capsule_opens_at_the_recipient(gw: SecGateway) -> None:
    """Baseline: the path works, and the gateway recorded only ciphertext."""
    status, answer, outcome = await _deliver(gw, _seal(gw))
    assert status == 200, answer
    [opened] = outcome
    assert opened.payload == {"order": 42, "note": "context only billing may read"}
    body = await gw.stores.transcripts.read_body(CONV, 0)
    assert body is not None and b"context only billing" not in body


@pytest.mark.threat("E01", "E02", "E03", "E04", "E06", "E07", "E08", "E10")
async def test_every_envelope_failure_looks_the_same(gw: SecGateway) -> None:
    """One public body for every cause, at the recipient; the gateway's own
    answer to each tampered capsule is the answer to a good one."""
    good_status, good_answer, _ = await _deliver(gw, _seal(gw))
    assert {threat for threat, _ in CASES.values()} == {
        "E01", "E02", "E03", "E04", "E06", "E07", "E08", "E10"
    }  # fmt: skip
    publics = {}
    for name, (_threat, tamper) in CASES.items():
        started = time.perf_counter()
        status, answer, outcome = await _deliver(gw, tamper(_seal(gw)))
        assert (status, json.loads(answer)) == (good_status, json.loads(good_answer)), name
        assert isinstance(outcome, BatonError), f"{name}: the tampered capsule opened"
        assert (outcome.code, outcome.http_status) == ("invalid_envelope", 400), (name, outcome)
        publics[name] = json.dumps(outcome.public(), sort_keys=True)
        if name == "E08-pbes2":
            assert time.perf_counter() - started < 2, "a KDF ran for a PBES2 header"
    assert len(set(publics.values())) == 1, publics
    assert json.loads(next(iter(publics.values()))) == {
        "code": "invalid_envelope",
        "message": "invalid envelope",
        "retryable": False,
    }


@pytest.mark.threat("E05")
async def test_compressed_capsule_is_refused(gw: SecGateway) -> None:
    _, _, outcome = await _deliver(gw, _protected(_seal(gw), zip="DEF"))
    assert isinstance(outcome, BatonError)
    assert (outcome.code, outcome.http_status) == ("compression_not_allowed", 400)
    assert outcome.public()["message"] == "invalid envelope"


@pytest.mark.threat("E09")
async def test_capsule_forwarded_by_someone_else_than_its_issuer(gw: SecGateway) -> None:
    """``chatty`` sealed it (valid inner signature, addressed to billing);
    ``support`` re-sends it. The recipient knows the deliverer from the
    gateway's ``Baton-Caller``, and it is not the issuer."""
    status, answer, outcome = await _deliver(gw, _seal(gw, sender="chatty"))
    assert status == 200, answer
    assert isinstance(outcome, BatonError)
    assert (outcome.code, outcome.http_status) == ("binding_mismatch", 422)


@pytest.mark.threat("E09")
async def test_capsule_for_another_recipient_is_not_opened(gw: SecGateway) -> None:
    """Sealed to ``legacy`` only: billing holds no recipient entry for it."""
    _, _, outcome = await _deliver(gw, _seal(gw, to="legacy"))
    assert isinstance(outcome, BatonError)
    assert outcome.code == "invalid_envelope"
