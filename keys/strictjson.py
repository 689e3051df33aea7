"""The one JSON parser for bytes that come from outside (RFC 8259, I-JSON RFC 7493).

Stricter than :func:`json.loads` in exactly the ways that matter for signed
data and for a proxy that must see what the upstream sees:

* input must be UTF-8 without a byte-order mark (RFC 8259 s8.1);
* duplicate object member names are rejected, never "last one wins"
  (RFC 7493 s2.3; threat J15 and the JSON interoperability attacks);
* ``NaN``, ``Infinity`` and numbers that overflow to infinity are rejected;
* lone UTF-16 surrogates (``"\\ud800"``) are rejected (RFC 7493 s2.1);
* size is capped before parsing and nesting depth is capped (threats X02/X03).

Cost (``bench/RESULTS.md``): 87 us for a 4 KiB JSON-RPC message against 24 us
for ``json.loads``, 10.6 ms against 3.4 ms at 256 KiB. The duplicate check is
one dict build per object in a Python hook; the depth check strips strings and
peels bracket levels with C-level ``bytes.translate``/``replace`` calls (and a
regular expression where there are escapes), and is skipped when the text has
no more opening brackets than the limit. :func:`nesting_exceeds` is that check
on its own, for callers that can show the rest of the parse would pass.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from keys.errors import MalformedInput, TooDeep, TooLarge

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_DEPTH", "loads", "loads_object", "nesting_exceeds"]

DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_DEPTH = 64

# Inside valid JSON, backslashes occur only in strings, and once escapes are
# gone a string is '"' + non-quotes + '"'. Every pass runs in C, on UTF-8
# bytes (an escape is a backslash and one ASCII byte).
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_SIMPLE_STRING = re.compile(rb'"[^"]*"')
# Every byte but quotes and brackets, for bytes.translate(None, delete).
_NOT_QUOTE_OR_BRACKET = bytes(code for code in range(256) if chr(code) not in '"[]{}')
# Brackets as parentheses: once strings are gone, what is left nests exactly
# as the brackets did (the text parsed, so kinds match), and one
# ``replace(b"()", b"")`` per round peels exactly one level.
_BRACKETS_AS_PARENS = bytes.maketrans(b"[{]}", b"(())")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
#: From this many characters, brackets are counted on the skeleton (one pass
#: over the text) rather than with two ``str.count`` calls.
_LARGE = 1 << 16


class _Duplicate(ValueError):
    pass


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Duplicate("duplicate object member name")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number overflows to infinity")
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs_hook,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
    strict=True,
)


def _depth_exceeds(text: str, max_depth: int, data: bytes | None = None) -> bool:
    """True when brackets nest deeper than ``max_depth``.

    Only called on text that already parsed, so strings are well formed and
    brackets balance (``data``: the same text as UTF-8, when the caller has
    it). Text with no more opening brackets than ``max_depth`` skips all of
    this. Otherwise: drop escapes, keep only quotes and brackets, drop the
    strings, then peel one level of brackets per round.

    Dropping the strings: with escapes gone, quotes alternate open/close.
    Deleting two adjacent quotes (``""``, nothing between them once all else
    is dropped) merges the segments on either side, which are both inside
    strings or both outside, so what lies outside strings is unchanged; then
    ``"[^"]*"`` pairs the remaining quotes in order and removes what is inside.
    Most strings hold no brackets and go in the C-level ``replace``.
    """
    if len(text) < _LARGE and text.count("[") + text.count("{") <= max_depth:
        return False
    if data is None:
        data = text.encode("utf-8", "surrogatepass")
    return _bytes_nesting_exceeds(data, max_depth)


def _bytes_nesting_exceeds(raw: bytes, max_depth: int) -> bool:
    """:func:`_depth_exceeds` on UTF-8 bytes (the bracket count is taken on
    the skeleton: one pass over the text, not two)."""
    if b"\\" in raw:  # a memchr; the regular expression scans much slower
        raw = _ESCAPE.sub(b"", raw)
    skeleton = raw.translate(None, _NOT_QUOTE_OR_BRACKET)
    if skeleton.count(b"[") + skeleton.count(b"{") <= max_depth:
        return False
    brackets = _SIMPLE_STRING.sub(b"", skeleton.replace(b'""', b"")).translate(_BRACKETS_AS_PARENS)
    for _ in range(max_depth):
        if not brackets:
            return False
        # One pass removes exactly one level: bytes.replace does not rescan
        # what it produced, so "(())" becomes "()", not "" (with two kinds
        # of bracket, two chained replace calls would peel an array and its
        # enclosing object in one round: hence the single kind).
        brackets = brackets.replace(b"()", b"")
    return bool(brackets)


def nesting_exceeds(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> bool:
    """True when the brackets of ``data`` nest deeper than ``max_depth``,
    exactly as :func:`loads` decides it (its :class:`TooDeep`).

    Precondition: ``data`` is a JSON text (UTF-8) that :func:`loads` parses,
    or would but for its depth. For callers that have established this
    otherwise and skip the parse (``protocol/bundle.py``: a payload that is
    the canonical form of what it validated to)."""
    return _bytes_nesting_exceeds(data, max_depth)


def loads(
    data: bytes | str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """Parse one JSON text under the rules in the module docstring.

    Raises :class:`TooLarge`, :class:`TooDeep` or :class:`MalformedInput`.
    """
    if len(data) > max_bytes:
        raise TooLarge(f"JSON text of {len(data)} bytes exceeds cap {max_bytes}")
    if isinstance(data, bytes):
        if data.startswith(b"\xef\xbb\xbf"):
            raise MalformedInput("JSON text starts with a byte-order mark")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedInput("JSON text is not valid UTF-8") from exc
    else:
        text = data
    # Whitespace is looked for only where there is some (a regular
    # expression call per side costs more than many a small message's parse).
    start = _skip_ws(text, 0) if text[:1] in _WHITESPACE else 0
    try:
        # JSONDecoder.raw_decode, without its Python frame.
        value, end = _SCAN(text, start)
    except StopIteration as err:
        raise MalformedInput(
            f"invalid JSON: {json.JSONDecodeError('Expecting value', text, err.value)}"
        ) from None
    except RecursionError as exc:
        raise TooDeep("JSON nesting exceeds the parser's recursion limit") from exc
    except _Duplicate as exc:
        raise MalformedInput("duplicate object member name") from exc
    except ValueError as exc:
        raise MalformedInput(f"invalid JSON: {exc}") from exc
    if end != len(text) and _skip_ws(text, end) != len(text):
        raise MalformedInput("trailing data after JSON text")
    if (len(text) >= _LARGE or text.count("[") + text.count("{") > max_depth) and _depth_exceeds(
        text, max_depth, data if isinstance(data, bytes) else None
    ):
        raise TooDeep(f"JSON nesting exceeds {max_depth}")
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):  # a fast search first
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MalformedInput("lone UTF-16 surrogate in a string") from exc
    return value


def loads_object(
    data: bytes | str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> dict[str, Any]:
    """Like :func:`loads` but the top-level value must be an object."""
    value = loads(data, max_bytes=max_bytes, max_depth=max_depth)
    if not isinstance(value, dict):
        raise MalformedInput("JSON text is not an object")
    return value


_WS = re.compile(r"[ \t\n\r]*")
_WHITESPACE = " \t\n\r"
#: What JSONDecoder.raw_decode calls (set by JSONDecoder.__init__; not in the stubs).
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _skip_ws(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos
