"""Catalogue 1.3, replay and freshness (R01-R13), against the real running gateway.

Every request is an RFC 9421 signed call from ``support`` over mTLS to the
recording ``billing`` upstream. Baton's stable codes where they differ from
the catalogue's suggestion (all sound, see each test): a replayed nonce is
``401 replay_detected`` (the caller is authenticated but the *message* is not
new: RFC 9421 s7.2.2 treats it as a verification failure, so 401 with the
Bearer challenge, never 409); a body that does not match a signed digest is
``401 digest_mismatch``.

R08 (signed per-conversation sequence numbers) has no test: Baton does not
take an order from callers; the gateway assigns ``seq`` in each
conversation's hash chain (compare-and-append on the head), so there is no
caller sequence to reorder.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.gateway._harness import free_port, rpc, signed_headers
from tests.security.conftest import (
    REDIS_URL,
    SecGateway,
    launch,
    raw_signed,
    shutdown,
    start_instance,
)
from tests.security.invariants import assert_rejected

PATH = "/u/billing/mcp"
WINDOW, SKEW = 60, 5  # the defaults: [replay] window_s, skew_s


def _url(gw: SecGateway, path: str = PATH) -> str:
    return gw.base + path


def _code(body: bytes) -> str:
    return str(json.loads(body)["error"]["data"]["code"])


async def _replay_pair(gw: SecGateway) -> list[tuple[str, str]]:
    """Send one good call and return its headers, ready to be sent again."""
    body = rpc("tools/list")
    headers = signed_headers(gw.agent("support"), "POST", _url(gw), body, created=int(gw.clock.now))
    status, _, answer = await gw.send("support", PATH, body, headers=headers)
    assert status == 200, answer
    return headers


# --------------------------------------------------------------------- R01-R03
@pytest.mark.threat("R01")
async def test_same_nonce_twice_is_refused(gw: SecGateway) -> None:
    headers = await _replay_pair(gw)
    await assert_rejected(
        gw,
        gw.send("support", PATH, rpc("tools/list"), headers=headers),
        status=401,
        code="replay_detected",
    )
    assert len(gw.upstream.received) == 1


@pytest.mark.threat("R01")
async def test_same_nonce_in_another_request_is_refused(gw: SecGateway) -> None:
    """The nonce is one-time per signer key, whatever else the request says."""
    nonce = secrets.token_urlsafe(16)
    first = rpc("tools/list", 1)
    status, _, _ = await gw.send("support", PATH, first, nonce=nonce, created=int(gw.clock.now))
    assert status == 200
    other = rpc("tools/call", 2, name="refund")
    await assert_rejected(
        gw,
        gw.send("support", "/u/billing/other", other, nonce=nonce, created=int(gw.clock.now)),
        status=401,
        code="replay_detected",
    )


@pytest.mark.threat("R02")
async def test_request_carrying_a_bearer_token_cannot_be_replayed(gw_bearer: SecGateway) -> None:
    """A bearer JWT is a session credential bound to the certificate (RFC 8705);
    Baton does not make its ``jti`` single-use. What an eavesdropper could
    replay, the whole request with its token, is refused by the signature's
    one-time nonce; the token alone over another certificate is refused in
    test_jwt/test_mtls (M06, M07)."""
    gw = gw_bearer
    token = gw.token(jti="t-1")
    body = rpc("tools/list")
    headers = signed_headers(
        gw.agent("support"),
        "POST",
        _url(gw),
        body,
        created=int(gw.clock.now),
        extra=[("authorization", f"Bearer {token}")],
    )
    status, _, answer = await gw.send("support", PATH, body, headers=headers)
    assert status == 200, answer
    await assert_rejected(
        gw,
        gw.send("support", PATH, body, headers=headers),
        status=401,
        code="replay_detected",
        secrets=[token],
    )


async def _parallel(gw: SecGateway, count: int) -> list[int]:
    body = rpc("tools/list")
    headers = signed_headers(gw.agent("support"), "POST", _url(gw), body, created=int(gw.clock.now))
    results = await asyncio.gather(
        *(gw.send("support", PATH, body, headers=headers) for _ in range(count))
    )
    return [status for status, _, _ in results]


@pytest.mark.threat("R03")
@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_fifty_identical_requests_in_parallel_one_passes(tmp_path: Path, store: str) -> None:
    gw = await launch(tmp_path, store=store)
    try:
        statuses = await _parallel(gw, 50)
        assert sorted(statuses) == [200] + [401] * 49
        assert len(gw.upstream.received) == 1
        reasons = [e.reason for e in await gw.audit_events()]
        assert reasons.count(None) == 1 and reasons.count("replay_detected") == 49
    finally:
        await shutdown(gw)


# -------------------------------------------------------------------- R04-R05
@pytest.mark.threat("R04")
async def test_message_signed_for_another_authority(gw: SecGateway) -> None:
    body = rpc("tools/list")
    headers = signed_headers(
        gw.agent("support"),
        "POST",
        "https://other-gateway.example" + PATH,
        body,
        extra=[("host", "other-gateway.example")],
    )
    await assert_rejected(
        gw, gw.send("support", PATH, body, headers=headers), status=401, code="bad_audience"
    )


@pytest.mark.threat("R04")
async def test_message_signed_for_one_upstream_sent_to_another(gw: SecGateway) -> None:
    """``@target-uri`` is covered: the upstream name in the path is signed."""
    body = rpc("tools/list")
    headers = signed_headers(gw.agent("support"), "POST", _url(gw, "/u/payments/mcp"), body)
    await assert_rejected(
        gw, gw.send("support", PATH, body, headers=headers), status=401, code="bad_signature"
    )


@pytest.mark.threat("R05")
async def test_replay_across_two_instances_sharing_redis(tmp_path: Path) -> None:
    """Two gateways, one Redis, one fleet name: accepted by instance 1, refused by 2."""
    fleet = 'authorities = ["baton.test"]'
    first = await launch(tmp_path / "a", store="redis", gateway_settings=fleet)
    try:
        second = await start_instance(
            first.folder,
            first.scratch,
            first.upstream,
            first.clock,
            port=free_port(),
            admin_port=free_port(),
            redis_prefix=first.redis_prefix,
        )
        try:
            body = rpc("tools/list")
            headers = signed_headers(
                first.agent("support"),
                "POST",
                "https://baton.test" + PATH,
                body,
                created=int(first.clock.now),
                extra=[("host", "baton.test")],
            )
            status, _, answer = await first.send("support", PATH, body, headers=headers)
            assert status == 200, answer
            await assert_rejected(
                second,
                second.send("support", PATH, body, headers=headers),
                status=401,
                code="replay_detected",
            )
            assert len(first.upstream.received) == 1
        finally:
            await second.stop()
    finally:
        await shutdown(first)


# -------------------------------------------------------------------- R06-R07
@pytest.mark.threat("R06")
async def test_nonce_is_remembered_as_long_as_the_message_is_fresh(gw: SecGateway) -> None:
    """Invariant W + S <= nonce TTL, on the embedded store with the injected clock:
    at the last fresh second the replay is a replay; one second later the
    store may have forgotten the nonce, and the message is already stale."""
    created = int(gw.clock.now)
    headers = await _replay_pair(gw)
    gw.clock.now = created + WINDOW  # created = now - W: still fresh
    await assert_rejected(
        gw,
        gw.send("support", PATH, rpc("tools/list"), headers=headers),
        status=401,
        code="replay_detected",
    )
    gw.clock.now = created + WINDOW + SKEW + 1  # past any TTL >= W + S
    await assert_rejected(
        gw,
        gw.send("support", PATH, rpc("tools/list"), headers=headers),
        status=401,
        code="stale",
    )


@pytest.mark.threat("R06")
async def test_redis_nonce_ttl_covers_the_window(gw_redis: SecGateway) -> None:
    gw = gw_redis
    nonce = secrets.token_urlsafe(16)
    status, _, _ = await gw.send("support", PATH, rpc("tools/list"), nonce=nonce)
    assert status == 200
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{gw.redis_prefix}nonce:*")]
        assert len(keys) == 1
        ttl_ms = await client.pttl(keys[0])
    finally:
        await client.aclose()
    assert ttl_ms >= (WINDOW + SKEW - 1) * 1000, "the store forgets a nonce while it is fresh"


@pytest.mark.threat("R07")
@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-WINDOW, True), (-WINDOW - 1, False), (SKEW, True), (SKEW + 1, False)],
    ids=["now-W", "now-W-1", "now+S", "now+S+1"],
)
async def test_created_edges(gw: SecGateway, offset: int, accepted: bool) -> None:
    created = int(gw.clock.now) + offset
    send = gw.send("support", PATH, rpc("tools/list"), created=created)
    if accepted:
        status, _, body = await send
        assert status == 200, body
    else:
        await assert_rejected(gw, send, status=401, code="stale")


def _params(gw: SecGateway, **values: object) -> str:
    params = {
        "created": int(gw.clock.now),
        "keyid": gw.agent("support").signing.active.kid,
        "nonce": secrets.token_urlsafe(16),
        **values,
    }
    out = ""
    for name, value in params.items():
        if value is None:
            continue
        out += f";{name}={value}" if isinstance(value, int) else f';{name}="{value}"'
    return out


@pytest.mark.threat("R07")
async def test_expires_in_the_past(gw: SecGateway) -> None:
    """Baton's code for any freshness failure of a signature is ``stale``."""
    now = int(gw.clock.now)
    body = rpc("tools/list")
    key = gw.agent("support").signing.active
    headers = raw_signed(key, "POST", _url(gw), body, params=_params(gw, expires=now - 1))
    await assert_rejected(
        gw, gw.send("support", PATH, body, headers=headers), status=401, code="stale"
    )


