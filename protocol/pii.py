"""PII masking with salted commitments, so a reveal can be checked against a signature.

Before a bundle is signed, each value at a listed JSON Pointer (RFC 6901) is
replaced by a token such as ``<PII_1>`` and a :class:`MaskedField` records
``commitment = sha256(salt || JCS(value))`` with a fresh 128-bit salt. The
signature covers the masked document and the commitments; the originals and
their salts travel separately (:class:`Reveal`), encrypted to the same
operators. Revealing a field is then: show the original, after checking
``verify_reveal`` against the signed commitment. The signature never breaks
and a forged "original" cannot pass.

Pointer extension: a segment ``*`` matches every member of an object or
every element of an array (agents rarely know array indexes in advance). A
pointer without ``*`` must resolve; a ``*`` pointer may match nothing, and
skips ``null`` members (absent optional fields have nothing to hide). Two
masked paths may not nest (masking an ancestor would hide the other's token).
A literal member named ``*`` cannot be addressed.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from keys.b64 import b64url_decode, b64url_encode
from keys.errors import MalformedInput
from protocol.canonical import DIGEST_PREFIX, canonical_json, canonical_string
from protocol.errors import DigestInvalid, InvalidArtifact
from protocol.model import BatonModel, Digest, JsonData, JsonPointer, ShortText

__all__ = [
    "MaskedField",
    "Reveal",
    "RevealSet",
    "commitment",
    "mask",
    "resolve",
    "verify_reveal",
]

TOKEN_FORMAT: Final = "<PII_{n}>"  # noqa: S105 - a display placeholder, not a secret
MAX_MASKED: Final = 1024


class MaskedField(BatonModel):
    """A masked value: where it was, the token shown, and the commitment."""

    path: JsonPointer
    token: ShortText
    commitment: Digest
    entity: ShortText | None = None


class Reveal(BatonModel):
    """The original value behind a :class:`MaskedField` and its salt."""

    path: JsonPointer
    salt: ShortText
    value: JsonData


class RevealSet(BatonModel):
    """All reveals for one bundle; encrypted to the bundle's operators."""

    bundle_id: ShortText
    items: tuple[Reveal, ...]


def commitment(salt: bytes, value: JsonData) -> str:
    """``sha256:<hex>`` of ``salt || JCS(value)``."""
    data = canonical_string(value) if type(value) is str else canonical_json(value)
    return DIGEST_PREFIX + hashlib.sha256(salt + data).hexdigest()


def _unescape(segment: str) -> str:
    if "~" not in segment:
        return segment
    return segment.replace("~1", "/").replace("~0", "~")


def _escape(segment: str) -> str:
    if "~" not in segment and "/" not in segment:
        return segment
    return segment.replace("~", "~0").replace("/", "~1")


def _is_index(segment: str) -> bool:
    """An array index as :func:`_children` reads one."""
    return segment.isdigit() and (segment == "0" or not segment.startswith("0"))


