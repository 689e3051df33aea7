"""protocol/schema.py: the response-schema subset, held to the same verdicts as the browser's.

``tests/web/schema_cases.json`` is shared with ``tests/web/js/schema.test.mjs``
(the same cases against ``gateway/web/static/js/schema.js``). A Hypothesis
property then draws random instances for a few fixed schemas, collects the
Python verdicts, and runs ``node`` once over the whole batch: the verdict,
pointer and keyword must be the same for every instance.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys import strictjson
from keys.material import PrivateKey
from protocol.canonical import canonical_digest
from protocol.decision import (
    DecisionBinding,
    DecisionBody,
    DecisionTerms,
    make_decision_at,
    sign_decision,
    verify_decision_at,
)
from protocol.directory import KeyDirectory
from protocol.errors import InvalidArtifact, InvalidSchema, ResponseInvalid
from protocol.handoff import HandoffRequest
from protocol.schema import (
    MAX_INSTANCE_NODES,
    MAX_SAFE_INTEGER,
    check_schema,
    validate,
)
from tests.protocol._support import ALICE, DETERMINISTIC, NOW, json_text, raises_exactly

ROOT = Path(__file__).resolve().parents[2]
CASES_FILE = ROOT / "tests" / "web" / "schema_cases.json"
SCHEMA_JS = ROOT / "gateway" / "web" / "static" / "js" / "schema.js"
CASES: dict[str, Any] = strictjson.loads(CASES_FILE.read_bytes(), max_depth=128)
NODE = shutil.which("node")
NODE_TIMEOUT_S = 60


def _verdict(instance: Any, schema: Any) -> list[str] | None:
    """``None`` when the instance fits, else ``[code, pointer, keyword]``."""
    try:
        validate(instance, schema)
    except (ResponseInvalid, InvalidSchema) as exc:
        return [exc.code, exc.pointer, exc.keyword]
    return None


# --------------------------------------------------------------------------- shared cases


def test_the_shared_file_holds_at_least_60_cases() -> None:
    assert len(CASES["cases"]) + len(CASES["refused"]) >= 60
    verdicts = {case["valid"] for case in CASES["cases"]}
    assert verdicts == {True, False}


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda case: case["description"])
def test_shared_case(case: dict[str, Any]) -> None:
    check_schema(case["schema"])
    if case["valid"]:
        validate(case["instance"], case["schema"])
        return
    with raises_exactly(ResponseInvalid) as info:
        validate(case["instance"], case["schema"])
    error = info.value
    assert (error.pointer, error.keyword) == (case["pointer"], case["keyword"])
    assert f'"{case["pointer"]}"' in error.detail and case["keyword"] in error.detail
    assert error.public()["baton"] == {"pointer": case["pointer"], "keyword": case["keyword"]}


@pytest.mark.parametrize("case", CASES["refused"], ids=lambda case: case["description"])
def test_shared_refused_schema(case: dict[str, Any]) -> None:
    with raises_exactly(InvalidSchema) as info:
        check_schema(case["schema"])
    assert (info.value.pointer, info.value.keyword) == (case["pointer"], case["keyword"])
    # A refused schema validates nothing: validate checks the schema first.
    with raises_exactly(InvalidSchema) as again:
        validate(None, case["schema"])
    assert (again.value.pointer, again.value.keyword) == (case["pointer"], case["keyword"])


# --------------------------------------------------------------------------- Python values


@pytest.mark.parametrize(
    ("instance", "pointer"),
    [
        ("a\ud800", ""),
        ({"\udc00": 1}, ""),
        (["ok", "\udbff"], "/1"),
        (float("nan"), ""),
        ({"n": float("inf")}, "/n"),
        ({"n": -float("inf")}, "/n"),
        (b"bytes", ""),
        ({1, 2}, ""),
        ([object()], "/0"),
        ({1: "x"}, ""),
        (MAX_SAFE_INTEGER + 1, ""),
        (float(2**53), ""),
    ],
)
def test_values_that_are_not_i_json_are_refused(instance: Any, pointer: str) -> None:
    with raises_exactly(ResponseInvalid) as info:
        validate(instance, {})
    assert (info.value.pointer, info.value.keyword) == (pointer, "i-json")


def test_python_only_shapes() -> None:
    validate((1, "a"), {"type": "array", "items": {"type": ["integer", "string"]}})
    validate("\U0001f600", {"maxLength": 1})
    with raises_exactly(InvalidSchema) as info:
        check_schema({"const": "\ud83d"})
    assert (info.value.pointer, info.value.keyword) == ("/const", "i-json")
    with raises_exactly(InvalidSchema):
        check_schema({"minimum": float("nan")})
    with raises_exactly(InvalidSchema):
        check_schema({"type": ("string",), "maximum": True})


def test_an_instance_over_the_size_limit() -> None:
    big = [0] * MAX_INSTANCE_NODES  # the array itself is one more value
    with raises_exactly(ResponseInvalid) as info:
        validate(big, {})
    assert (info.value.pointer, info.value.keyword) == (f"/{MAX_INSTANCE_NODES - 1}", "size")
    validate(big[1:], {})


def test_errors_are_artifact_errors_with_public_locations() -> None:
    with pytest.raises(InvalidArtifact) as info:
        validate({"a": 1}, {"properties": {"a": {"type": "string"}}})
    body = info.value.public()
    assert body == {
        "code": "response_invalid",
        "message": "response does not fit the response schema",
        "retryable": False,
        "baton": {"pointer": "/a", "keyword": "type"},
    }
    assert info.value.http_status == 400


# --------------------------------------------------------------------------- enforcement

REQUEST: dict[str, Any] = {
    "reason_code": "need_an_answer",
    "reason_text": "which refund amount?",
    "trigger": "low_confidence",
    "allowed_decisions": ["respond", "reject"],
    "response_schema": {
        "type": "object",
        "required": ["amount"],
        "properties": {"amount": {"type": "integer", "minimum": 0}},
    },
    "sla": {"resolve_within_s": 3600},
    "idempotency_key": "idem-schema-1",
}
BINDING = DecisionBinding(
    bundle_id="hb_01JABCDEFGHJKMNPQRS",
    bundle_digest=canonical_digest({"bundle": 1}),
    bundle_version=1,
    fencing_token=2,
)


def test_a_request_with_an_unsupported_keyword_is_refused() -> None:
    schema = {"type": "object", "properties": {"iban": {"type": "string", "format": "iban"}}}
    with raises_exactly(InvalidSchema) as info:
        HandoffRequest.from_value({**REQUEST, "response_schema": schema})
    assert (info.value.pointer, info.value.keyword) == ("/properties/iban", "format")
    with raises_exactly(InvalidSchema):
        HandoffRequest.parse(json.dumps({**REQUEST, "response_schema": {"$ref": "#/x"}}))
    assert HandoffRequest.from_value(REQUEST).response_schema == REQUEST["response_schema"]


def _token(response: Any, key: PrivateKey) -> str:
    body = DecisionBody(type="respond", commitment="agreed", response=response)
    return sign_decision(make_decision_at(BINDING, body, operator=ALICE, now=NOW), key)


def test_a_respond_decision_must_fit_the_schema(alice_sig: PrivateKey) -> None:
    from keys.keyset import KeySet

    operators = KeyDirectory({ALICE: KeySet([alice_sig.public])})
    request = HandoffRequest.from_value(REQUEST)
    terms = DecisionTerms.of(request)
    assert terms.response_schema == REQUEST["response_schema"]
    for target in (request, terms):
        fits = verify_decision_at(
            _token({"amount": 3}, alice_sig),
            operators=operators, binding=BINDING, request=target, now=NOW,
        )  # fmt: skip
        assert fits.decision.response == {"amount": 3}
        with raises_exactly(ResponseInvalid) as info:
            verify_decision_at(
                _token({"amount": -1}, alice_sig),
                operators=operators, binding=BINDING, request=target, now=NOW,
            )  # fmt: skip
        assert (info.value.pointer, info.value.keyword) == ("/amount", "minimum")
    # Without a schema any response goes (the terms of records stored before it).
    loose = DecisionTerms(("respond",), None)
    verify_decision_at(
        _token({"amount": -1}, alice_sig),
        operators=operators, binding=BINDING, request=loose, now=NOW,
    )  # fmt: skip


# --------------------------------------------------------------------------- Python == JS

FIXED_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "required": ["amount"],
        "additionalProperties": False,
        "properties": {
            "amount": {"type": "integer", "minimum": 0, "maximum": 1000},
            "note": {"type": "string", "maxLength": 3},
            "tags": {"type": "array", "maxItems": 2, "items": {"enum": ["vip", "fraud", 1]}},
            "\uff61": {"type": "null"},
        },
    },
    {
        "type": ["number", "string", "null"],
        "exclusiveMinimum": -1.5,
        "exclusiveMaximum": 100,
        "minLength": 1,
        "maxLength": 2,
    },
    {
        "type": "array",
        "minItems": 1,
        "items": {"type": "object", "additionalProperties": {"type": ["integer", "boolean"]}},
    },
    {"enum": [0, "a", [1, {"b": None}], {"x": 1.5}, True, {}]},
    {"const": {"k": [1, 2.5, "\U0001f600"]}},
    {"properties": {"amount": False, "note": True, "constructor": {"type": "string"}}},
    {},
]
_NAMES = st.sampled_from(
    ["amount", "note", "tags", "x", "b", "k", "constructor", "\uff61", "\U0001f600"]
)
_PIECES = st.sampled_from(["a", "\u00e9", "e\u0301", "\U0001f600", "\uff61"])
_TEXT = st.lists(_PIECES, max_size=3).map("".join)
_NEAR = st.sampled_from(
    [-2, -1.5, -1.4999999, -1, 0, -0.0, 0.5, 1, 1.0, 2.5, 99.99, 100, 100.0, 100.5, 999, 1000,
     1000.0, 1000.5, 1001, 1e-9]
)  # fmt: skip
_NUMBERS = st.one_of(
    _NEAR,
    st.integers(min_value=-5, max_value=1005),
    st.floats(min_value=-10, max_value=1010),
    st.sampled_from([MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER, 2**53, 1e300]),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
)
_SCALARS = st.none() | st.booleans() | _NUMBERS | json_text | _TEXT | st.sampled_from(["vip"])
INSTANCES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_NAMES | json_text, children, max_size=4)
    ),
    max_leaves=12,
)
_TAGS = st.lists(st.sampled_from(["vip", "fraud", 1, 1.0, "x", True]), max_size=3)
#: Per fixed schema, instances near its boundaries (so both verdicts and many
#: keywords occur), drawn as often as arbitrary JSON.
_REFUND = st.fixed_dictionaries(
    {"amount": _NUMBERS | st.booleans()},
    optional={"note": _TEXT, "tags": _TAGS, "\uff61": st.sampled_from([None, 0]), "x": INSTANCES},
)
_ENUMISH = st.sampled_from(
    [0, 0.0, -0.0, 1, "a", "b", True, False, {}, [], None, {"x": 1.5}, {"x": 1.5, "y": 1}]
) | st.sampled_from([[1, {"b": None}], [1.0, {"b": None}], [{"b": None}], [1, {"b": 0}]])
_CONSTISH = st.sampled_from(
    [[1, 2.5, "\U0001f600"], [1.0, 2.5, "\U0001f600"], [1, 2.5], [1, 2.5, "\U0001f600", None]]
)
_NEAR_SCHEMA = [
    _REFUND | st.dictionaries(_NAMES, INSTANCES, max_size=3),
    _NUMBERS | _TEXT | st.none() | st.booleans(),
    st.lists(st.dictionaries(_NAMES, _NUMBERS | st.booleans() | _TEXT, max_size=3), max_size=3),
    _ENUMISH,
    st.fixed_dictionaries({"k": _CONSTISH}) | st.dictionaries(st.sampled_from("kj"), _TAGS),
    st.dictionaries(_NAMES, _SCALARS, max_size=3),
    INSTANCES,
]


def _instance_for(index: int) -> st.SearchStrategy[tuple[int, Any]]:
    return st.tuples(st.just(index), st.one_of(_NEAR_SCHEMA[index], INSTANCES))


# One node process for the whole batch: it prints [code, pointer, keyword] or null per item.
_NODE_SCRIPT = """
import { readFileSync } from "node:fs";
import { validate } from %s;
const { schemas, items } = JSON.parse(readFileSync(process.env.BATON_SCHEMA_BATCH, "utf8"));
const verdicts = items.map(([index, instance]) => {
  try {
    validate(instance, schemas[index]);
    return null;
  } catch (error) {
    if (error.code === undefined) throw error;
    return [error.code, error.pointer, error.keyword];
  }
});
process.stdout.write(JSON.stringify(verdicts));
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed: the Python/JS comparison needs it")
def test_python_and_javascript_agree_on_random_instances(tmp_path: Path) -> None:
    items: list[tuple[int, Any]] = []
    expected: list[list[str] | None] = []

    @settings(DETERMINISTIC, max_examples=1500)
    @given(st.integers(min_value=0, max_value=len(FIXED_SCHEMAS) - 1).flatmap(_instance_for))
    def collect(item: tuple[int, Any]) -> None:
        index, instance = item
        items.append(item)
        expected.append(_verdict(instance, FIXED_SCHEMAS[index]))

    collect()
    batch = tmp_path / "batch.json"
    batch.write_text(
        json.dumps({"schemas": FIXED_SCHEMAS, "items": items}, ensure_ascii=False),
        encoding="utf-8",
    )
    assert NODE is not None
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", _NODE_SCRIPT % json.dumps(SCHEMA_JS.as_uri())],
        env={**os.environ, "BATON_SCHEMA_BATCH": str(batch)},
        capture_output=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    got = strictjson.loads(done.stdout, max_bytes=64 << 20)
    assert len(got) == len(items)
    mismatches = [
        (index, instance, want, have)
        for (index, instance), want, have in zip(items, expected, got, strict=True)
        if want != have
    ]
    assert not mismatches, f"{len(mismatches)} differ, e.g. {min(mismatches, key=repr)!r}"
    # The batch exercised both verdicts, and several keywords, on more than one schema.
    keywords = {verdict[2] for verdict in expected if verdict is not None}
    assert None in expected and len(keywords) >= 8, keywords
    assert (
        len({index for (index, _), verdict in zip(items, expected, strict=True) if verdict is None})
        >= 3
    )