@pytest.mark.threat("R07")
async def test_created_missing(gw: SecGateway) -> None:
    body = rpc("tools/list")
    key = gw.agent("support").signing.active
    headers = raw_signed(key, "POST", _url(gw), body, params=_params(gw, created=None))
    await assert_rejected(
        gw,
        gw.send("support", PATH, body, headers=headers),
        status=401,
        code="insufficient_coverage",
    )


@pytest.mark.threat("R07")
async def test_rfc_9421_appendix_b_created_fails_under_the_real_clock(gw: SecGateway) -> None:
    """The RFC's examples were signed at created=1618884473 (2021): a gateway on
    a real clock must find such a message stale."""
    await assert_rejected(
        gw,
        gw.send("support", PATH, rpc("tools/list"), created=1618884473),
        status=401,
        code="stale",
    )


# -------------------------------------------------------------------- R09-R13
@pytest.mark.threat("R09")
async def test_forged_request_does_not_burn_the_victims_nonce(gw: SecGateway) -> None:
    nonce = secrets.token_urlsafe(16)
    body = rpc("tools/list")
    # The attacker knows the victim's next nonce but not its key.
    forged = signed_headers(
        gw.agent("billing"), "POST", _url(gw), body, nonce=nonce, created=int(gw.clock.now)
    )
    keyid = gw.agent("support").signing.active.kid
    forged = [
        (name, value.replace(gw.agent("billing").signing.active.kid, keyid))
        if name == "signature-input"
        else (name, value)
        for name, value in forged
    ]
    await assert_rejected(
        gw, gw.send("support", PATH, body, headers=forged), status=401, code="bad_signature"
    )
    status, _, answer = await gw.send("support", PATH, body, nonce=nonce)
    assert status == 200, answer


