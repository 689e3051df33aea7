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
from typing import Final

from pydantic import ConfigDict, TypeAdapter, ValidationError

from keys.errors import MalformedInput

__all__ = ["b64decode_std", "b64encode_std", "b64url_decode", "b64url_encode"]

_URL_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_STANDARD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
#: For ``bytes.translate``: the URL-safe alphabet to the standard one, value
#: for value, and every other byte (``+``, ``/``, ``=``, whitespace...) to
#: ``!``, which is in neither. One C-level pass both checks the alphabet and
#: prepares the input for ``binascii`` (a regular expression took 2 ms on a
#: 1.9 MB JWS payload, and the decoder's own translation another pass).
_TO_STANDARD = bytes(_STANDARD[_URL_SAFE.index(c)] if c in _URL_SAFE else 0x21 for c in range(256))
_OUTSIDE = b"!"
# Characters whose 6-bit value has its low 4 (resp. 2) bits clear: the only
# legal final characters when the length is 2 (resp. 3) mod 4.
_LAST_OF_2 = frozenset(b"AQgw")
_LAST_OF_3 = frozenset(b"AEIMQUYcgkosw048")
_PADDING = (b"", b"", b"==", b"=")  # by length mod 4
#: From this length, a string that passed every check here is decoded by
#: pydantic-core (Rust; a dependency through pydantic): it takes base64url
#: without padding as it is, so the alphabet check need not build a
#: translated copy (a bundle's 1.9 MB JWS payload: 3.7 ms instead of 6.5 ms,
#: most of the difference the page faults of the copies). Any correct
#: decoder gives the same bytes for the canonical strings that get there; the
#: tests compare it with binascii at every length.
_RUST_FROM: Final = 1 << 16
_BASE64_JSON: Final = TypeAdapter(bytes, config=ConfigDict(val_json_bytes="base64"))


def b64url_encode(data: bytes) -> str:
    """Encode without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes, *, max_len: int | None = None) -> bytes:
    """Decode canonical unpadded base64url or raise :class:`MalformedInput`.

    ``max_len`` caps the *encoded* length and is checked before any work.
    """
    if isinstance(text, bytes) and not text.isascii():
        raise MalformedInput("base64url: non-ASCII input")
    if max_len is not None and len(text) > max_len:
        raise MalformedInput("base64url: input over size cap")
    if isinstance(text, str):
        if not text.isascii():
            raise MalformedInput("base64url: character outside the URL-safe alphabet")
        text = text.encode("ascii")
    large = len(text) >= _RUST_FROM
    standard = b"" if large else text.translate(_TO_STANDARD)
    if text.translate(None, _URL_SAFE) if large else _OUTSIDE in standard:
        raise MalformedInput("base64url: character outside the URL-safe alphabet")
    rem = len(text) % 4
    if rem == 1:
        raise MalformedInput("base64url: impossible length")
    if rem == 2 and text[-1] not in _LAST_OF_2:
        raise MalformedInput("base64url: non-zero trailing bits")
    if rem == 3 and text[-1] not in _LAST_OF_3:
        raise MalformedInput("base64url: non-zero trailing bits")
    if large:
        try:
            decoded: bytes = _BASE64_JSON.validate_json(b"".join((b'"', text, b'"')))
        except ValidationError:  # pragma: no cover - canonical base64url by now
            standard = text.translate(_TO_STANDARD)
        else:
            return decoded
    # Every character is in the alphabet and the padding is the one it
    # needs: binascii decodes this without complaint (strict mode or not).
    return binascii.a2b_base64(standard + _PADDING[rem] if rem else standard)


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
