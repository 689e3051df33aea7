"""A small, strict RFC 8941 Structured Field Values parser and serialiser.

Scope: exactly what RFC 9421 ``Signature-Input``/``Signature`` and RFC 9530
``Content-Digest`` need.

* Parsing (RFC 8941 s4.2): a Dictionary (s4.2.2) whose members are Items
  (s4.2.3) or Inner Lists (s4.2.1.2), with Parameters (s4.2.3.2) on both, and
  every RFC 8941 bare item type: Integer and Decimal (s4.2.4), String
  (s4.2.5), Token (s4.2.6), Byte Sequence (s4.2.7) and Boolean (s4.2.8).
  :func:`parse_inner_list` also parses one Inner List with its Parameters, the
  text that follows ``label=`` in ``Signature-Input``.
* Serialising (RFC 8941 s4.1): the same types, so the ``@signature-params``
  line of an RFC 9421 signature base and our outgoing fields are canonical.

Each parsing step follows the RFC 8941 s4.2 algorithm it names, including the
whitespace rules: only SP around Inner List members, after ``;`` and at the
start and end of the field; SP or HTAB (OWS) around Dictionary commas. Input
must be ASCII (s4.2 step 1).

Intentional divergences, all towards rejection:

* a Dictionary key or a Parameter key that appears twice fails parsing
  instead of "last one wins" (s4.2.2 step 2.4, s4.2.3.2 step 2.7): two
  readers must never disagree about which ``created`` or which label counts;
* Byte Sequences must be canonical standard base64: padding may be absent
  (s4.2.7 allows that), but partial padding and non-zero pad bits are refused
  (s4.2.7 says SHOULD NOT fail; we do, so one field value has one meaning);
* RFC 9651's Date (``@``) and Display String (``%"``) types are not RFC 8941
  types and fail parsing, as RFC 8941 s4.2.3.1 step 6 requires;
* size caps (field length, Dictionary members, Inner List members) raise
  :class:`~keys.errors.TooLarge` before or during parsing (threat X08).

Every failure raises :class:`~keys.errors.MalformedInput` (or its subclass
:class:`~keys.errors.TooLarge`). The scanner works on ``str`` offsets with
module-level compiled patterns, so parsing a typical ``Signature-Input``
costs a few microseconds.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Final, NamedTuple, TypeAlias

from keys.b64 import b64decode_std, b64encode_std
from keys.errors import MalformedInput, TooLarge

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "BareItem",
    "InnerList",
    "Item",
    "Member",
    "Params",
    "Token",
    "parse_dictionary",
    "parse_inner_list",
    "serialize_bare_item",
    "serialize_dictionary",
    "serialize_inner_list",
    "serialize_item",
    "serialize_key",
    "serialize_params",
]

DEFAULT_MAX_LENGTH: Final = 8192
_MAX_INT: Final = 999_999_999_999_999


class Token(str):
    """An RFC 8941 s3.3.4 Token; a distinct type so it never passes for a String."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Token({str.__repr__(self)})"


#: Integer, Decimal, String, Token (a ``str`` subclass), Byte Sequence, Boolean.
BareItem: TypeAlias = int | Decimal | str | bytes | bool
Params: TypeAlias = dict[str, BareItem]


class Item(NamedTuple):
    """RFC 8941 s3.3: a bare item with its Parameters."""

    value: BareItem
    params: Params


class InnerList(NamedTuple):
    """RFC 8941 s3.1.1: an ordered list of Items with Parameters of its own."""

    items: list[Item]
    params: Params


Member: TypeAlias = Item | InnerList

# RFC 8941 s3.1.2 key, s3.3.4 token (tchar plus ":" and "/"), s4.2.4 number,
# s4.2.5 string content (printable ASCII with \" and \\ escapes), s4.2.7 base64.
_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_NUMBER = re.compile(r"(-?)([0-9]+)(?:\.([0-9]*))?")
_STRING = re.compile(r'"((?:[ !#-\[\]-~]|\\["\\])*+)"')
_UNESCAPE = re.compile(r'\\(["\\])')
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")
# Fast paths for the shapes RFC 9421 senders emit; each accepts a subset of
# what the general algorithm accepts and yields the same result for it:
# an inner list of escape-free strings without parameters, single-SP separated
# (s4.2.1.2), and a parameter whose value is an integer or an escape-free
# string (s4.2.3.2).
_SIMPLE_INNER = re.compile(r'\((?:"[ !#-\[\]-~]*"(?: "[ !#-\[\]-~]*")*)?\)')
_SIMPLE_CONTENT = re.compile(r'"([ !#-\[\]-~]*)"')
_SIMPLE_PARAM = re.compile(
    r';([a-z*][a-z0-9_\-.*]*)=(?:(-?[0-9]{1,15})(?![0-9.])|"([ !#-\[\]-~]*)")'
)
_TOKEN_START: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz*")
_DIGITS: Final = frozenset("0123456789")
_OWS: Final = " \t"
_DECIMAL_CONTEXT: Final = Context(prec=40, rounding=ROUND_HALF_EVEN)
_THOUSANDTH: Final = Decimal("0.001")


