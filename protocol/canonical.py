"""Canonical JSON (RFC 8785, JCS) and the digests computed over it.

JCS output is: object members sorted by the UTF-16 code units of their names,
no insignificant whitespace, strings with only the mandatory escapes (RFC 8785
s3.2.2.2: ``"``, ``\\``, and U+0000-U+001F, using the short forms
``\\b \\t \\n \\f \\r`` and lowercase ``\\u00xx`` otherwise) and everything else as
UTF-8, and numbers in ECMAScript ``Number.prototype.toString`` form (s3.2.2.3).

Fast path. For the values Baton signs (transcript entries, bundles, decisions,
cards: strings, integers, booleans, nulls) CPython's C JSON encoder with
``sort_keys=True, ensure_ascii=False, separators=(",", ":")`` produces exactly
those bytes, with three exceptions, each detected on the encoded *output*
with ``bytes.translate``/``find`` and one regular expression, all in C:

* a float (``1.0``, ``1e-07``): Python's repr differs from ECMAScript's;
* an integer of 16+ digits: outside I-JSON's exact range (RFC 7493 s2.2),
  JCS must refuse or round it;
* a character outside the BMP together with one in U+E000-U+FFFF: Python
  sorts keys by code point, JCS by UTF-16 code unit (s3.2.3), and the two
  orders differ only when such a pair meets at the first differing position
  of two keys (a supplementary character is a surrogate pair D800-DFFF in
  UTF-16, below U+E000 but above it by code point). Either character alone,
  in keys or values, sorts and serialises the same on both paths.

When any of these *might* be present (the check can fire on text inside a
string; it never misses) the value is canonicalised by the reference
implementation, ``rfc8785`` (Trail of Bits), which is pure Python and slower.
A Hypothesis property test checks the two paths agree on arbitrary JSON.

Measured on this class of machine (``bench/bench_core.py``, median of 7 rounds,
one core, CPython 3.11, a JSON-RPC ``tools/call`` with nested arguments; see
``bench/RESULTS.md`` for the full table):

=================================  ========  ==========
message                            4 KiB     256 KiB
=================================  ========  ==========
``canonical_json`` (this module)   64 us     4.8 ms
``rfc8785`` reference              290 us    19.7 ms
sorted ``json.dumps`` (the floor)  45 us     3.5 ms
=================================  ========  ==========

The gateway's hot path does not canonicalise message bodies at all: HTTP
signatures cover the exact bytes that travelled (``Content-Digest``) and
transcript entries record their digest. JCS is used for Baton's own, small
artifacts, where the fast path costs a few microseconds.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import pydantic_core
import rfc8785

from protocol.errors import InvalidArtifact

__all__ = [
    "DIGEST_PREFIX",
    "canonical_digest",
    "canonical_each",
    "canonical_json",
    "canonical_members",
    "canonical_object",
    "canonical_string",
    "digest",
    "is_digest",
    "require_plain_json",
]

DIGEST_PREFIX: Final = "sha256:"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
# Number tokens that need the reference path: a fraction or exponent (every
# float Python writes has one), or 16+ digits (beyond I-JSON's exact range).
# A token starts the text or follows '":' (an object member), "[" or "," (the
# compact separators leave no spaces). Text inside strings can match too, which
# only costs the slow path; a number token never escapes it.
_SLOW_DIGITS = rb"-?[0-9]+(?:[.eE]|(?<=[0-9]{16}))"
_SLOW_AT_START = re.compile(_SLOW_DIGITS)
# The scan maps "[" and "," to ":" first, so that the pattern starts with one
# literal byte, which the regex engine skips to much faster than to a class
# (2.5 MB of base64 in an export: 2 ms instead of 5.5 ms).
_SEPARATORS_AS_COLON: Final = bytes.maketrans(b"[,", b"::")
_SLOW_AFTER_SEPARATOR = re.compile(rb":" + _SLOW_DIGITS)
# UTF-8 lead bytes of 4-byte sequences, i.e. characters outside the BMP.
_BELOW_ASTRAL_LEADS: Final = bytes(range(0xF0))
# The lead bytes of U+E000-U+FFFF (EE 80 80 - EF BF BF); as continuation bytes
# are 80-BF, EE and EF occur in UTF-8 only as these leads.
_HIGH_BMP_LEADS: Final = (b"\xee", b"\xef")
# Printable ASCII that RFC 8785 s3.2.2.2 writes as it is (no escape).
_PLAIN_ASCII: Final = bytes(c for c in range(0x20, 0x7F) if c not in b'"\\')
# One encoder for every call (json.dumps would build one per call, ~0.7 us):
# stateless between calls (the circular-reference markers are per call).
_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
)


def _needs_reference(text: str, encoded: bytes) -> bool:
    return (
        not text.isascii()
        and (_HIGH_BMP_LEADS[0] in encoded or _HIGH_BMP_LEADS[1] in encoded)
        and bool(encoded.translate(None, _BELOW_ASTRAL_LEADS))
    ) or _has_slow_number(encoded)


def _has_slow_number(encoded: bytes) -> bool:
    """See ``_SLOW_DIGITS``. One C-level scan; candidates are rare (a ":" must
    be preceded by a quote, which a digest's "sha256:" is not)."""
    if _SLOW_AT_START.match(encoded):
        return True
    for match in _SLOW_AFTER_SEPARATOR.finditer(encoded.translate(_SEPARATORS_AS_COLON)):
        start = match.start()
        if encoded[start] != 0x3A or encoded[start - 1] == 0x22:  # not ":" or '":'
            return True
    return False


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of a JSON value (``dict`` with ``str`` keys, ``list``,
    ``str``, ``int``, ``float``, ``bool``, ``None``).

    Raises :class:`InvalidArtifact` for values JCS cannot represent: NaN and
    infinities, integers beyond +/-2**53 (and integral floats that would print
    as such), lone surrogates, non-JSON types.

    Precondition: mapping keys are ``str``. Values parsed from JSON and dumped
    from our models always satisfy it; checking it here would cost a walk of
    the whole value (~90 us per 4 KiB). Entry points that take JSON built in
    Python code (:func:`protocol.capsule.seal_capsule_at`) check it themselves
    with :func:`require_plain_json`.
    """
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidArtifact(f"value is not canonicalisable JSON: {exc}") from exc
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArtifact("lone surrogate in a string") from exc
    if _needs_reference(text, encoded):
        _refuse_inexact_floats(value)
        try:
            return bytes(rfc8785.dumps(value))
        except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
            raise InvalidArtifact(f"value is not canonicalisable JSON: {exc}") from exc
    return encoded


# --------------------------------------------------------------------------- many values
#
# A handoff bundle holds a thousand transcript entries and a thousand message
# bodies, each hashed on its own, so it is serialised as many values.
# :func:`canonical_json` costs ~8.5 us per 650-byte body: ~6 us in the stdlib
# encoder (which sorts members in C), the rest its scans and per-call set-up.
# pydantic-core's serialiser (Rust, already a dependency through pydantic)
# writes the same bytes in ~1.2 us, but in the members' insertion order. So
# :func:`canonical_each` copies each value with every object's members sorted
# (in Python, ~2.8 us: one dict per object, the leaves shared), serialises the
# copy with pydantic-core, and runs the checks of :func:`canonical_json` once
# over all the values: 4.4 ms for the 1,000 bodies of ``bench/bench_handoff.py``
# against 8.7 ms.
#
# The two outputs are the same bytes because, for the values the copy admits
# (dicts with ``str`` keys, lists, ``str``, ``int``, ``bool``, ``None``; no
# floats, no subclasses), both write ``null``/``true``/``false``, integers in
# decimal, no whitespace, and strings with exactly the escapes of RFC 8785
# s3.2.2.2 (lowercase ``\u00xx``, UTF-8 otherwise; the tests compare the two
# on every code point). What is left is what :func:`canonical_json` itself
# refers to the reference: integers of 16+ digits, and code-point order that
# is not UTF-16 order (a non-BMP and a U+E000-U+FFFF character). Anything
# else, or anything either scan flags, goes through :func:`canonical_json`.

_LEAVES: Final = frozenset({str, int, bool, type(None)})


class _NotPlain(Exception):
    """A value :func:`_sorted_copy` does not admit (it goes the stdlib way)."""


def _sorted_copy(value: Any) -> Any:
    """``value`` with every object's members in code-point order (objects and
    arrays copied, leaves shared). Raises :class:`_NotPlain` for a float, a
    non-``str`` key, a tuple or any other type."""
    kind = type(value)
    if kind is dict:
        try:
            names = sorted(value)
        except TypeError:
            raise _NotPlain from None
        copy = {}
        for name in names:
            if type(name) is not str:
                raise _NotPlain
            item = value[name]
            copy[name] = item if type(item) in _LEAVES else _sorted_copy(item)
        return copy
    if kind is list:
        return [item if type(item) in _LEAVES else _sorted_copy(item) for item in value]
    if kind in _LEAVES:
        return value
    raise _NotPlain


# For :func:`_flagged`: separators to ":", digits and "-" to "0".
_DIGIT_RUNS: Final = bytes.maketrans(b"[,-123456789", b"::0000000000")
_LONG_RUN: Final = b"0" * 16
_COLON_RUN: Final = b":" + _LONG_RUN


def _mixes_planes(encoded: bytes) -> bool:
    """A non-BMP and a U+E000-U+FFFF character (see :func:`_needs_reference`)."""
    return (
        not encoded.isascii()
        and (_HIGH_BMP_LEADS[0] in encoded or _HIGH_BMP_LEADS[1] in encoded)
        and bool(encoded.translate(None, _BELOW_ASTRAL_LEADS))
    )


def _flagged(encoded: bytes) -> bool:
    """The checks of :func:`canonical_json`, for bytes without floats:
    :func:`_mixes_planes`, or a number token of 16+ digits. Such a token
    starts the text or follows ":", "[" or ",", so after the translation it
    is a run of 16+ "0" at the start or after ":" (conservative: text in
    strings can match too, and "-" counts as a digit)."""
    if _mixes_planes(encoded):
        return True
    runs = encoded.translate(_DIGIT_RUNS)
    return runs.startswith(_LONG_RUN) or _COLON_RUN in runs


def _fast_form(value: Any) -> bytes | None:
    """pydantic-core's bytes for the sorted copy, unscanned; ``None`` if the
    copy or the serialiser refuses (a lone surrogate, nesting too deep)."""
    try:
        return pydantic_core.to_json(_sorted_copy(value))
    except (_NotPlain, RecursionError, ValueError, pydantic_core.PydanticSerializationError):
        return None


def canonical_each(values: Iterable[Any]) -> list[bytes]:
    """``[canonical_json(value) for value in values]``: the same bytes, and
    the same error for a value :func:`canonical_json` refuses; see the
    comment above for how and why it is faster."""
    items = list(values)
    return _checked(items, [_fast_form(value) for value in items])


def _checked(items: Sequence[Any], forms: list[bytes | None]) -> list[bytes]:
    """``forms``, each ``None`` or pydantic-core's bytes for ``items[i]`` (its
    objects' members in RFC 8785 or code-point order), with every one the
    checks of :func:`canonical_json` might flag replaced by its bytes."""
    for index in _suspects(forms):
        form = forms[index]
        if form is not None and _flagged(form):
            forms[index] = None
    return [
        canonical_json(value) if form is None else form
        for value, form in zip(items, forms, strict=True)
    ]


def _suspects(forms: Sequence[bytes | None]) -> Iterable[int]:
    """The indexes of ``forms`` that :func:`_flagged` might flag, found with
    its scans over all of them joined by ",": there every number still
    follows a separator, and the characters of each are all there, so a form
    the scans would flag on its own is flagged here; a long run of digits is
    found where it is, the mix of planes (rare) makes every form a suspect."""
    joined = b",".join(form or b"" for form in forms)
    if _mixes_planes(joined):
        return range(len(forms))
    runs = joined.translate(_DIGIT_RUNS)
    starts = list(itertools.accumulate((len(form or b"") + 1 for form in forms), initial=0))
    found = [0] if runs.startswith(_LONG_RUN) else []
    at = runs.find(_COLON_RUN)
    while at != -1:
        found.append(bisect.bisect_right(starts, at + 1) - 1)  # where the digits are
        at = runs.find(_COLON_RUN, at + 1)
    return found


def _utf16(name: str) -> bytes:
    """The sort key of s3.2.3 (big-endian code units compare like the units)."""
    return name.encode("utf-16-be", "surrogatepass")


def canonical_object(plain: Mapping[str, Any], serialised: Mapping[str, bytes]) -> bytes:
    """RFC 8785 bytes of the object with the members of ``plain`` and those of
    ``serialised``, whose values are given as RFC 8785 bytes already: a caller
    that hashes parts of a document, and signs the whole, serialises each part
    once (``protocol/bundle.py``).

    Exact by s3.2.3: an object's canonical form is its members sorted by the
    UTF-16 code units of their names, each ``name:value`` in canonical form,
    joined by commas, in braces. Each run of ``plain`` members that falls
    between two ``serialised`` names (in that order) is canonicalised as one
    object and its members are spliced in between. The tests check the result
    against :func:`canonical_json` of the whole, adversarial names included.

    Preconditions: the two sets of names are disjoint (else
    :class:`InvalidArtifact`), and every ``serialised`` value is the RFC 8785
    form of some JSON value (the output is canonical only if they are).
    """
    fragments, _ = canonical_members(plain, {name: (value,) for name, value in serialised.items()})
    return b"".join(fragments)


def canonical_members(
    plain: Mapping[str, Any], serialised: Mapping[str, Sequence[bytes]]
) -> tuple[list[bytes], dict[str, tuple[int, int]]]:
    """:func:`canonical_object` as the byte strings it joins, each value of
    ``serialised`` given as fragments (whose concatenation is its RFC 8785
    form, joined by the caller in the same single copy: a bundle's thousand
    entries need no array of their own). Also, for each name of
    ``serialised``, the span ``(i, j)`` of fragments that its member and one
    comma next to it take: without ``fragments[i:j]`` the join is the
    canonical form of the object without that member (s3.2.3: the remaining
    members, in the same order, comma-separated).
    """
    if not plain.keys().isdisjoint(serialised.keys()):
        raise InvalidArtifact("object member given both as a value and serialised")
    names = sorted(serialised, key=_utf16)
    bounds = [_utf16(name) for name in names]
    runs: list[dict[str, Any]] = [{} for _ in range(len(names) + 1)]
    for name, value in plain.items():
        runs[bisect.bisect_left(bounds, _utf16(name))][name] = value
    fragments = [b"{"]
    spans: dict[str, tuple[int, int]] = {}
    for run, name in zip(runs, names, strict=False):  # the last run follows
        if run:
            fragments += (canonical_json(run)[1:-1], b",")
        start = len(fragments)
        fragments += (canonical_string(name), b":", *serialised[name], b",")
        spans[name] = (start, len(fragments))
    if runs[-1]:
        fragments += (canonical_json(runs[-1])[1:-1], b",")
    if len(fragments) > 1:
        fragments.pop()  # the last comma
        if names and not runs[-1]:  # the last member is serialised: it lost its comma
            start, end = spans[names[-1]]
            spans[names[-1]] = (start - 1, end - 1) if start > 1 else (start, end - 1)
    fragments.append(b"}")
    return fragments, spans


def canonical_string(text: str) -> bytes:
    """RFC 8785 bytes of a string (s3.2.2.2), as :func:`canonical_json` writes
    it, without its checks for numbers and key order (a string has neither).

    Printable ASCII other than ``"`` and ``\\`` needs no escape, so such a
    string (base64url, say: a sealed bundle's megabytes of ciphertext) is
    checked with one C-level ``translate`` and quoted as it is.
    """
    if text.isascii():
        raw = text.encode("ascii")
        if not raw.translate(None, _PLAIN_ASCII):
            return b"".join((b'"', raw, b'"'))
    try:
        return _ENCODER.encode(text).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArtifact("lone surrogate in a string") from exc


_MAX_EXACT: Final = 2**53


def _refuse_inexact_floats(value: Any) -> None:
    """Refuse integral floats in [2**53, 1e21): ECMAScript prints them as plain
    digits (``1e16`` -> ``10000000000000000``), which parse back as an integer
    JCS cannot represent, so the canonical form would not survive a round trip
    through any verifier that re-canonicalises (I-JSON, RFC 7493 s2.2)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is float:
            if item.is_integer() and _MAX_EXACT <= abs(item) < 1e21:
                raise InvalidArtifact(f"float {item!r} has no exact I-JSON form")
        elif type(item) is dict:
            stack.extend(item.values())
        elif type(item) in (list, tuple):
            stack.extend(item)


def require_plain_json(value: Any) -> None:
    """Raise :class:`InvalidArtifact` unless ``value`` survives a JSON round
    trip unchanged (``str`` keys only, no tuples-as-lists surprises, no NaN)."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArtifact(f"value is not JSON: {exc}") from exc
    if json.loads(text) != value:  # noqa: TID251 - our own output, compared, not trusted
        raise InvalidArtifact("value changes in a JSON round trip (non-string keys?)")


def digest(data: bytes) -> str:
    """``sha256:<64 lowercase hex>`` of ``data``."""
    return DIGEST_PREFIX + hashlib.sha256(data).hexdigest()


def canonical_digest(value: Any) -> str:
    """:func:`digest` of :func:`canonical_json`."""
    return digest(canonical_json(value))


def is_digest(value: object) -> bool:
    """True for a well-formed ``sha256:<hex>`` string."""
    return isinstance(value, str) and _DIGEST.match(value) is not None
