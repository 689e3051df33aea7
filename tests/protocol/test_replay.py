"""protocol/replay.py: freshness windows (R07), nonce TTL (R06), nonce claims (R01, R05)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.stores.sqlite import SqliteNonceStore, connect
from keys.httpsig import VerifiedSignature
from keys.material import PrivateKey
from protocol.errors import (
    InsufficientCoverage,
    MalformedSignature,
    ReplayDetected,
    Stale,
)
from protocol.replay import FreshnessPolicy, check_freshness, claim_nonce, validate_nonce
from tests.protocol._support import DETERMINISTIC, NOW, raises_exactly

POLICY = FreshnessPolicy(window_s=60, skew_s=5)
W, S = POLICY.window_s, POLICY.skew_s
NONCE = "n0nce-AAAAAAAAAAAAAAAA"


# --------------------------------------------------------------------------- freshness (R07)


def test_defaults_follow_the_design() -> None:
    policy = FreshnessPolicy()
    assert (policy.window_s, policy.skew_s) == (60, 5)
    assert policy.nonce_ttl_s >= 65


@pytest.mark.parametrize(
    ("created", "expires"),
    [
        (NOW, None),
        (NOW - W, None),
        (NOW + S, None),
        (NOW, NOW),
        (NOW - W, NOW),
        (NOW + S, NOW + S),
        (NOW, NOW + 3600),
    ],
    ids=["now", "now-W", "now+S", "expires=now", "oldest, expires now", "future", "long expiry"],
)
def test_fresh(created: int, expires: int | None) -> None:
    check_freshness(created, expires, now=NOW, policy=POLICY)


@pytest.mark.parametrize(
    ("created", "expires"),
    [
        (NOW - W - 1, None),
        (NOW + S + 1, None),
        (NOW, NOW - 1),
        (NOW - 10, NOW - 11),
        (NOW + S, NOW + S - 1),
        (0, None),
        (NOW + 10**9, None),
    ],
    ids=[
        "now-W-1",
        "now+S+1",
        "expired",
        "expires<created",
        "future, expires<created",
        "epoch",
        "far future",
    ],
)
def test_stale(created: int, expires: int | None) -> None:
    with raises_exactly(Stale) as info:
        check_freshness(created, expires, now=NOW, policy=POLICY)
    assert info.value.code == "stale"
    assert info.value.http_status == 401


def test_missing_created_is_insufficient_coverage() -> None:
    with raises_exactly(InsufficientCoverage) as info:
        check_freshness(None, NOW + 10, now=NOW, policy=POLICY)
    assert info.value.http_status == 401


def test_fractional_now_is_floored() -> None:
    """``now`` of NOW+0.999 is still second NOW: created = NOW-W is accepted, NOW+S+1 not."""
    check_freshness(NOW - W, None, now=NOW + 0.999, policy=POLICY)
    with raises_exactly(Stale):
        check_freshness(NOW + S + 1, None, now=NOW + 0.999, policy=POLICY)
    with raises_exactly(Stale):
        check_freshness(NOW - W - 1, None, now=NOW + 0.999, policy=POLICY)


def test_rfc9421_appendix_b_created_is_stale_under_a_real_clock() -> None:
    """R07: created=1618884473 (2021) only passes with an injected clock."""
    created = 1618884473
    with raises_exactly(Stale):
        check_freshness(created, None, now=NOW, policy=POLICY)
    check_freshness(created, None, now=created + 1, policy=POLICY)


@pytest.mark.parametrize(("window", "skew"), [(0, 5), (-1, 0), (60, -1)])
def test_policy_refuses_nonsense(window: int, skew: int) -> None:
    with pytest.raises(ValueError, match="window"):
        FreshnessPolicy(window_s=window, skew_s=skew)


# --------------------------------------------------------------------------- R06 invariant

_windows = st.integers(min_value=1, max_value=86_400)
_skews = st.integers(min_value=0, max_value=3_600)


@DETERMINISTIC
@given(_windows, _skews)
def test_nonce_ttl_covers_window_plus_skew(window: int, skew: int) -> None:
    assert FreshnessPolicy(window_s=window, skew_s=skew).nonce_ttl_s >= window + skew


def _is_fresh(created: int, now: float, policy: FreshnessPolicy) -> bool:
    try:
        check_freshness(created, None, now=now, policy=policy)
    except Stale:
        return False
    return True


@DETERMINISTIC
@given(
    window=_windows,
    skew=_skews,
    created=st.integers(min_value=10**6, max_value=2 * 10**9),
    first=st.floats(min_value=-100_000, max_value=100_000, allow_nan=False),
    later=st.floats(min_value=0, max_value=200_000, allow_nan=False),
)
def test_a_message_is_never_fresh_after_its_nonce_expired(
    window: int, skew: int, created: int, first: float, later: float
) -> None:
    """R06: if a message is fresh at t1 (its nonce claimed then with the policy's
    TTL) it is stale at every t2 >= t1 + ttl, when a store may have forgotten it."""
    policy = FreshnessPolicy(window_s=window, skew_s=skew)
    t1 = created + first
    if not _is_fresh(created, t1, policy):
        t1 = created - skew + (first % (window + skew + 1))  # pull t1 into the window
    assert _is_fresh(created, t1, policy)
    t2 = t1 + policy.nonce_ttl_s + later
    assert not _is_fresh(created, t2, policy)


@DETERMINISTIC
@given(window=_windows, skew=_skews)
def test_ttl_is_tight_against_the_longest_freshness_span(window: int, skew: int) -> None:
    """The earliest and the latest instant a message is fresh are less than a TTL apart."""
    policy = FreshnessPolicy(window_s=window, skew_s=skew)
    created = NOW
    earliest = created - skew  # floor(now) >= created - S
    latest = created + window + 0.999  # floor(now) <= created + W
    assert _is_fresh(created, earliest, policy)
    assert _is_fresh(created, latest, policy)
    assert not _is_fresh(created, earliest - 1, policy)
    assert not _is_fresh(created, latest + 0.001, policy)
    assert latest - earliest < policy.nonce_ttl_s


# --------------------------------------------------------------------------- nonces


@pytest.mark.parametrize(
    "nonce",
    ["a" * 16, "Z" * 128, "AZaz09._~+/=-" + "x" * 3, "b64url_-AAAAAAAAAAAAA", "b64std+/AAAAAAAA=="],
)
def test_valid_nonces(nonce: str) -> None:
    assert validate_nonce(nonce) == nonce


@pytest.mark.parametrize(
    "nonce",
    [
        "a" * 15,
        "a" * 129,
        "",
        "a" * 15 + " ",
        "a" * 16 + "\n",
        "a" * 16 + ":",
        'a"' * 8,
        "a" * 15 + "\u00e9",
        "a" * 8 + "%2F" * 3,
        "a" * 16 + "\x00",
    ],
    ids=["15", "129", "empty", "space", "newline", "colon", "quote", "non-ASCII", "percent", "NUL"],
)
def test_invalid_nonces(nonce: str) -> None:
    with raises_exactly(MalformedSignature):
        validate_nonce(nonce)


def test_missing_nonce() -> None:
    with raises_exactly(InsufficientCoverage):
        validate_nonce(None)


# --------------------------------------------------------------------------- claims


@pytest.fixture(scope="module")
def signer() -> PrivateKey:
    return PrivateKey.generate("Ed25519")


def _verified(
    signer: PrivateKey, nonce: str | None, *, keyid: str | None = None
) -> VerifiedSignature:
    return VerifiedSignature(
        label="sig1",
        keyid=keyid or signer.kid,
        key=signer.public,
        alg="ed25519",
        created=NOW,
        expires=None,
        nonce=nonce,
        tag=None,
        covered=("@method", "@target-uri", "@authority"),
    )


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = connect(tmp_path / "n.db")
    yield connection
    connection.close()


@pytest.fixture
def store(conn: sqlite3.Connection) -> SqliteNonceStore:
    return SqliteNonceStore(conn)


def _claim(store: SqliteNonceStore, verified: VerifiedSignature, now: float) -> None:
    asyncio.run(claim_nonce(store, verified, now=now, policy=POLICY))


def test_first_claim_wins_second_is_a_replay(store: SqliteNonceStore, signer: PrivateKey) -> None:
    """R01."""
    verified = _verified(signer, NONCE)
    _claim(store, verified, NOW)
    with raises_exactly(ReplayDetected) as info:
        _claim(store, verified, NOW + 1)
    assert info.value.code == "replay_detected"
    assert info.value.http_status == 401
    assert signer.kid in info.value.detail


def test_scopes_are_independent(store: SqliteNonceStore, signer: PrivateKey) -> None:
    _claim(store, _verified(signer, NONCE), NOW)
    _claim(store, _verified(signer, NONCE, keyid="another-kid"), NOW)
    with raises_exactly(ReplayDetected):
        _claim(store, _verified(signer, NONCE, keyid="another-kid"), NOW)


def test_nonce_is_remembered_for_the_whole_ttl(store: SqliteNonceStore, signer: PrivateKey) -> None:
    verified = _verified(signer, NONCE)
    _claim(store, verified, NOW)
    with raises_exactly(ReplayDetected):
        _claim(store, verified, NOW + POLICY.nonce_ttl_s - 0.001)
    _claim(store, verified, NOW + POLICY.nonce_ttl_s)  # forgotten: freshness must refuse it
    with raises_exactly(ReplayDetected):
        _claim(store, verified, NOW + POLICY.nonce_ttl_s + 1)


def test_expired_nonce_can_be_claimed_again(store: SqliteNonceStore, signer: PrivateKey) -> None:
    verified = _verified(signer, NONCE)
    _claim(store, verified, NOW)
    _claim(store, verified, NOW + POLICY.nonce_ttl_s + 30)


def test_a_second_connection_sees_the_claim(
    tmp_path: Path, store: SqliteNonceStore, signer: PrivateKey
) -> None:
    """R05 in miniature: two stores over one file accept a nonce once."""
    _claim(store, _verified(signer, NONCE), NOW)
    other_conn = connect(tmp_path / "n.db")
    try:
        with raises_exactly(ReplayDetected):
            _claim(SqliteNonceStore(other_conn), _verified(signer, NONCE), NOW + 1)
    finally:
        other_conn.close()


@pytest.mark.parametrize(
    ("nonce", "error"),
    [
        (None, InsufficientCoverage),
        ("short", MalformedSignature),
        ("a" * 16 + "\n", MalformedSignature),
    ],
)
def test_bad_nonce_is_refused_before_the_store(
    store: SqliteNonceStore,
    conn: sqlite3.Connection,
    signer: PrivateKey,
    nonce: str | None,
    error: type[InsufficientCoverage | MalformedSignature],
) -> None:
    with raises_exactly(error):
        _claim(store, _verified(signer, nonce), NOW)
    assert conn.execute("SELECT count(*) FROM nonces").fetchone() == (0,)


@settings(DETERMINISTIC, max_examples=40)
@given(
    window=st.integers(min_value=1, max_value=600),
    skew=st.integers(min_value=0, max_value=60),
    offset=st.integers(min_value=0, max_value=10_000),
    extra=st.floats(min_value=0, max_value=1_000, allow_nan=False),
)
def test_store_and_window_together_accept_a_nonce_once(
    *,
    tmp_path_factory: pytest.TempPathFactory,
    signer: PrivateKey,
    window: int,
    skew: int,
    offset: int,
    extra: float,
) -> None:
    """R06 end to end with a real store: a replay at any later time is refused by
    the store (still remembered) or by the window (already stale)."""
    policy = FreshnessPolicy(window_s=window, skew_s=skew)
    created = NOW
    first = created - skew + offset % (window + skew + 1)
    check_freshness(created, None, now=first, policy=policy)
    conn = connect(tmp_path_factory.mktemp("r06") / "n.db")
    try:
        store = SqliteNonceStore(conn)
        verified = _verified(signer, NONCE)
        asyncio.run(claim_nonce(store, verified, now=first, policy=policy))
        replay_at = first + extra
        try:
            check_freshness(created, None, now=replay_at, policy=policy)
        except Stale:
            return
        with raises_exactly(ReplayDetected):
            asyncio.run(claim_nonce(store, verified, now=replay_at, policy=policy))
    finally:
        conn.close()