@pytest.mark.threat("R10")
@pytest.mark.parametrize(
    "components",
    [
        (),
        ("@target-uri", "@authority", "content-digest"),
        ("@method", "@authority", "content-digest"),
        ("@method", "@target-uri", "content-digest"),
        ("@method", "@target-uri", "@authority"),
    ],
    ids=["empty", "no-method", "no-target-uri", "no-authority", "no-digest"],
)
async def test_weak_coverage(gw: SecGateway, components: tuple[str, ...]) -> None:
    body = rpc("tools/list")
    key = gw.agent("support").signing.active
    headers = raw_signed(key, "POST", _url(gw), body, components=components, params=_params(gw))
    await assert_rejected(
        gw,
        gw.send("support", PATH, body, headers=headers),
        status=401,
        code="insufficient_coverage",
    )


@pytest.mark.threat("R10")
async def test_keyid_and_nonce_are_required(gw: SecGateway) -> None:
    body = rpc("tools/list")
    key = gw.agent("support").signing.active
    for params in (_params(gw, nonce=None), _params(gw, keyid=None)):
        headers = raw_signed(key, "POST", _url(gw), body, params=params)
        await assert_rejected(
            gw,
            gw.send("support", PATH, body, headers=headers),
            status=401,
            code="insufficient_coverage",
        )


