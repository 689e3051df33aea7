"""protocol/model.py: strict, frozen, closed artifacts; field types; strict parsing first."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from pydantic import ValidationError

from protocol.canonical import canonical_json
from protocol.errors import (
    InvalidArtifact,
    MalformedInput,
    PayloadTooLarge,
    TooDeep,
)
from protocol.model import (
    BatonModel,
    Digest,
    Identity,
    JsonData,
    JsonPointer,
    Name,
    Nonce,
    OperatorIdentity,
    WorkloadIdentity,
)
from tests.protocol._support import DETERMINISTIC, json_values, raises_exactly


class Sample(BatonModel):
    """A model with one field of each Baton type."""

    digest: Digest
    name: Name
    nonce: Nonce
    pointer: JsonPointer
    identity: Identity
    workload: WorkloadIdentity
    operator: OperatorIdentity
    count: int
    tags: tuple[str, ...] = ()
    note: str | None = None


GOOD: dict[str, Any] = {
    "digest": "sha256:" + "0123456789abcdef" * 4,
    "name": "payments-t2",
    "nonce": "AAAAAAAAAAAAAAAA",
    "pointer": "/a/0/b~1c",
    "identity": "operator:alice",
    "workload": "spiffe://baton.local/agent/alpha",
    "operator": "operator:bob",
    "count": 3,
    "tags": ["x", "y"],
}


def test_valid_sample_round_trips() -> None:
    sample = Sample.from_value(GOOD)
    assert sample.tags == ("x", "y")
    wire = sample.to_json()
    assert wire["note"] is None, "None is kept as null"
    assert wire["tags"] == ["x", "y"]
    assert sample.canonical() == canonical_json(wire)
    assert Sample.parse(sample.canonical()) == sample
    assert Sample.parse(sample.canonical().decode()) == sample


def test_models_are_frozen() -> None:
    sample = Sample.from_value(GOOD)
    with pytest.raises(ValidationError):
        sample.count = 4  # type: ignore[misc]
    assert sample.count == 3


@pytest.mark.parametrize(
    "change",
    [
        {"count": "3"},
        {"count": 3.5},
        {"count": True},
        {"tags": "xy"},
        {"tags": [1]},
        {"note": 5},
        {"extra": 1},
        {"digest": "sha256:" + "A" * 64},
        {"digest": "sha512:" + "0" * 64},
        {"name": "Payments"},
        {"name": "-q"},
        {"name": "q" * 64},
        {"nonce": "A" * 15},
        {"nonce": "A" * 129},
        {"nonce": "A" * 16 + " "},
        {"pointer": "a/b"},
        {"pointer": "/a~2"},
        {"pointer": "/a~"},
        {"pointer": "/" + "a" * 512},
    ],
    ids=str,
)
def test_strict_types_and_closed_members(change: dict[str, Any]) -> None:
    value = {**GOOD, **change}
    with raises_exactly(InvalidArtifact) as info:
        Sample.from_value(value)
    assert info.value.http_status == 400
    with raises_exactly(InvalidArtifact):
        Sample.parse(json.dumps(value))


@pytest.mark.parametrize("pointer", ["", "/", "/a", "/~0~1", "//", "/a/-", "/\u00e9"])
def test_valid_pointers(pointer: str) -> None:
    assert Sample.from_value({**GOOD, "pointer": pointer}).pointer == pointer


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("identity", "alice"),
        ("identity", "spiffe://TD/agent/a"),
        ("workload", "operator:alice"),
        ("operator", "spiffe://baton.local/operator/alice"),
        ("operator", "operator:"),
    ],
)
def test_identity_fields(field: str, value: str) -> None:
    """A bad identity inside an artifact is a schema failure of the artifact."""
    with raises_exactly(InvalidArtifact) as caught:
        Sample.from_value({**GOOD, field: value})
    assert field in caught.value.detail


def test_identity_accepts_both_kinds() -> None:
    assert Sample.from_value({**GOOD, "identity": "spiffe://td/x"}).identity == "spiffe://td/x"


def test_parse_runs_the_strict_json_parser_first() -> None:
    text = json.dumps(GOOD)
    with raises_exactly(MalformedInput):
        Sample.parse(text[:-1] + ', "count": 4}')  # duplicate member
    with raises_exactly(MalformedInput):
        Sample.parse(b"\xef\xbb\xbf" + text.encode())  # byte-order mark
    with raises_exactly(MalformedInput):
        Sample.parse(text.encode()[:-1] + b"\xff}")
    with raises_exactly(MalformedInput):
        Sample.parse(json.dumps([GOOD]))  # not an object
    with raises_exactly(MalformedInput):
        Sample.parse(text.replace("3", "NaN"))
    with raises_exactly(TooDeep):
        Sample.parse(text[:-1] + ', "note": ' + "[" * 100 + "]" * 100 + "}")
    with raises_exactly(PayloadTooLarge) as info:
        Sample.parse(text, max_bytes=len(text) - 1)
    assert info.value.http_status == 413


def test_validation_errors_do_not_echo_input_values() -> None:
    """A rejected artifact's detail names fields, never the (possibly secret) values."""
    secret = "SK_live 0123456789"
    with raises_exactly(InvalidArtifact) as info:
        Sample.from_value({**GOOD, "name": secret, "count": secret})
    assert secret not in info.value.detail
    assert "name" in info.value.detail


class Carrier(BatonModel):
    """A model carrying arbitrary JSON, like bundle bodies and capsule payloads."""

    data: JsonData


@settings(DETERMINISTIC, max_examples=300)
@given(json_values)
@example(0.1)
@example([5e-324, 1.7976931348623157e308, -0.0, 123456.789e-300])
@example({"\U0001f600": {"\uff61": [None, True, 2**53 - 1]}})
def test_signed_json_survives_a_parse_by_the_model(value: Any) -> None:
    """What ``verify_bundle_jws`` relies on: pydantic's JSON parser reads JCS
    bytes back to a value whose JCS form is the same bytes."""
    payload = canonical_json({"data": value})
    parsed = Carrier.parse(payload)
    assert parsed.data == value
    assert parsed.canonical() == payload
