"""adapters/agent/capsules.py: capsules in A2A parts and MCP tool calls, with real keys.

Every round trip goes through the SDKs' own wire types (a2a-sdk's protobuf
``Message``, ``mcp.types``) so the shapes are the ones the SDKs accept.
"""

from __future__ import annotations

import json
from typing import Any

import mcp.types as mcp_types
import pytest
from a2a.types import a2a_pb2
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.agent import (
    CAPSULE_ARGUMENT,
    CAPSULE_MEDIA_TYPE,
    a2a_capsule_part,
    find_a2a_capsules,
    find_mcp_capsules,
    mcp_capsule_argument,
    mcp_capsule_content,
    open_capsules,
)
from adapters.agent.capsules import MAX_CAPSULES
from keys.keyset import KeySet, PrivateKeySet
from keys.material import PrivateKey
from protocol.capsule import seal_capsule_at
from protocol.directory import KeyDirectory
from protocol.errors import BatonError, InvalidEnvelope, NotRecipient, PayloadTooLarge

NOW = 1_750_000_000
ALPHA = "spiffe://baton.local/agent/alpha"
BETA = "spiffe://baton.local/agent/beta"
MALLORY = "spiffe://baton.local/agent/mallory"
CONVERSATION = "ctx-7f3a"


@pytest.fixture(scope="module")
def alpha_sig() -> PrivateKey:
    return PrivateKey.generate("Ed25519")


@pytest.fixture(scope="module")
def beta_enc() -> PrivateKeySet:
    return PrivateKeySet.generate("ECDH-ES+A256KW")


@pytest.fixture(scope="module")
def mallory_enc() -> PrivateKeySet:
    return PrivateKeySet.generate("ECDH-ES+A256KW")


@pytest.fixture(scope="module")
def senders(alpha_sig: PrivateKey) -> KeyDirectory:
    return KeyDirectory({ALPHA: KeySet([alpha_sig.public])})


def seal(alpha_sig: PrivateKey, beta_enc: PrivateKeySet, payload: Any) -> dict[str, Any]:
    return seal_capsule_at(
        payload,
        sender=ALPHA,
        signing_key=alpha_sig,
        recipients={BETA: beta_enc.public()},
        conversation=CONVERSATION,
        now=NOW,
    )


@pytest.fixture(scope="module")
def capsule(alpha_sig: PrivateKey, beta_enc: PrivateKeySet) -> dict[str, Any]:
    return seal(alpha_sig, beta_enc, {"order": "A-77", "amount": 900})


@pytest.fixture(scope="module")
def other(alpha_sig: PrivateKey, beta_enc: PrivateKeySet) -> dict[str, Any]:
    return seal(alpha_sig, beta_enc, {"note": "second"})


def open_as_beta(
    found: list[dict[str, Any]], beta_enc: PrivateKeySet, senders: KeyDirectory
) -> list[Any]:
    opened = open_capsules(
        found, me=BETA, my_keys=beta_enc, senders=senders, now=NOW + 1, conversation=CONVERSATION
    )
    return [item.payload for item in opened]


# ----------------------------------------------------------------- A2A


def test_a2a_part_shape(capsule: dict[str, Any]) -> None:
    assert a2a_capsule_part(capsule) == {"data": capsule, "mediaType": CAPSULE_MEDIA_TYPE}


def test_a2a_round_trip_through_the_sdk_protobuf(
    capsule: dict[str, Any], beta_enc: PrivateKeySet, senders: KeyDirectory
) -> None:
    message = {
        "messageId": "m-1",
        "contextId": CONVERSATION,
        "role": "ROLE_USER",
        "parts": [{"text": "see attached"}, a2a_capsule_part(capsule)],
    }
    wire = json_format.MessageToDict(json_format.ParseDict(message, a2a_pb2.Message()))
    found = find_a2a_capsules(wire)
    assert found == [capsule]
    assert open_as_beta(found, beta_enc, senders) == [{"order": "A-77", "amount": 900}]