def _fail(what: str, pos: int) -> MalformedInput:
    return MalformedInput(f"structured field: {what} at offset {pos}")


# --------------------------------------------------------------------------- parsing


def _skip_sp(s: str, i: int, n: int) -> int:
    while i < n and s[i] == " ":
        i += 1
    return i


def _skip_ows(s: str, i: int, n: int) -> int:
    while i < n and s[i] in _OWS:
        i += 1
    return i


def _parse_number(s: str, i: int) -> tuple[int | Decimal, int]:
    """RFC 8941 s4.2.4 Parsing an Integer or Decimal.

    Matching the longest run and then applying the length rules gives the
    same accept/reject result as the character-at-a-time algorithm.
    """
    m = _NUMBER.match(s, i)
    if m is None:
        raise _fail("number without digits", i)
    sign, whole, frac = m.group(1, 2, 3)
    if frac is None:
        if len(whole) > 15:
            raise _fail("integer longer than 15 digits", i)
        value = int(whole)
        return (-value if sign else value), m.end()
    if len(whole) > 12:
        raise _fail("decimal with more than 12 integer digits", i)
    if not frac:
        raise _fail("decimal ends in '.'", i)
    if len(frac) > 3:
        raise _fail("decimal with more than 3 fractional digits", i)
    return Decimal(f"{sign}{whole}.{frac}"), m.end()


def _parse_string(s: str, i: int) -> tuple[str, int]:
    """RFC 8941 s4.2.5 Parsing a String."""
    m = _STRING.match(s, i)
    if m is None:
        raise _fail("invalid or unterminated string", i)
    content = m.group(1)
    if "\\" in content:
        content = _UNESCAPE.sub(r"\1", content)
    return content, m.end()


def _parse_bytes(s: str, i: int) -> tuple[bytes, int]:
    """RFC 8941 s4.2.7 Parsing a Byte Sequence (canonical base64 only, see module doc)."""
    m = _BYTES.match(s, i)
    if m is None:
        raise _fail("invalid or unterminated byte sequence", i)
    try:
        return b64decode_std(m.group(1)), m.end()
    except MalformedInput:
        raise _fail("byte sequence is not canonical base64", i) from None


def _parse_bare_item(s: str, i: int, n: int) -> tuple[BareItem, int]:
    """RFC 8941 s4.2.3.1 Parsing a Bare Item."""
    if i >= n:
        raise _fail("missing item", i)
    c = s[i]
    if c == '"':
        return _parse_string(s, i)
    if c == "-" or c in _DIGITS:
        return _parse_number(s, i)
    if c in _TOKEN_START:
        m = _TOKEN.match(s, i)
        if m is None:  # pragma: no cover - the first character is a token start
            raise _fail("invalid token", i)
        return Token(m.group()), m.end()
    if c == ":":
        return _parse_bytes(s, i)
    if c == "?":
        nxt = s[i + 1 : i + 2]
        if nxt == "1":
            return True, i + 2
        if nxt == "0":
            return False, i + 2
        raise _fail("invalid boolean", i)
    raise _fail(f"no item starts with {c!r}", i)


def _parse_key(s: str, i: int) -> tuple[str, int]:
    """RFC 8941 s4.2.3.3 Parsing a Key."""
    m = _KEY.match(s, i)
    if m is None:
        raise _fail("key must start with lcalpha or '*'", i)
    return m.group(), m.end()