def _split(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise InvalidArtifact(f"JSON Pointer {pointer!r} must start with '/'")
    return pointer[1:].split("/")


def _children(node: Any, segment: str) -> Iterator[tuple[str, Any]]:
    """(escaped segment, child) pairs that ``segment`` selects under ``node``."""
    if isinstance(node, dict):
        if segment == "*":
            for key, child in node.items():
                yield _escape(key), child
        elif _unescape(segment) in node:
            yield segment, node[_unescape(segment)]
    elif isinstance(node, list):
        if segment == "*":
            yield from ((str(i), child) for i, child in enumerate(node))
        elif segment.isdigit() and (segment == "0" or not segment.startswith("0")):
            index = int(segment)
            if index < len(node):
                yield segment, node[index]


def resolve(document: Any, pointer: str) -> list[tuple[str, Any]]:
    """Every ``(concrete pointer, value)`` that ``pointer`` (with ``*``) selects."""
    return [(path, value) for path, _, _, value in _locate(document, pointer)]


def _locate(document: Any, pointer: str) -> list[tuple[str, Any, Any, Any]]:
    """:func:`resolve`, each match with its parent and its key or index there
    (``None``, ``None`` for the document itself)."""
    segments = _split(pointer)
    if "*" not in segments:
        return _locate_one(document, pointer, segments)
    matches: list[tuple[str, Any, Any, Any]] = [("", None, None, document)]
    for segment in segments:
        # What :func:`_children` selects, inlined (it is the oracle of the tests).
        step: list[tuple[str, Any, Any, Any]] = []
        if segment == "*":
            for path, _, _, node in matches:
                if isinstance(node, dict):
                    step += [
                        (f"{path}/{_escape(key)}", node, key, child) for key, child in node.items()
                    ]
                elif isinstance(node, list):
                    step += [(f"{path}/{i}", node, i, child) for i, child in enumerate(node)]
        else:
            key = _unescape(segment)
            index = int(segment) if _is_index(segment) else None
            for path, _, _, node in matches:
                if isinstance(node, dict):
                    if key in node:
                        step.append((f"{path}/{segment}", node, key, node[key]))
                elif isinstance(node, list) and index is not None and index < len(node):
                    step.append((f"{path}/{segment}", node, index, node[index]))
        matches = step
    return matches


def _resolve_one(document: Any, pointer: str, segments: list[str]) -> list[tuple[str, Any]]:
    """:func:`resolve` of a pointer without ``*``."""
    return [(path, value) for path, _, _, value in _locate_one(document, pointer, segments)]


def _locate_one(
    document: Any, pointer: str, segments: list[str]
) -> list[tuple[str, Any, Any, Any]]:
    """:func:`_locate` of a pointer without ``*``: the same walk as
    :func:`_children` makes, one node per segment, so at most one match, whose
    concrete pointer is ``pointer`` itself (segments are kept as written)."""
    parent: Any = None
    where: Any = None
    node = document
    for segment in segments:
        if isinstance(node, dict):
            key = _unescape(segment)
            if key not in node:
                return []
            parent, where, node = node, key, node[key]
        elif isinstance(node, list):
            if not _is_index(segment):
                return []
            index = int(segment)
            if index >= len(node):
                return []
            parent, where, node = node, index, node[index]
        else:
            return []
    return [(pointer, parent, where, node)]


def _nested(one: str, other: str) -> bool:
    """True if either pointer is a proper prefix (ancestor) of the other."""
    return one.startswith(other + "/") or other.startswith(one + "/")


def _ancestors(pointer: str) -> list[str]:
    """The proper ancestors of a pointer: every prefix that ends before a ``/``
    (``/a/b`` -> ``""``, ``/a``). ``other`` is one of them exactly when
    ``pointer.startswith(other + "/")``, so :func:`_nested` holds for a pair iff
    one is among the other's ancestors."""
    out = []
    cut = pointer.find("/")
    while cut != -1:
        out.append(pointer[:cut])
        cut = pointer.find("/", cut + 1)
    return out


def _replace(document: Any, pointer: str, value: Any) -> None:
    segments = _split(pointer)
    if not segments:
        raise InvalidArtifact("cannot mask the whole document")
    parent = document
    for segment in segments[:-1]:
        parent = parent[_unescape(segment)] if isinstance(parent, dict) else parent[int(segment)]
    last = segments[-1]
    if isinstance(parent, dict):
        parent[_unescape(last)] = value
    else:
        parent[int(last)] = value


@dataclass(frozen=True, slots=True)
class MaskResult:
    document: Any
    masked: tuple[MaskedField, ...]
    reveals: tuple[Reveal, ...]


def mask(
    document: Any,
    pointers: Sequence[str],
    *,
    token_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> MaskResult:
    """Mask ``document`` (a JSON value; modified in place and returned).

    ``token_bytes`` supplies salts (inject it for deterministic tests).
    """
    masked: list[MaskedField] = []
    reveals: list[Reveal] = []
    seen: set[str] = set()
    # Every proper ancestor of a path in ``seen``: with it, the overlap test is
    # O(depth) per path instead of a scan of ``seen`` (1,024 paths: 0.5 M pairs).
    below: set[str] = set()
    for pointer in pointers:
        wildcard = "*" in _split(pointer)
        matches = _locate(document, pointer)
        if not matches and not wildcard:
            raise InvalidArtifact(f"PII path {pointer!r} does not resolve")
        for path, parent, where, value in matches:
            if path in seen or (wildcard and value is None):
                continue  # already masked; or an absent optional field
            ancestors = _ancestors(path)
            if path in below or not seen.isdisjoint(ancestors):  # any(_nested(path, o) ...)
                raise InvalidArtifact(f"PII path {path!r} overlaps another masked path")
            if len(masked) >= MAX_MASKED:
                raise InvalidArtifact(f"more than {MAX_MASKED} PII fields")
            seen.add(path)
            below.update(ancestors)
            salt = token_bytes(16)
            token = TOKEN_FORMAT.format(n=len(masked) + 1)
            masked.append(MaskedField(path=path, token=token, commitment=commitment(salt, value)))
            reveals.append(Reveal(path=path, salt=b64url_encode(salt), value=value))
            if parent is None:
                raise InvalidArtifact("cannot mask the whole document")
            # As _replace(document, path, token) would: matches of one pointer
            # do not nest, so each parent is still where the walk found it.
            parent[where] = token
    return MaskResult(document=document, masked=tuple(masked), reveals=tuple(reveals))


def verify_reveal(field: MaskedField, reveal: Reveal) -> JsonData:
    """Return the revealed value if it matches the signed commitment."""
    if field.path != reveal.path:
        raise DigestInvalid("reveal is for another field")
    try:
        salt = b64url_decode(reveal.salt)
    except MalformedInput as exc:
        raise DigestInvalid("reveal salt is not base64url") from exc
    if commitment(salt, reveal.value) != field.commitment:
        raise DigestInvalid("revealed value does not match the signed commitment")
    return reveal.value
