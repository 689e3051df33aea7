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
import json
import re
from collections.abc import Mapping
from typing import Any, Final

import rfc8785

from protocol.errors import InvalidArtifact

__all__ = [
    "DIGEST_PREFIX",
    "canonical_digest",
    "canonical_json",
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
    if not plain.keys().isdisjoint(serialised.keys()):
        raise InvalidArtifact("object member given both as a value and serialised")
    names = sorted(serialised, key=_utf16)
    bounds = [_utf16(name) for name in names]
    runs: list[dict[str, Any]] = [{} for _ in range(len(names) + 1)]
    for name, value in plain.items():
        runs[bisect.bisect_left(bounds, _utf16(name))][name] = value
    # One join of all fragments: a serialised value of megabytes is copied once.
    fragments = [b"{"]
    for run, name in zip(runs, names, strict=False):  # the last run follows
        if run:
            fragments += (canonical_json(run)[1:-1], b",")
        fragments += (canonical_string(name), b":", serialised[name], b",")
    if runs[-1]:
        fragments += (canonical_json(runs[-1])[1:-1], b",")
    if len(fragments) > 1:
        fragments.pop()  # the last comma
    fragments.append(b"}")
    return b"".join(fragments)


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