def _parse_params(s: str, i: int, n: int) -> tuple[Params, int]:
    """RFC 8941 s4.2.3.2 Parsing Parameters (a repeated key fails, see module doc)."""
    params: Params = {}
    while i < n and s[i] == ";":
        fast = _SIMPLE_PARAM.match(s, i)
        if fast is not None:
            key, number, text = fast.group(1, 2, 3)
            if key in params:
                raise _fail(f"duplicate parameter {key!r}", i)
            params[key] = text if number is None else int(number)
            i = fast.end()
            continue
        i += 1
        while i < n and s[i] == " ":
            i += 1
        m = _KEY.match(s, i)  # s4.2.3.3 Parsing a Key
        if m is None:
            raise _fail("key must start with lcalpha or '*'", i)
        key = m.group()
        i = m.end()
        value: BareItem = True
        if i < n and s[i] == "=":
            value, i = _parse_bare_item(s, i + 1, n)
        if key in params:
            raise _fail(f"duplicate parameter {key!r}", i)
        params[key] = value
    return params, i


def _parse_item(s: str, i: int, n: int) -> tuple[Item, int]:
    """RFC 8941 s4.2.3 Parsing an Item."""
    value, i = _parse_bare_item(s, i, n)
    if i < n and s[i] == ";":
        params, i = _parse_params(s, i, n)
        return Item(value, params), i
    return Item(value, {}), i


def _parse_inner_list(s: str, i: int, n: int, max_items: int | None) -> tuple[InnerList, int]:
    """RFC 8941 s4.2.1.2 Parsing an Inner List; ``s[i]`` is ``(``."""
    fast = _SIMPLE_INNER.match(s, i)
    if fast is not None:
        end = fast.end()
        items = [Item(value, {}) for value in _SIMPLE_CONTENT.findall(s, i, end)]
        if max_items is not None and len(items) > max_items:
            raise TooLarge(f"inner list has more than {max_items} members")
        params, i = _parse_params(s, end, n)
        return InnerList(items, params), i
    i += 1
    items = []
    while i < n:
        while i < n and s[i] == " ":
            i += 1
        if i < n and s[i] == ")":
            params, i = _parse_params(s, i + 1, n)
            return InnerList(items, params), i
        item, i = _parse_item(s, i, n)
        items.append(item)
        if max_items is not None and len(items) > max_items:
            raise TooLarge(f"inner list has more than {max_items} members")
        if i >= n or s[i] not in " )":
            raise _fail("inner list members must be separated by SP", i)
    raise _fail("end of inner list not found", i)


def _parse_member(s: str, i: int, n: int, max_items: int | None) -> tuple[Member, int]:
    """RFC 8941 s4.2.1.1 Parsing an Item or Inner List."""
    if i < n and s[i] == "(":
        return _parse_inner_list(s, i, n, max_items)
    return _parse_item(s, i, n)


def _prepare(text: str, max_length: int) -> tuple[int, int]:
    """RFC 8941 s4.2 steps 1-2: size cap, ASCII, leading SP. Returns ``(start, end)``."""
    if len(text) > max_length:
        raise TooLarge(f"structured field of {len(text)} bytes exceeds cap {max_length}")
    if not text.isascii():
        raise MalformedInput("structured field: non-ASCII input")
    return _skip_sp(text, 0, len(text)), len(text)


def parse_dictionary(
    text: str,
    *,
    max_length: int = DEFAULT_MAX_LENGTH,
    max_members: int | None = None,
    max_inner_items: int | None = None,
) -> dict[str, Member]:
    """Parse a Dictionary field value (RFC 8941 s4.2 with s4.2.2).

    ``text`` is the combined field value (field lines joined with ``", "``,
    RFC 8941 s4.2). A bare key is a Boolean true member with Parameters
    (s4.2.2 step 2.3). An empty value gives an empty dictionary. Raises
    :class:`TooLarge` when ``text`` is longer than ``max_length``, has more
    than ``max_members`` members or an Inner List longer than
    ``max_inner_items``; :class:`MalformedInput` for anything that fails
    parsing.
    """
    i, n = _prepare(text, max_length)
    dictionary: dict[str, Member] = {}
    while i < n:
        key, i = _parse_key(text, i)
        member: Member
        if i < n and text[i] == "=":
            member, i = _parse_member(text, i + 1, n, max_inner_items)
        else:
            params, i = _parse_params(text, i, n)
            member = Item(True, params)
        if key in dictionary:
            raise _fail(f"duplicate dictionary key {key!r}", i)
        dictionary[key] = member
        if max_members is not None and len(dictionary) > max_members:
            raise TooLarge(f"dictionary has more than {max_members} members")
        i = _skip_ows(text, i, n)
        if i == n:
            break
        if text[i] != ",":
            raise _fail("expected ',' between dictionary members", i)
        i = _skip_ows(text, i + 1, n)
        if i == n:
            raise _fail("trailing comma", i)
    return dictionary


