"""protocol/identity.py: SPIFFE IDs (SPIFFE-ID.md s2), Baton workload IDs, operator IDs."""

from __future__ import annotations

import pytest

from protocol.errors import InvalidIdentity
from protocol.identity import (
    KINDS,
    OperatorId,
    SpiffeId,
    agent_id,
    gateway_id,
    operator_cert_id,
    parse_baton_id,
    parse_operator_id,
    parse_spiffe_id,
    validate_name,
    validate_trust_domain,
)
from tests.protocol._support import raises_exactly

# --------------------------------------------------------------------------- SPIFFE IDs

VALID_SPIFFE = [
    ("spiffe://trustdomain", "trustdomain", ""),
    ("spiffe://trustdomain/path", "trustdomain", "/path"),
    ("spiffe://trustdomain/path/element", "trustdomain", "/path/element"),
    ("spiffe://a-b.c_d9/x", "a-b.c_d9", "/x"),
    # Path segments may use upper case, '.', '-' and '_' (only td is lowercase-only).
    ("spiffe://td/Path/UPPER/mixed_Case-1.2", "td", "/Path/UPPER/mixed_Case-1.2"),
    # Only "." and ".." are forbidden segments; other dot runs are plain names.
    ("spiffe://td/.../.a/a./..b", "td", "/.../.a/a./..b"),
    ("spiffe://1.2.3.4/x", "1.2.3.4", "/x"),
]


@pytest.mark.parametrize(("value", "trust_domain", "path"), VALID_SPIFFE)
def test_valid_spiffe_ids(value: str, trust_domain: str, path: str) -> None:
    parsed = parse_spiffe_id(value)
    assert parsed == SpiffeId(trust_domain, path)
    assert str(parsed) == value


INVALID_SPIFFE = {
    "empty": "",
    "scheme only": "spiffe://",
    "no trust domain": "spiffe:///path",
    "uppercase scheme": "SPIFFE://td/x",
    "mixed-case scheme": "Spiffe://td/x",
    "other scheme": "https://td/x",
    "single slash": "spiffe:/td/x",
    "no slashes": "spiffe:td/x",
    "uppercase trust domain": "spiffe://TrustDomain/x",
    "uppercase trust domain, no path": "spiffe://TD",
    "percent-encoded path": "spiffe://td/%41",
    "percent-encoded trust domain": "spiffe://t%64/x",
    "percent-encoded slash": "spiffe://td/a%2Fb",
    "dot segment": "spiffe://td/./x",
    "dot-dot segment": "spiffe://td/../x",
    "trailing dot segment": "spiffe://td/x/.",
    "trailing dot-dot segment": "spiffe://td/x/..",
    "empty segment": "spiffe://td//x",
    "empty inner segment": "spiffe://td/x//y",
    "trailing slash after td": "spiffe://td/",
    "trailing slash": "spiffe://td/x/",
    "query": "spiffe://td/x?q=1",
    "query without path": "spiffe://td?q=1",
    "fragment": "spiffe://td/x#frag",
    "fragment without path": "spiffe://td#frag",
    "port": "spiffe://td:8443/x",
    "port without path": "spiffe://td:8443",
    "userinfo": "spiffe://user@td/x",
    "userinfo with password": "spiffe://user:pw@td/x",
    "space in path": "spiffe://td/a b",
    "leading space": " spiffe://td/x",
    "trailing newline": "spiffe://td/x\n",
    "newline in trust domain": "spiffe://td\n/x",
    "non-ASCII path": "spiffe://td/caf\u00e9",
    "non-ASCII trust domain": "spiffe://t\u00e9/x",
    "backslash": "spiffe://td\\x",
    "trust domain of 256 characters": "spiffe://" + "a" * 256,
    # Baton is stricter than the spec here: no empty DNS-style labels.
    "leading dot in trust domain": "spiffe://.td/x",
    "trailing dot in trust domain": "spiffe://td./x",
    "empty label in trust domain": "spiffe://a..b/x",
}


@pytest.mark.parametrize("value", INVALID_SPIFFE.values(), ids=INVALID_SPIFFE.keys())
def test_invalid_spiffe_ids(value: str) -> None:
    with raises_exactly(InvalidIdentity) as info:
        parse_spiffe_id(value)
    assert info.value.code == "invalid_identity"
    assert info.value.http_status == 400


@pytest.mark.parametrize("value", [None, 7, b"spiffe://td/x", ["spiffe://td/x"], SpiffeId("t", "")])
def test_non_string_spiffe_id(value: object) -> None:
    with raises_exactly(InvalidIdentity):
        parse_spiffe_id(value)


def test_length_limit_is_2048_bytes() -> None:
    prefix = "spiffe://td/"
    exact = prefix + "a" * (2048 - len(prefix))
    assert len(exact.encode()) == 2048
    assert str(parse_spiffe_id(exact)) == exact
    with raises_exactly(InvalidIdentity):
        parse_spiffe_id(exact + "a")
    # Counted in bytes, not characters: 2047 ASCII + one 2-byte character.
    with raises_exactly(InvalidIdentity):
        parse_spiffe_id(prefix + "a" * (2047 - len(prefix)) + "\u00e9")


def test_trust_domain_of_255_characters_is_valid() -> None:
    assert parse_spiffe_id("spiffe://" + "a" * 255).trust_domain == "a" * 255
    assert validate_trust_domain("b" * 255) == "b" * 255


