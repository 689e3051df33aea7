"""JSONTestSuite (nst/JSONTestSuite) against ``keys.strictjson.loads``.

``keys.strictjson`` is the one parser for bytes from outside, signed data
included. Expectations:

* ``n_`` files (must reject): every one raises a ``keys.errors`` error;
* ``y_`` files (must accept): every one parses, except the ones with
  duplicate object member names, which our policy rejects (RFC 7493 s2.3,
  threat J15). Which files those are is decided by an independent oracle
  (the standard-library parser with a duplicate-detecting hook) and pinned;
* ``i_`` files (implementation-defined): recorded and printed; the only hard
  requirement is no crash (a ``keys.errors`` error or a value). Where the
  module's own documented rules decide the case (UTF-8 without BOM, no lone
  surrogates, no numbers that overflow to infinity, depth <= 64), an
  independent oracle checks that we follow them;
* depth: ``n_structure_100000_opening_arrays`` and a generated 65-deep
  document raise :class:`TooDeep`; 64 deep parses.

``test_transform/`` (values whose meaning parsers disagree on) is run too:
what parses is printed; duplicates must be rejected there as well.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from keys import strictjson
from keys.errors import KeysError, MalformedInput, TooDeep
from tests.vectors._util import MISSING, vectors_path

pytestmark = pytest.mark.vectors

SUITE = "json_test_suite"

#: y_ files that our duplicate-name policy rejects (checked against the oracle).
Y_DUPLICATE_KEYS = frozenset(
    {"y_object_duplicated_key.json", "y_object_duplicated_key_and_value.json"}
)


def _folder(name: str) -> Path | None:
    path = vectors_path(SUITE, name)
    return path if path is not None and path.is_dir() else None


def _names(folder: str, prefix: str = "") -> list[str]:
    path = _folder(folder)
    return (
        [] if path is None else sorted(p.name for p in path.iterdir() if p.name.startswith(prefix))
    )


def _params(prefix: str) -> list[Any]:
    if _folder("test_parsing") is None:
        return [MISSING]
    return [pytest.param(name, id=name) for name in _names("test_parsing", prefix)]


def _read(folder: str, name: str) -> bytes:
    path = _folder(folder)
    assert path is not None
    return (path / name).read_bytes()


@cache
def parse(folder: str, name: str) -> tuple[Any, KeysError | None]:
    """``(value, None)`` or ``(None, error)``; anything else propagates (a crash)."""
    try:
        return strictjson.loads(_read(folder, name)), None
    except KeysError as exc:
        return None, exc


# --------------------------------------------------------------------------- oracles


class _Duplicate(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise _Duplicate
    return dict(pairs)


def _stdlib(data: bytes, hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    return json.loads(data.decode("utf-8"), object_pairs_hook=hook)


def has_duplicate_keys(data: bytes) -> bool:
    """Independent oracle: the standard-library parser with a strict pairs hook."""
    try:
        _stdlib(data, _no_duplicates)
    except _Duplicate:
        return True
    except (ValueError, RecursionError):
        return False
    return False


def _walk(value: Any) -> Iterator[tuple[Any, int]]:
    """Every node with its nesting depth (iterative: i_ files nest 500 deep)."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        if isinstance(node, dict):
            stack.extend((key, depth + 1) for key in node)
            stack.extend((item, depth + 1) for item in node.values())
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)


def _depth(value: Any) -> int:
    """Containers nested: ``[]`` is 1, ``[[]]`` is 2, a scalar 0."""
    return max((d + 1 for node, d in _walk(value) if isinstance(node, dict | list)), default=0)


def documented_rejection(data: bytes) -> str | None:
    """Why ``keys.strictjson``'s documented rules reject ``data``, computed
    without it; ``None`` when the rules do not decide."""
    if data.startswith(b"\xef\xbb\xbf"):
        return "byte-order mark"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    try:
        value = _stdlib(data)
    except (ValueError, RecursionError):
        return None
    for item, _ in _walk(value):
        if isinstance(item, float) and not math.isfinite(item):
            return "number overflows to infinity"
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "lone surrogate"
    if _depth(value) > strictjson.DEFAULT_MAX_DEPTH:
        return "too deep"
    return None


# --------------------------------------------------------------------------- n_ / y_ / i_


@pytest.mark.parametrize("name", _params("n_"))
def test_n_rejected(vectors_dir: object, name: str) -> None:
    value, error = parse("test_parsing", name)
    assert error is not None, f"{name} must be rejected, parsed as {value!r:.80}"


@pytest.mark.parametrize("name", _params("y_"))
def test_y_accepted_except_duplicate_names(vectors_dir: object, name: str) -> None:
    data = _read("test_parsing", name)
    value, error = parse("test_parsing", name)
    if name in Y_DUPLICATE_KEYS:
        assert has_duplicate_keys(data)
        assert isinstance(error, MalformedInput), error
        assert "duplicate" in error.detail
    else:
        assert not has_duplicate_keys(data)
        assert error is None, f"{name}: {error!r}"
        assert value == _stdlib(data)