def test_a2a_finds_in_params_tasks_artifacts_and_events(
    capsule: dict[str, Any], other: dict[str, Any]
) -> None:
    part, part2 = a2a_capsule_part(capsule), a2a_capsule_part(other)
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {"message": {"parts": [part]}},
    }
    task = {
        "id": "t-1",
        "status": {"state": "TASK_STATE_COMPLETED", "message": {"parts": [part]}},
        "artifacts": [{"artifactId": "a-1", "parts": [{"text": "x"}, part2]}],
        "history": [{"parts": [a2a_capsule_part(other)]}],  # not read: already delivered
    }
    event = {"result": {"artifactUpdate": {"artifact": {"parts": [part2]}}}}
    status_event = {"result": {"statusUpdate": {"status": {"message": {"parts": [part]}}}}}
    assert find_a2a_capsules(request) == [capsule]
    assert find_a2a_capsules({"result": {"task": task}}) == [capsule, other]
    assert find_a2a_capsules([part, {"text": "hi"}, part2, part]) == [capsule, other]
    assert find_a2a_capsules(event) == [other]
    assert find_a2a_capsules(status_event) == [capsule]
    assert find_a2a_capsules({"artifact": {"parts": [part2]}}) == [other]


def test_a2a_media_type_is_case_insensitive(capsule: dict[str, Any]) -> None:
    part = {"data": capsule, "mediaType": "Application/Baton-Capsule+JOSE"}
    assert find_a2a_capsules([part]) == [capsule]


@pytest.mark.parametrize(
    "part",
    [
        {"mediaType": CAPSULE_MEDIA_TYPE, "text": "{}"},
        {"mediaType": CAPSULE_MEDIA_TYPE, "data": "not an object"},
        {"mediaType": CAPSULE_MEDIA_TYPE, "data": {"ciphertext": "x"}},
        {"mediaType": CAPSULE_MEDIA_TYPE, "data": {"ciphertext": 1, "recipients": [{}]}},
        {"mediaType": CAPSULE_MEDIA_TYPE, "data": {"ciphertext": "x", "recipients": []}},
    ],
)
def test_a2a_part_claiming_to_be_a_capsule_must_be_one(part: dict[str, Any]) -> None:
    with pytest.raises(InvalidEnvelope):
        find_a2a_capsules([part])


def test_builders_refuse_what_is_not_a_capsule() -> None:
    for build in (a2a_capsule_part, mcp_capsule_argument, mcp_capsule_content):
        with pytest.raises(InvalidEnvelope):
            build({"payload": "plaintext"})


# ----------------------------------------------------------------- MCP


def test_mcp_arguments_round_trip_through_the_sdk_types(
    capsule: dict[str, Any], beta_enc: PrivateKeySet, senders: KeyDirectory
) -> None:
    arguments = {"text": "hello", **mcp_capsule_argument(capsule)}
    assert arguments[CAPSULE_ARGUMENT] == capsule
    params = mcp_types.CallToolRequestParams.model_validate({"name": "pay", "arguments": arguments})
    wire = params.model_dump(mode="json", by_alias=True, exclude_none=True)
    for shape in (wire, wire["arguments"], {"jsonrpc": "2.0", "id": 3, "params": wire}):
        assert find_mcp_capsules(shape) == [capsule]
    assert open_as_beta(find_mcp_capsules(wire), beta_enc, senders) == [
        {"order": "A-77", "amount": 900}
    ]


def test_mcp_result_structured_and_resource_content(
    capsule: dict[str, Any], other: dict[str, Any], beta_enc: PrivateKeySet, senders: KeyDirectory
) -> None:
    result = mcp_types.CallToolResult.model_validate(
        {
            "content": [
                {"type": "text", "text": json.dumps(mcp_capsule_argument(capsule))},
                mcp_capsule_content(other),
            ],
            "structuredContent": mcp_capsule_argument(capsule),
        }
    )
    wire = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert wire["content"][1]["resource"]["mimeType"] == CAPSULE_MEDIA_TYPE
    found = find_mcp_capsules({"jsonrpc": "2.0", "id": 3, "result": wire})
    assert found == [capsule, other]  # text blocks are never parsed
    assert open_as_beta(found, beta_enc, senders) == [
        {"order": "A-77", "amount": 900},
        {"note": "second"},
    ]


