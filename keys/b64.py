"""Strict base64url (RFC 7515 s2, RFC 4648 s5) and padded base64 (RFC 4648 s4).

JOSE requires base64url *without* padding. We accept only the canonical
encoding of a byte string: no ``=``, no ``+``/``/``, no whitespace, and no
non-zero bits in the unused tail of the last character (otherwise two strings
would decode to the same bytes, which breaks "what was signed is what was
sent"). Wycheproof's base64 cases and threat J17 exercise these rules.
"""

from __future__ import annotations

import base64
import binascii
import re

from keys.errors import MalformedInput

__all__ = ["b64decode_std", "b64encode_std", "b64url_decode", "b64url_encode"]

_B64URL = re.compile(r"[A-Za-z0-9_-]*\Z")
# Characters whose 6-bit value has its low 4 (resp. 2) bits clear: the only
# legal final characters when the length is 2 (resp. 3) mod 4.
_LAST_OF_2 = frozenset("AQgw")
_LAST_OF_3 = frozenset("AEIMQUYcgkosw048")


def b64url_encode(data: bytes) -> str:
    """Encode without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes, *, max_len: int | None = None) -> bytes:
    """Decode canonical unpadded base64url or raise :class:`MalformedInput`.

    ``max_len`` caps the *encoded* length and is checked before any work.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedInput("base64url: non-ASCII input") from None
    if max_len is not None and len(text) > max_len:
        raise MalformedInput("base64url: input over size cap")
    if not _B64URL.match(text):
        raise MalformedInput("base64url: character outside the URL-safe alphabet")
    rem = len(text) % 4
    if rem == 1:
        raise MalformedInput("base64url: impossible length")
    if rem == 2 and text[-1] not in _LAST_OF_2:
        raise MalformedInput("base64url: non-zero trailing bits")
    if rem == 3 and text[-1] not in _LAST_OF_3:
        raise MalformedInput("base64url: non-zero trailing bits")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64encode_std(data: bytes) -> str:
    """Standard padded base64, as RFC 8941 byte sequences use."""
    return base64.b64encode(data).decode("ascii")


def b64decode_std(text: str) -> bytes:
    """Decode standard base64 (RFC 4648 s4), padding optional (RFC 8941 s4.2.7).

    Rejects characters outside the alphabet, partial padding, and
    non-canonical trailing bits (the re-encoding must give back the input).
    """
    stripped = text.rstrip("=")
    canonical = stripped + "=" * (-len(stripped) % 4)
    if text not in (stripped, canonical) or not text.isascii():
        raise MalformedInput("base64: bad padding or non-ASCII")
    try:
        data = base64.b64decode(canonical, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedInput("base64: character outside the alphabet or bad length") from exc
    if base64.b64encode(data).decode("ascii") != canonical:
        raise MalformedInput("base64: non-zero trailing bits")
    return data
