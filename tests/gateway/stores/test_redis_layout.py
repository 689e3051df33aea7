"""The Redis key layout of ADR 0010: safe key parts, one Cluster slot per chain,
and fail-closed behaviour when a chain's keys were evicted or edited."""

from __future__ import annotations

import re

import pytest
from redis.crc import key_slot

from gateway.stores import redis_client
from gateway.stores.redis import (
    audit_keys,
    key_part,
    nonce_key,
    rate_key,
    transcript_body_key,
    transcript_keys,
)
from protocol.chain import ChainHead
from protocol.errors import StoreUnavailable
from tests.gateway.stores.conftest import Backend
from tests.gateway.stores.support import entry, redis_url

IDS = ["conv-1", "a:b", "{x}", "ünï", "x" * 300, "", "#abc", "550e8400-e29b-41d4-a716-446655440000"]


@pytest.mark.parametrize("value", ["kid-1", "abc.DEF_~+/=-", "x" * 128])
def test_safe_parts_are_used_verbatim(value: str) -> None:
    assert key_part(value) == value


@pytest.mark.parametrize("value", ["a:b", "{x}", "sp ace", "ünï", "x" * 129, "", "#", "a\x00b"])
def test_other_parts_are_hashed(value: str) -> None:
    assert re.fullmatch(r"#[0-9a-f]{64}", key_part(value))


@pytest.mark.parametrize("conversation", IDS)
def test_a_conversation_lives_in_one_cluster_slot(conversation: str) -> None:
    keys = transcript_keys("baton:", conversation)
    assert keys.bodies == transcript_body_key("baton:", conversation)
    assert len({key_slot(key.encode()) for key in keys.all}) == 1
    assert keys.all[0].count("{") == 1, "exactly one hash tag"


def test_the_audit_chain_lives_in_one_cluster_slot() -> None:
    keys = audit_keys("baton:")
    assert keys.bodies is None
    assert len({key_slot(key.encode()) for key in keys.all}) == 1


def test_keys_carry_the_prefix() -> None:
    for key in (
        *transcript_keys("p:", "c").all,
        *audit_keys("p:").all,
        nonce_key("p:", "k", "n"),
        rate_key("p:", "k", 7),
    ):
        assert key.startswith("p:")


REDIS_ONLY = pytest.mark.parametrize("backend", ["redis"], indirect=True)


@REDIS_ONLY
async def test_evicted_head_fails_closed(backend: Backend) -> None:
    transcripts = backend.stores.transcripts
    first = entry(ChainHead(), "c")
    await transcripts.append(first, None)
    client = redis_client(redis_url())
    try:
        await client.delete(transcript_keys(backend.spec.prefix, "c").head)
    finally:
        await client.aclose()
    with pytest.raises(StoreUnavailable, match="disagree"):
        await transcripts.append(entry(ChainHead(), "c"), None)
    assert list(await transcripts.read("c")) == [first], "nothing written"


@REDIS_ONLY
async def test_half_written_head_fails_closed(backend: Backend) -> None:
    transcripts = backend.stores.transcripts
    first = entry(ChainHead(), "c")
    await transcripts.append(first, None)
    client = redis_client(redis_url())
    try:
        await client.hdel(transcript_keys(backend.spec.prefix, "c").head, "hash")
    finally:
        await client.aclose()
    with pytest.raises(StoreUnavailable, match="incomplete"):
        await transcripts.head("c")
    with pytest.raises(StoreUnavailable, match="disagree"):
        await transcripts.append(entry(first.head, "c"), None)