def parse_inner_list(
    text: str, *, max_length: int = DEFAULT_MAX_LENGTH, max_items: int | None = None
) -> InnerList:
    """Parse one Inner List with Parameters, e.g. ``("@method");created=1``.

    This is the Dictionary member grammar (RFC 8941 s4.2.1.2) applied to a
    whole string, with the top-level SP rules of s4.2 (steps 2, 6, 7).
    """
    i, n = _prepare(text, max_length)
    if i >= n or text[i] != "(":
        raise _fail("inner list must start with '('", i)
    inner, i = _parse_inner_list(text, i, n, max_items)
    if _skip_sp(text, i, n) != n:
        raise _fail("trailing characters after inner list", i)
    return inner


# ----------------------------------------------------------------------- serialising


def serialize_key(key: str) -> str:
    """RFC 8941 s4.1.1.3 Serializing a Key."""
    if type(key) is not str or not _KEY.fullmatch(key):
        raise MalformedInput(f"structured field: invalid key {key!r}")
    return key


def _serialize_string(value: str) -> str:
    """RFC 8941 s4.1.6 Serializing a String: printable ASCII only."""
    if not value.isascii() or not value.isprintable():
        raise MalformedInput("structured field: string with non-printable or non-ASCII text")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _serialize_decimal(value: Decimal) -> str:
    """RFC 8941 s4.1.5 Serializing a Decimal (round half even to 3 places)."""
    if not value.is_finite():
        raise MalformedInput("structured field: decimal is not finite")
    if abs(value) >= 10**12:
        raise MalformedInput("structured field: decimal with more than 12 integer digits")
    try:
        rounded = value.quantize(_THOUSANDTH, context=_DECIMAL_CONTEXT)
    except InvalidOperation:  # pragma: no cover - excluded by the range check above
        raise MalformedInput("structured field: decimal out of range") from None
    if abs(rounded) >= 10**12:
        raise MalformedInput("structured field: decimal with more than 12 integer digits")
    whole, _, frac = f"{abs(rounded):f}".partition(".")
    frac = frac.rstrip("0") or "0"
    return f"{'-' if rounded < 0 else ''}{whole}.{frac}"


def serialize_bare_item(value: BareItem) -> str:
    """RFC 8941 s4.1.3.1 Serializing a Bare Item."""
    if value is True:
        return "?1"
    if value is False:
        return "?0"
    if type(value) is int:
        if not -_MAX_INT <= value <= _MAX_INT:
            raise MalformedInput("structured field: integer out of range")
        return str(value)
    if type(value) is str:
        return _serialize_string(value)
    if type(value) is Token:
        if not _TOKEN.fullmatch(value):
            raise MalformedInput(f"structured field: invalid token {value!r}")
        return str.__str__(value)
    if type(value) is bytes:
        return ":" + b64encode_std(value) + ":"
    if type(value) is Decimal:
        return _serialize_decimal(value)
    raise MalformedInput(f"structured field: cannot serialise {type(value).__name__}")


def serialize_params(params: Params) -> str:
    """RFC 8941 s4.1.1.2 Serializing Parameters (Boolean true values are bare keys)."""
    return "".join(
        ";" + serialize_key(key) + ("" if value is True else "=" + serialize_bare_item(value))
        for key, value in params.items()
    )


def serialize_item(item: Item) -> str:
    """RFC 8941 s4.1.3 Serializing an Item."""
    return serialize_bare_item(item.value) + serialize_params(item.params)


def serialize_inner_list(inner: InnerList) -> str:
    """RFC 8941 s4.1.1.1 Serializing an Inner List."""
    body = " ".join(serialize_item(item) for item in inner.items)
    return "(" + body + ")" + serialize_params(inner.params)


def serialize_dictionary(dictionary: dict[str, Member]) -> str:
    """RFC 8941 s4.1.2 Serializing a Dictionary (Boolean true members as bare keys)."""
    if not dictionary:
        raise MalformedInput("structured field: an empty dictionary is not serialised")
    members = []
    for key, member in dictionary.items():
        name = serialize_key(key)
        if isinstance(member, InnerList):
            members.append(name + "=" + serialize_inner_list(member))
        elif member.value is True:
            members.append(name + serialize_params(member.params))
        else:
            members.append(name + "=" + serialize_item(member))
    return ", ".join(members)