def test_mcp_list_of_capsules_and_duplicates(
    capsule: dict[str, Any], other: dict[str, Any]
) -> None:
    arguments = {CAPSULE_ARGUMENT: [capsule, other, capsule]}
    assert find_mcp_capsules(arguments) == [capsule, other]
    assert find_mcp_capsules({"text": "no capsule", "nested": {CAPSULE_ARGUMENT: capsule}}) == []


@pytest.mark.parametrize(
    "text",
    ["not json", '{"a":1,"a":2}', "[]", json.dumps({"ciphertext": "x"}), "{" * 40 + "}" * 40],
)
def test_mcp_resource_text_must_be_a_capsule(text: str) -> None:
    block = {
        "type": "resource",
        "resource": {"uri": "urn:baton:capsule", "mimeType": CAPSULE_MEDIA_TYPE, "text": text},
    }
    with pytest.raises(InvalidEnvelope):
        find_mcp_capsules({"content": [block]})


def test_mcp_argument_that_is_not_a_capsule_is_an_error() -> None:
    with pytest.raises(InvalidEnvelope):
        find_mcp_capsules({CAPSULE_ARGUMENT: "plaintext"})


def test_too_many_capsules(capsule: dict[str, Any]) -> None:
    many = [
        {**capsule, "ciphertext": f"{n}{capsule['ciphertext']}"} for n in range(MAX_CAPSULES + 1)
    ]
    assert len(find_mcp_capsules({CAPSULE_ARGUMENT: many[:MAX_CAPSULES]})) == MAX_CAPSULES
    with pytest.raises(PayloadTooLarge):
        find_mcp_capsules({CAPSULE_ARGUMENT: many})
    with pytest.raises(PayloadTooLarge):
        find_a2a_capsules([a2a_capsule_part(c) for c in many])


# ----------------------------------------------------------------- open


def test_open_capsules_checks_the_audience(
    capsule: dict[str, Any], mallory_enc: PrivateKeySet, senders: KeyDirectory
) -> None:
    with pytest.raises(BatonError):  # not even decryptable with Mallory's keys
        open_capsules([capsule], me=MALLORY, my_keys=mallory_enc, senders=senders, now=NOW)


def test_open_capsules_is_all_or_nothing(
    capsule: dict[str, Any], alpha_sig: PrivateKey, beta_enc: PrivateKeySet, senders: KeyDirectory
) -> None:
    to_mallory_too = seal_capsule_at(
        {"x": 1},
        sender=ALPHA,
        signing_key=alpha_sig,
        recipients={MALLORY: beta_enc.public()},  # beta can decrypt, but aud names Mallory
        conversation=CONVERSATION,
        now=NOW,
    )
    with pytest.raises(NotRecipient):
        open_capsules(
            [capsule, to_mallory_too], me=BETA, my_keys=beta_enc, senders=senders, now=NOW
        )


# ----------------------------------------------------------------- property

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=24,
)
_keys = st.sampled_from(
    [CAPSULE_ARGUMENT, "mediaType", "data", "parts", "message", "result", "params", "content",
     "structuredContent", "arguments", "artifacts", "type", "resource", "mimeType", "text",
     "ciphertext", "recipients"]
)  # fmt: skip
_values = st.sampled_from([CAPSULE_MEDIA_TYPE, "resource", "x"]) | _json
_shaped = st.recursive(
    _values,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(value=st.dictionaries(_keys, _shaped, max_size=5) | st.lists(_shaped, max_size=4))
def test_finders_on_arbitrary_json_return_capsules_or_a_baton_error(value: Any) -> None:
    for find in (find_a2a_capsules, find_mcp_capsules):
        if find is find_mcp_capsules and not isinstance(value, dict):
            continue
        try:
            found = find(value)
        except (InvalidEnvelope, PayloadTooLarge):
            continue
        for item in found:
            assert isinstance(item["ciphertext"], str)
            assert isinstance(item["recipients"], list) and item["recipients"]