@pytest.mark.parametrize("name", _params("i_"))
def test_i_no_crash_and_documented_rules(vectors_dir: object, name: str) -> None:
    _, error = parse("test_parsing", name)  # a crash would have propagated
    reason = documented_rejection(_read("test_parsing", name))
    if reason is not None:
        assert error is not None, f"{name}: accepted despite {reason}"
    if reason == "too deep":
        assert isinstance(error, TooDeep), error


def test_parsing_summary(vectors_dir: object) -> None:
    rows = {prefix: _names("test_parsing", prefix) for prefix in ("y_", "n_", "i_")}
    rejected = {
        prefix: [n for n in names if parse("test_parsing", n)[1] is not None]
        for prefix, names in rows.items()
    }
    i_errors = Counter(
        type(error).__name__ for n in rows["i_"] if (error := parse("test_parsing", n)[1])
    )
    i_accepted = sorted(set(rows["i_"]) - set(rejected["i_"]))
    total = sum(len(names) for names in rows.values())
    print()
    print(
        f"json_test_suite/test_parsing: {total} files: "
        f"y {len(rows['y_'])}: {len(rows['y_']) - len(rejected['y_'])} accepted, "
        f"{len(rejected['y_'])} rejected (duplicate names: {', '.join(rejected['y_'])}); "
        f"n {len(rows['n_'])}: {len(rejected['n_'])} rejected; "
        f"i {len(rows['i_'])}: {len(i_accepted)} accepted, {len(rejected['i_'])} rejected "
        f"({', '.join(f'{k} {v}' for k, v in sorted(i_errors.items()))})"
    )
    print(f"  i_ accepted: {', '.join(i_accepted)}")
    for name in rejected["i_"]:
        error = parse("test_parsing", name)[1]
        assert error is not None
        print(f"  {name}: {type(error).__name__}: {error.detail}")
    assert set(rejected["y_"]) == Y_DUPLICATE_KEYS
    assert rejected["n_"] == rows["n_"]
    assert total == 318


# --------------------------------------------------------------------------- depth


def _nested(depth: int, shape: str) -> Any:
    """A value nested exactly ``depth`` deep: arrays, objects, or alternating."""
    value: Any = [] if shape != "objects" else {}
    for level in range(1, depth):
        as_object = shape == "objects" or (shape == "mixed" and level % 2 == 1)
        value = {"a": value} if as_object else [value]
    return value


def test_depth_limit(vectors_dir: object) -> None:
    _, error = parse("test_parsing", "n_structure_100000_opening_arrays.json")
    assert isinstance(error, TooDeep), error
    limit = strictjson.DEFAULT_MAX_DEPTH
    assert limit == 64
    for shape in ("arrays", "objects"):
        at_limit, over = _nested(limit, shape), _nested(limit + 1, shape)
        assert (_depth(at_limit), _depth(over)) == (limit, limit + 1)
        assert strictjson.loads(json.dumps(at_limit).encode()) == at_limit, shape
        with pytest.raises(TooDeep):
            strictjson.loads(json.dumps(over).encode())


def test_depth_limit_alternating_arrays_and_objects() -> None:
    """PRODUCT BUG (reported, not worked around): ``strictjson._depth_exceeds``
    peels one level per round with ``.replace("[]", "").replace("{}", "")``;
    when arrays and objects alternate, the second replace also removes the
    ``{}`` that the first one just emptied, so each round peels two levels and
    documents up to 128 deep pass the 64 cap (threat X03)."""
    limit = strictjson.DEFAULT_MAX_DEPTH
    at_limit = _nested(limit, "mixed")
    assert _depth(at_limit) == limit
    assert strictjson.loads(json.dumps(at_limit).encode()) == at_limit
    for depth in (limit + 1, 2 * limit):
        over = _nested(depth, "mixed")
        assert _depth(over) == depth
        with pytest.raises(TooDeep):
            strictjson.loads(json.dumps(over).encode())


# --------------------------------------------------------------------------- transform


def test_transform_folder(vectors_dir: object) -> None:
    names = _names("test_transform")
    if not names:
        pytest.skip("json_test_suite/test_transform is absent")
    parsed: list[str] = []
    rejected: list[str] = []
    for name in names:
        error = parse("test_transform", name)[1]
        (parsed if error is None else rejected).append(name)
        data = _read("test_transform", name)
        if has_duplicate_keys(data):
            assert isinstance(error, MalformedInput), name
        if documented_rejection(data) is not None:
            assert error is not None, name
    print()
    print(
        f"json_test_suite/test_transform: {len(names)} files: {len(parsed)} parse, "
        f"{len(rejected)} rejected ({', '.join(rejected)})"
    )