def test_segments_kind_and_name() -> None:
    plain = parse_spiffe_id("spiffe://td/ns/prod/sa/web")
    assert plain.segments == ("ns", "prod", "sa", "web")
    assert plain.kind is None
    assert plain.name is None
    root = parse_spiffe_id("spiffe://td")
    assert root.segments == ()
    assert root.kind is None
    for kind in KINDS:
        parsed = parse_spiffe_id(f"spiffe://td/{kind}/x1")
        assert parsed.kind == kind
        assert parsed.name == "x1"
    assert parse_spiffe_id("spiffe://td/agent/x/y").kind is None, "three segments"
    assert parse_spiffe_id("spiffe://td/robot/x").kind is None


# --------------------------------------------------------------------------- Baton IDs


def test_baton_id_round_trip() -> None:
    parsed = parse_baton_id("spiffe://baton.local/agent/alpha", trust_domain="baton.local")
    assert parsed.kind == "agent"
    assert parsed.name == "alpha"
    assert parse_baton_id(str(parsed), kind="agent") == parsed


def test_constructors_build_valid_ids() -> None:
    assert str(agent_id("baton.local", "alpha")) == "spiffe://baton.local/agent/alpha"
    assert str(gateway_id("baton.local", "gw-1")) == "spiffe://baton.local/gateway/gw-1"
    assert str(operator_cert_id("baton.local", "alice")) == "spiffe://baton.local/operator/alice"
    for built in (
        agent_id("baton.local", "a"),
        gateway_id("baton.local", "g.0_x-y"),
        operator_cert_id("baton.local", "o" * 63),
    ):
        assert parse_baton_id(str(built), trust_domain="baton.local") == built


INVALID_BATON = {
    "not a SPIFFE ID": "agent/alpha",
    "kind only": "spiffe://baton.local/agent",
    "no path": "spiffe://baton.local",
    "extra segment": "spiffe://baton.local/agent/alpha/extra",
    "unknown kind": "spiffe://baton.local/robot/alpha",
    "uppercase kind": "spiffe://baton.local/Agent/alpha",
    "uppercase name": "spiffe://baton.local/agent/Alpha",
    "name starts with dash": "spiffe://baton.local/agent/-alpha",
    "name starts with dot": "spiffe://baton.local/agent/.alpha",
    "name starts with underscore": "spiffe://baton.local/agent/_alpha",
    "name of 64 characters": "spiffe://baton.local/agent/" + "a" * 64,
}


@pytest.mark.parametrize("value", INVALID_BATON.values(), ids=INVALID_BATON.keys())
def test_invalid_baton_ids(value: str) -> None:
    with raises_exactly(InvalidIdentity):
        parse_baton_id(value)


def test_baton_id_name_of_63_characters() -> None:
    assert parse_baton_id("spiffe://td/agent/" + "a" * 63).name == "a" * 63


def test_baton_id_trust_domain_must_match_exactly() -> None:
    with raises_exactly(InvalidIdentity):
        parse_baton_id("spiffe://evil.local/agent/alpha", trust_domain="baton.local")
    with raises_exactly(InvalidIdentity):
        parse_baton_id("spiffe://baton.local.evil/agent/alpha", trust_domain="baton.local")
    with raises_exactly(InvalidIdentity):
        parse_baton_id("spiffe://local/agent/alpha", trust_domain="baton.local")


def test_baton_id_kind_must_match() -> None:
    with raises_exactly(InvalidIdentity):
        parse_baton_id("spiffe://td/gateway/alpha", kind="agent")
    with raises_exactly(InvalidIdentity):
        parse_baton_id("spiffe://td/agent/alpha", kind="operator")
    assert parse_baton_id("spiffe://td/operator/alpha", kind="operator").kind == "operator"


@pytest.mark.parametrize("name", ["", "A", "a/b", "a b", "-a", "a" * 64, "caf\u00e9", "a\n"])
def test_constructors_refuse_bad_names(name: str) -> None:
    with raises_exactly(InvalidIdentity):
        validate_name(name)
    with raises_exactly(InvalidIdentity):
        agent_id("baton.local", name)


@pytest.mark.parametrize("trust_domain", ["", "Baton.local", "baton.local/x", "a..b", ".a", "a:1"])
def test_constructors_refuse_bad_trust_domains(trust_domain: str) -> None:
    with raises_exactly(InvalidIdentity):
        gateway_id(trust_domain, "gw")


# --------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    "subject", ["alice", "auth0|5f2a", "a", "x" * 255, "alice@example.com", "~!#$%&'()*+"]
)
def test_valid_operator_ids(subject: str) -> None:
    parsed = parse_operator_id(f"operator:{subject}")
    assert parsed == OperatorId(subject)
    assert str(parsed) == f"operator:{subject}"


INVALID_OPERATORS = {
    "empty subject": "operator:",
    "space": "operator:alice smith",
    "tab": "operator:alice\t",
    "newline": "operator:alice\n",
    "non-ASCII": "operator:al\u00efce",
    "DEL": "operator:alice\x7f",
    "256 characters": "operator:" + "x" * 256,
    "uppercase prefix": "Operator:alice",
    "no prefix": "alice",
    "SPIFFE ID": "spiffe://td/operator/alice",
}


@pytest.mark.parametrize("value", INVALID_OPERATORS.values(), ids=INVALID_OPERATORS.keys())
def test_invalid_operator_ids(value: str) -> None:
    with raises_exactly(InvalidIdentity):
        parse_operator_id(value)


@pytest.mark.parametrize("value", [None, 1, b"operator:alice", OperatorId("alice")])
def test_non_string_operator_id(value: object) -> None:
    with raises_exactly(InvalidIdentity):
        parse_operator_id(value)