@pytest.mark.threat("R11")
async def test_body_changed_under_a_kept_digest(gw: SecGateway) -> None:
    signed_for = rpc("tools/call", 1, name="refund", arguments={"amount": 5})
    sent = rpc("tools/call", 1, name="refund", arguments={"amount": 5000})
    headers = signed_headers(gw.agent("support"), "POST", _url(gw), signed_for)
    await assert_rejected(
        gw, gw.send("support", PATH, sent, headers=headers), status=401, code="digest_mismatch"
    )


@pytest.mark.threat("R11")
async def test_recomputed_digest_that_is_not_signed(gw: SecGateway) -> None:
    sent = rpc("tools/call", 1, name="refund", arguments={"amount": 5000})
    headers = signed_headers(
        gw.agent("support"),
        "POST",
        _url(gw),
        sent,
        components=["@method", "@target-uri", "@authority"],
    )
    await assert_rejected(
        gw,
        gw.send("support", PATH, sent, headers=headers),
        status=401,
        code="insufficient_coverage",
    )


def _merge_labels(
    good: list[tuple[str, str]], other: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """``good``'s headers with ``other``'s Signature(-Input) members appended."""
    extra = dict((n, v) for n, v in other if n in ("signature", "signature-input"))
    return [
        (name, f"{value}, {extra[name]}") if name in extra else (name, value)
        for name, value in good
    ]


@pytest.mark.threat("R12")
async def test_unknown_label_is_ignored_not_trusted(gw: SecGateway) -> None:
    body = rpc("tools/list")
    url = _url(gw)
    good = signed_headers(gw.agent("support"), "POST", url, body, created=int(gw.clock.now))
    garbage = [
        ("signature-input", 'evil=("@method");created=1;keyid="x";nonce="n"'),
        ("signature", "evil=:AAAA:"),
    ]
    status, _, answer = await gw.send("support", PATH, body, headers=_merge_labels(good, garbage))
    assert status == 200, answer  # a junk extra label neither breaks nor adds anything

    # A valid signature under another label is not the policy's signature.
    key = gw.agent("support").signing.active
    relabelled = raw_signed(key, "POST", url, body, params=_params(gw), label="other")
    await assert_rejected(
        gw,
        gw.send("support", PATH, body, headers=relabelled),
        status=401,
        code="signature_missing",
    )


@pytest.mark.threat("R12")
async def test_valid_extra_label_cannot_stand_in_for_a_bad_one(gw: SecGateway) -> None:
    """Label confusion: a bad ``baton`` signature next to a good ``alt`` one fails."""
    body = rpc("tools/list")
    url = _url(gw)
    key = gw.agent("support").signing.active
    good_alt = raw_signed(key, "POST", url, body, params=_params(gw), label="alt")
    bad = raw_signed(
        key, "POST", url, rpc("tools/call"), params=_params(gw)
    )  # signed over another body's digest, then the digest is swapped below
    bad = [(n, v) for n, v in bad if n != "content-digest"] + [
        ("content-digest", dict(good_alt)["content-digest"])
    ]
    await assert_rejected(
        gw,
        gw.send("support", PATH, body, headers=_merge_labels(bad, good_alt)),
        status=401,
        code="bad_signature",
    )


@pytest.mark.threat("R13")
@pytest.mark.parametrize("alg", ["hmac-sha256", "ecdsa-p256-sha256", "rsa-pss-sha512"])
async def test_alg_parameter_disagrees_with_the_key(gw: SecGateway, alg: str) -> None:
    """Signed correctly with support's Ed25519 key, but claiming another ``alg``."""
    body = rpc("tools/list")
    key = gw.agent("support").signing.active
    headers = raw_signed(key, "POST", _url(gw), body, params=_params(gw, alg=alg))
    await assert_rejected(
        gw, gw.send("support", PATH, body, headers=headers), status=401, code="alg_mismatch"
    )
