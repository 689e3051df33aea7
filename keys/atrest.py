"""Encryption at rest for stored bodies (transcripts keep the bytes that travelled).

:class:`StoreCipher` is AES-256-GCM (NIST SP 800-38D) with a random 96-bit
nonce per record and caller-supplied associated data that binds a ciphertext
to where it is stored (``conversation`` and ``seq``), so a body copied onto
another entry does not decrypt. The sealed form is::

    version (1 byte, 0x01) || key id (8 bytes) || nonce (12 bytes) || ciphertext+tag

The key id is the first 8 bytes of SHA-256 over the key: a store holding
bodies under an older key names which one it needs, so the key can be rotated
(:class:`StoreCipher` accepts retired keys for opening). Random 96-bit nonces
keep the collision probability under 2^-32 for 2^32 records per key
(SP 800-38D s8.3); rotate well before that.

The key file is 32 random bytes, base64url, mode 0600 (read through
:func:`keys.files.read_private_file`).

:meth:`StoreCipher.derive_key` gives other secrets every process of a fleet
shares (they all hold the store key) without a second key file: HKDF-SHA256
(RFC 5869) over the active key, one ``info`` label per use, so a derived key
reveals nothing about the AES key or any other derived key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keys.b64 import b64url_decode, b64url_encode
from keys.errors import InvalidEnvelope, InvalidKey, MalformedInput
from keys.files import read_private_file, write_private_file

__all__ = ["StoreCipher", "generate_store_key_file"]

_VERSION: Final = b"\x01"
_KEY_BYTES: Final = 32
_KID_BYTES: Final = 8
_NONCE_BYTES: Final = 12
_HEADER: Final = 1 + _KID_BYTES + _NONCE_BYTES


def _kid(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:_KID_BYTES]


class StoreCipher:
    """Seal and open stored bodies. The first key seals; all keys open."""

    __slots__ = ("_active", "_active_kid", "_by_kid", "_ikm")

    def __init__(self, key: bytes, retired: Sequence[bytes] = ()) -> None:
        for candidate in (key, *retired):
            if len(candidate) != _KEY_BYTES:
                raise InvalidKey("store key must be 32 bytes (AES-256)")
        self._active = AESGCM(key)
        self._ikm = key
        self._active_kid = _kid(key)
        self._by_kid: Mapping[bytes, AESGCM] = {_kid(k): AESGCM(k) for k in (*retired, key)}

    def __repr__(self) -> str:
        return f"StoreCipher(kid={self._active_kid.hex()})"

    @classmethod
    def generate(cls) -> StoreCipher:
        return cls(os.urandom(_KEY_BYTES))

    @classmethod
    def from_file(cls, path: Path) -> StoreCipher:
        """Load a key file written by :func:`generate_store_key_file` (0600 enforced)."""
        text = read_private_file(path).decode("ascii", errors="replace").strip()
        try:
            key = b64url_decode(text)
        except MalformedInput as exc:
            raise InvalidKey(f"{path}: store key is not base64url") from exc
        return cls(key)

    def derive_key(self, info: bytes, length: int = 32) -> bytes:
        """HKDF-SHA256 (RFC 5869 s2) of the active key for the use ``info`` names.

        The same key and ``info`` give the same bytes in every process; a
        rotated store key gives new ones. ``info`` must be non-empty (it is
        the domain separation between uses).
        """
        if not info or not 16 <= length <= 64:
            raise ValueError("derive_key needs a non-empty info and 16..64 bytes")
        return HKDF(
            algorithm=hashes.SHA256(), length=length, salt=None, info=b"baton/" + info
        ).derive(self._ikm)

    def seal(self, plaintext: bytes, *, aad: bytes, nonce: bytes | None = None) -> bytes:
        """Encrypt ``plaintext`` bound to ``aad``. ``nonce`` is for test vectors only."""
        iv = os.urandom(_NONCE_BYTES) if nonce is None else nonce
        if len(iv) != _NONCE_BYTES:
            raise ValueError("nonce must be 12 bytes")
        header = _VERSION + self._active_kid + iv
        return header + self._active.encrypt(iv, plaintext, header + aad)

    def open(self, sealed: bytes, *, aad: bytes) -> bytes:
        """Decrypt a sealed body; :class:`InvalidEnvelope` for any failure."""
        if len(sealed) < _HEADER + 16 or sealed[:1] != _VERSION:
            raise InvalidEnvelope("sealed body is malformed")
        cipher = self._by_kid.get(sealed[1 : 1 + _KID_BYTES])
        if cipher is None:
            raise InvalidEnvelope("sealed body names an unknown store key")
        header = sealed[:_HEADER]
        try:
            return cipher.decrypt(header[1 + _KID_BYTES :], sealed[_HEADER:], header + aad)
        except InvalidTag:
            raise InvalidEnvelope("sealed body does not authenticate") from None


def generate_store_key_file(path: Path) -> None:
    """Write a new random store key to ``path`` (0600, atomic)."""
    write_private_file(path, b64url_encode(os.urandom(_KEY_BYTES)).encode("ascii") + b"\n")
