"""Response schemas: a small, strict subset of JSON Schema draft 2020-12.

A handoff request may carry ``response_schema`` (``protocol/handoff.py``): the
shape of the answer an operator gives with a ``respond`` decision. The schema
is checked when the handoff is asked for (:func:`check_schema`) and every
response is validated against it (:func:`validate`) by the gateway before a
decision is recorded, by the agent that verifies the decision, and by the
operator's client before it signs. ``gateway/web/static/js/schema.js`` is the
same code for the browser; ``tests/web/schema_cases.json`` holds both to the
same verdicts, pointers and keywords.

Keywords ("JSON Schema Validation" = draft-bhutton-json-schema-validation-01,
"Core" = draft-bhutton-json-schema-01, both 2020-12):

* Validation s6.1.1 ``type`` (a name or a non-empty list of unique names:
  ``object array string integer number boolean null``; ``integer`` is any
  number with a zero fractional part, so ``1.0`` is one), s6.1.2 ``enum``
  (non-empty, unique members), s6.1.3 ``const``;
* Validation s6.2.2 ``maximum``, s6.2.3 ``exclusiveMaximum``, s6.2.4
  ``minimum``, s6.2.5 ``exclusiveMinimum`` (numbers, not the booleans of
  draft 4);
* Validation s6.3.1 ``maxLength``, s6.3.2 ``minLength`` (Unicode code points,
  not UTF-16 units);
* Validation s6.4.1 ``maxItems``, s6.4.2 ``minItems``; s6.5.3 ``required``
  (unique names);
* Core s10.3.1.2 ``items`` (one schema for every element), s10.3.2.1
  ``properties``, s10.3.2.3 ``additionalProperties`` (a boolean or a schema);
* annotations, which assert nothing: Validation s9.1 ``title`` and
  ``description`` (strings), s9.2 ``default``, s9.5 ``examples`` (an array);
  Core s8.3 ``$comment``; Core s8.1.1 ``$schema``, at the root only and only
  ``https://json-schema.org/draft/2020-12/schema`` (another dialect gives the
  same keywords other meanings).

Invariants:

* fail closed: any other keyword (``$ref``, ``oneOf``, ``format``, ``pattern``
  ...) makes :func:`check_schema` raise :class:`InvalidSchema`, so an agent
  cannot ask for a check that would be silently skipped. ``pattern`` is out on
  purpose: Python and ECMAScript regular expressions differ, and a pattern
  from an agent invites ReDoS;
* a schema is a JSON object; a subschema (a ``properties`` member, ``items``,
  ``additionalProperties``) is an object or a boolean (Core s4.3.2);
* schema and instance are I-JSON (RFC 7493): every number finite and of
  magnitude at most 2**53 - 1 (s2.2; :mod:`protocol.canonical` refuses larger
  integers, and an ECMAScript number cannot tell them apart), no lone
  surrogates in strings or member names (s2.1). Failures name the pseudo
  keyword ``i-json``. Numbers compare by value (``1 == 1.0``, Core s4.2.2);
  booleans are not numbers;
* limits: a schema nests at most :data:`MAX_SCHEMA_DEPTH` containers and holds
  at most :data:`MAX_SCHEMA_NODES` JSON values (``enum`` at most
  :data:`MAX_ENUM`); an instance nests at most :data:`MAX_INSTANCE_DEPTH` and
  holds at most :data:`MAX_INSTANCE_NODES`. Failures name the pseudo keywords
  ``depth`` and ``size``. Each instance value is checked against one
  subschema at most (there are no combinators), so validation is linear;
* errors name a JSON Pointer (RFC 6901) and the keyword: into the schema for
  :class:`InvalidSchema` (the subschema holding the keyword), into the
  instance for :class:`ResponseInvalid`. A value that a ``false`` subschema
  refuses names the keyword that applied it (``properties``, ``items``,
  ``additionalProperties``). The first failure is reported, in a fixed order:
  the I-JSON and limit scan first, then, at each instance location, the
  keywords in the order of :func:`_assert`, object members in RFC 8785 order
  (UTF-16 code units, s3.2.3) and elements by index.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, NoReturn

from protocol.errors import InvalidSchema, ResponseInvalid

__all__ = [
    "DIALECT",
    "MAX_ENUM",
    "MAX_INSTANCE_DEPTH",
    "MAX_INSTANCE_NODES",
    "MAX_SAFE_INTEGER",
    "MAX_SCHEMA_DEPTH",
    "MAX_SCHEMA_NODES",
    "TYPES",
    "check_schema",
    "validate",
]

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
TYPES: Final = ("object", "array", "string", "integer", "number", "boolean", "null")
MAX_SAFE_INTEGER: Final = 2**53 - 1
MAX_SCHEMA_DEPTH: Final = 32
MAX_SCHEMA_NODES: Final = 2048
MAX_ENUM: Final = 256
MAX_INSTANCE_DEPTH: Final = 64
MAX_INSTANCE_NODES: Final = 100_000

_ANNOTATIONS: Final = frozenset({"title", "description", "$comment", "default", "examples"})
_NUMBER_BOUNDS: Final = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
_COUNTS: Final = ("minLength", "maxLength", "minItems", "maxItems")
_KEYWORDS: Final = frozenset(
    {"$schema", "type", "enum", "const", "properties", "required", "additionalProperties"}
    | {"items", *_NUMBER_BOUNDS, *_COUNTS}
    | _ANNOTATIONS
)

_Fail = Callable[[str, str, str], NoReturn]


def _schema_error(pointer: str, keyword: str, reason: str) -> NoReturn:
    raise InvalidSchema(f'{keyword} at "{pointer}": {reason}', pointer=pointer, keyword=keyword)


def _response_error(pointer: str, keyword: str, reason: str) -> NoReturn:
    raise ResponseInvalid(f'{keyword} at "{pointer}": {reason}', pointer=pointer, keyword=keyword)


# --------------------------------------------------------------------------- JSON values


def _kind(value: object) -> str | None:
    """The JSON type of a Python value (``None`` for anything else)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return None


def _is_integer(value: int | float) -> bool:
    return isinstance(value, int) or value.is_integer()


def _well_formed(text: str) -> bool:
    """No lone surrogates (RFC 7493 s2.1)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escape(name: str) -> str:
    """An RFC 6901 reference token (s3: ``~`` as ``~0``, ``/`` as ``~1``)."""
    return name.replace("~", "~0").replace("/", "~1")


def _utf16(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def _members(value: Mapping[str, Any]) -> list[str]:
    """Member names in RFC 8785 order (s3.2.3): the order errors are found in."""
    return sorted(value, key=_utf16)


class _Scan:
    """The I-JSON and limits pass over a whole value (module docstring)."""

    def __init__(self, fail: _Fail, *, max_depth: int, max_nodes: int) -> None:
        self.fail = fail
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.nodes = 0

    def run(self, value: object, at: str, depth: int) -> None:
        self.nodes += 1
        if self.nodes > self.max_nodes:
            self.fail(at, "size", f"more than {self.max_nodes} JSON values")
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, str):
            if not _well_formed(value):
                self.fail(at, "i-json", "lone surrogate in a string")
        elif isinstance(value, int | float):
            if isinstance(value, float) and not math.isfinite(value):
                self.fail(at, "i-json", "numbers are finite")
            if abs(value) > MAX_SAFE_INTEGER:
                self.fail(at, "i-json", "number of magnitude over 2**53 - 1")
        elif isinstance(value, list | tuple):
            if depth >= self.max_depth:
                self.fail(at, "depth", f"nested deeper than {self.max_depth}")
            for index, item in enumerate(value):
                self.run(item, f"{at}/{index}", depth + 1)
        elif isinstance(value, dict):
            if depth >= self.max_depth:
                self.fail(at, "depth", f"nested deeper than {self.max_depth}")
            if not all(isinstance(name, str) for name in value):
                self.fail(at, "i-json", "member names are strings")
            for name in _members(value):
                if not _well_formed(name):
                    self.fail(at, "i-json", "lone surrogate in a member name")
                self.run(value[name], f"{at}/{_escape(name)}", depth + 1)
        else:
            self.fail(at, "i-json", f"a {type(value).__name__} is not a JSON value")


def _equal(a: Any, b: Any) -> bool:
    """JSON equality (Core s4.2.2): same type and value; numbers by value."""
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "array":
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind == "object":
        return a.keys() == b.keys() and all(_equal(a[name], b[name]) for name in a)
    return bool(a == b)


# --------------------------------------------------------------------------- check_schema


def check_schema(schema: object) -> None:
    """Raise :class:`InvalidSchema` unless ``schema`` is a JSON object in the
    supported subset (module docstring); its pointer and keyword say where."""
    if _kind(schema) != "object":
        _schema_error("", "type", "a response schema is a JSON object")
    _Scan(_schema_error, max_depth=MAX_SCHEMA_DEPTH, max_nodes=MAX_SCHEMA_NODES).run(schema, "", 0)
    _check(schema, "", root=True)


def _check(schema: Any, at: str, *, root: bool = False) -> None:
    """One (sub)schema, already scanned: keywords in RFC 8785 order."""
    if isinstance(schema, bool):
        return
    for keyword in _members(schema):
        if keyword not in _KEYWORDS:
            _schema_error(at, keyword, "keyword not supported")
        _check_keyword(keyword, schema[keyword], at, root=root)


def _check_keyword(keyword: str, value: Any, at: str, *, root: bool) -> None:
    def refuse(reason: str) -> NoReturn:
        _schema_error(at, keyword, reason)

    kind = _kind(value)
    if keyword == "$schema":
        if not root or value != DIALECT:
            refuse(f"only {DIALECT}, at the root")
    elif keyword in ("title", "description", "$comment"):
        if kind != "string":
            refuse("a string")
    elif keyword == "examples":
        if kind != "array":
            refuse("an array")
    elif keyword == "type":
        names = value if kind == "array" else [value]  # a non-string fails below
        if not names or any(name not in TYPES for name in names) or _repeats(names):
            refuse(f"one of {', '.join(TYPES)}, or a non-empty list of them without repeats")
    elif keyword == "enum":
        if kind != "array" or not value or len(value) > MAX_ENUM or _repeats(value):
            refuse(f"a non-empty array of at most {MAX_ENUM} different values")
    elif keyword in _NUMBER_BOUNDS:
        if kind != "number":
            refuse("a number")
    elif keyword in _COUNTS:
        if kind != "number" or not _is_integer(value) or value < 0:
            refuse("a non-negative integer")
    elif keyword == "required":
        if kind != "array" or any(_kind(name) != "string" for name in value) or _repeats(value):
            refuse("an array of different strings")
    elif keyword == "properties":
        if kind != "object":
            refuse("an object of schemas")
        for name in _members(value):
            _check_subschema(value[name], f"{at}/properties/{_escape(name)}")
    elif keyword in ("items", "additionalProperties"):
        _check_subschema(value, f"{at}/{keyword}")
    # "const" and "default" take any JSON value (already scanned).


def _check_subschema(value: Any, at: str) -> None:
    if _kind(value) not in ("object", "boolean"):
        _schema_error(at, "type", "a schema is an object or a boolean")
    _check(value, at)


def _repeats(values: Iterable[Any]) -> bool:
    seen: list[Any] = []
    for value in values:
        if any(_equal(value, other) for other in seen):
            return True
        seen.append(value)
    return False


# --------------------------------------------------------------------------- validate


def validate(instance: object, schema: Mapping[str, Any]) -> None:
    """Raise :class:`ResponseInvalid` unless ``instance`` fits ``schema``.

    ``schema`` is checked first (:func:`check_schema`, raising
    :class:`InvalidSchema`): a schema outside the subset never validates
    anything. The instance must be I-JSON within the limits; then the first
    failing keyword, in the order of the module docstring, is raised.
    """
    check_schema(schema)
    _Scan(_response_error, max_depth=MAX_INSTANCE_DEPTH, max_nodes=MAX_INSTANCE_NODES).run(
        instance, "", 0
    )
    _assert(instance, schema, "", via="")


def _assert(instance: Any, schema: Any, at: str, *, via: str) -> None:
    """``instance`` (at ``at``) against one subschema; ``via`` names the
    keyword that applied it, reported when the subschema is ``false``."""
    if schema is True:
        return
    if schema is False:
        _response_error(at, via, "no value is allowed here")

    def fail(keyword: str, reason: str) -> NoReturn:
        _response_error(at, keyword, reason)

    kind = _kind(instance)
    if "type" in schema:
        names = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
        if not any(_is_type(instance, kind, name) for name in names):
            fail("type", f"expected {' or '.join(names)}, got {kind}")
    if "const" in schema and not _equal(instance, schema["const"]):
        fail("const", "not the constant value")
    if "enum" in schema and not any(_equal(instance, option) for option in schema["enum"]):
        fail("enum", "not one of the listed values")
    if kind == "number":
        _assert_number(instance, schema, fail)
    elif kind == "string":
        length = len(instance)  # code points: the instance has no lone surrogates
        if "minLength" in schema and length < schema["minLength"]:
            fail("minLength", f"shorter than {schema['minLength']} characters")
        if "maxLength" in schema and length > schema["maxLength"]:
            fail("maxLength", f"longer than {schema['maxLength']} characters")
    elif kind == "array":
        if "minItems" in schema and len(instance) < schema["minItems"]:
            fail("minItems", f"fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            fail("maxItems", f"more than {schema['maxItems']} items")
        if "items" in schema:
            for index, item in enumerate(instance):
                _assert(item, schema["items"], f"{at}/{index}", via="items")
    elif kind == "object":
        for name in schema.get("required", ()):
            if name not in instance:
                fail("required", f'no member "{name}"')
        properties = schema.get("properties", {})
        for name in _members(instance):
            if name in properties:
                sub, keyword = properties[name], "properties"
            elif "additionalProperties" in schema:
                sub, keyword = schema["additionalProperties"], "additionalProperties"
            else:
                continue
            _assert(instance[name], sub, f"{at}/{_escape(name)}", via=keyword)


def _is_type(instance: Any, kind: str | None, name: str) -> bool:
    if name == "integer":
        return kind == "number" and _is_integer(instance)
    return kind == name


def _assert_number(
    value: float, schema: Mapping[str, Any], fail: Callable[[str, str], Any]
) -> None:
    if "minimum" in schema and value < schema["minimum"]:
        fail("minimum", f"below {schema['minimum']}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        fail("exclusiveMinimum", f"not above {schema['exclusiveMinimum']}")
    if "maximum" in schema and value > schema["maximum"]:
        fail("maximum", f"above {schema['maximum']}")
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        fail("exclusiveMaximum", f"not below {schema['exclusiveMaximum']}")
