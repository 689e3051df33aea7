"""Password hashing for local operator accounts: scrypt (RFC 7914) in PHC string format.

The embedded default has local operator accounts (DESIGN.md "Human handoff").
Their passwords are stored only as a memory-hard hash::

    $scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt>$<hash>

the PHC string format (github.com/P-H-C/phc-string-format) as passlib and
zitadel/passwap write it for scrypt: the parameters are stored with the hash,
so they can be raised later without invalidating older hashes; salt and hash
are standard base64 (RFC 4648 s4) *without* padding, and only the canonical
encoding is accepted.

Invariants:

* new hashes use :data:`DEFAULT_PARAMS` (N = 2^17, r = 8, p = 1: 128 MiB, the
  OWASP Password Storage Cheat Sheet's scrypt minimum), a 16-byte random salt
  and a 32-byte hash. A stored hash must be exactly 32 bytes: scrypt output is
  PBKDF2 output (RFC 7914 s6, RFC 8018 s5.2), so a hash cut short is a prefix
  of the full one and would still verify if shorter hashes were accepted;
* a stored hash is parsed strictly and its parameters must lie within
  :data:`MIN_MEMORY` .. :data:`MAX_MEMORY` and :data:`MAX_WORK`, so a weak or
  edited file is refused (:class:`~keys.errors.InvalidKey`) instead of being
  either trusted or used to make the verifier allocate gigabytes;
* the comparison is constant-time (:func:`hmac.compare_digest`); a wrong
  password, or one that could never have been hashed (empty, longer than
  :data:`MAX_PASSWORD_BYTES`), is ``False``, never an exception;
* passwords are NFC-normalised and UTF-8 encoded first (RFC 8265 s4.2,
  OpaqueString), so the same password typed on two systems hashes alike.

:func:`derive` is the bare RFC 7914 s6 function with only its structural
limits; it exists for the RFC 7914 s12 known-answer tests and for callers
that need scrypt with explicit parameters.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Final

from keys.b64 import b64decode_std, b64encode_std
from keys.errors import InvalidKey, MalformedInput

__all__ = [
    "DEFAULT_PARAMS",
    "MAX_MEMORY",
    "MAX_PASSWORD_BYTES",
    "MAX_WORK",
    "MIN_MEMORY",
    "PasswordHash",
    "ScryptParams",
    "derive",
    "generate_password",
    "hash_password",
    "verify_password",
]

#: Memory one hash needs (128 * r * N bytes) must be at least 16 MiB ...
MIN_MEMORY: Final = 16 << 20
#: ... and at most 256 MiB ...
MAX_MEMORY: Final = 256 << 20
#: ... and memory * p (the time a verification costs) at most 1 GiB-equivalents.
MAX_WORK: Final = 1 << 30
MAX_PARALLELISM: Final = 16
MAX_PASSWORD_BYTES: Final = 1024
SALT_BYTES: Final = 16
HASH_BYTES: Final = 32
_SALT_RANGE: Final = (8, 64)
_MAX_ENCODED: Final = 512
# Decimal without leading zeros; base64 without padding (PHC "B64").
_PHC = re.compile(
    r"\$scrypt\$ln=([1-9][0-9]?),r=([1-9][0-9]{0,2}),p=([1-9][0-9]?)"
    r"\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)\Z"
)


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost parameters: N = 2**ln, block size r, parallelism p (RFC 7914 s2).

    Construction checks the RFC's structural limits only (N > 1 a power of
    two, r >= 1, p >= 1, p * r < 2^30); :meth:`check_bounds` is the policy
    applied to every hash Baton writes or verifies.
    """

    ln: int
    r: int
    p: int

    def __post_init__(self) -> None:
        if not 1 <= self.ln <= 63 or self.r < 1 or self.p < 1:
            raise InvalidKey("scrypt parameters: need 1 <= ln <= 63, r >= 1, p >= 1")
        if self.p * self.r >= 1 << 30:
            raise InvalidKey("scrypt parameters: p * r must be below 2^30 (RFC 7914 s2)")

    @property
    def n(self) -> int:
        return 1 << self.ln

    @property
    def memory(self) -> int:
        """Bytes one derivation allocates: 128 * r * N (RFC 7914 s5)."""
        return 128 * self.r * self.n

    def check_bounds(self) -> ScryptParams:
        """``self`` if within Baton's floor and ceiling; :class:`InvalidKey` otherwise."""
        if self.memory < MIN_MEMORY:
            raise InvalidKey(f"scrypt parameters: under the {MIN_MEMORY >> 20} MiB memory floor")
        if self.memory > MAX_MEMORY:
            raise InvalidKey(f"scrypt parameters: over the {MAX_MEMORY >> 20} MiB memory cap")
        if self.p > MAX_PARALLELISM or self.memory * self.p > MAX_WORK:
            raise InvalidKey("scrypt parameters: parallelism over the work cap")
        return self


DEFAULT_PARAMS: Final = ScryptParams(ln=17, r=8, p=1)


def derive(password: bytes, salt: bytes, params: ScryptParams, length: int) -> bytes:
    """scrypt(P, S, N, r, p, dkLen) (RFC 7914 s6), via OpenSSL in :mod:`hashlib`."""
    if not 1 <= length <= 1024:
        raise InvalidKey("scrypt: dkLen must be 1..1024 bytes")
    try:
        return hashlib.scrypt(
            password,
            salt=salt,
            n=params.n,
            r=params.r,
            p=params.p,
            maxmem=params.memory + (2 << 20),
            dklen=length,
        )
    except (ValueError, MemoryError) as exc:
        raise InvalidKey(f"scrypt: {exc}") from exc


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed ``$scrypt$`` PHC string; :meth:`encode` gives it back byte for byte."""

    params: ScryptParams
    salt: bytes
    digest: bytes

    @classmethod
    def decode(cls, text: str) -> PasswordHash:
        """Parse strictly and check bounds; :class:`InvalidKey` for anything else."""
        match = _PHC.match(text) if len(text) <= _MAX_ENCODED else None
        if match is None:
            raise InvalidKey("password hash is not a $scrypt$ln=..,r=..,p=..$salt$hash string")
        ln, r, p, salt_text, digest_text = match.groups()
        try:
            salt, digest = b64decode_std(salt_text), b64decode_std(digest_text)
        except MalformedInput as exc:
            raise InvalidKey(f"password hash: {exc.detail}") from exc
        if not _SALT_RANGE[0] <= len(salt) <= _SALT_RANGE[1]:
            raise InvalidKey("password hash: salt must be 8..64 bytes")
        if len(digest) != HASH_BYTES:
            raise InvalidKey(f"password hash: hash must be {HASH_BYTES} bytes")
        params = ScryptParams(int(ln), int(r), int(p)).check_bounds()
        return cls(params, salt, digest)

    def encode(self) -> str:
        params = self.params
        return (
            f"$scrypt$ln={params.ln},r={params.r},p={params.p}"
            f"${b64encode_std(self.salt).rstrip('=')}${b64encode_std(self.digest).rstrip('=')}"
        )


def _password_bytes(password: str) -> bytes | None:
    """NFC + UTF-8 (RFC 8265 s4.2); ``None`` for a password that is never accepted."""
    try:
        data = unicodedata.normalize("NFC", password).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return None
    return data if 0 < len(data) <= MAX_PASSWORD_BYTES else None


def hash_password(password: str, *, params: ScryptParams = DEFAULT_PARAMS) -> str:
    """A new PHC string for ``password`` with a fresh random salt."""
    data = _password_bytes(password)
    if data is None:
        raise MalformedInput(f"password must be 1..{MAX_PASSWORD_BYTES} bytes of valid UTF-8")
    params.check_bounds()
    salt = secrets.token_bytes(SALT_BYTES)
    return PasswordHash(params, salt, derive(data, salt, params, HASH_BYTES)).encode()


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded``, compared in constant time.

    A malformed or out-of-bounds ``encoded`` raises :class:`InvalidKey` (the
    account file is broken: a configuration problem, not a failed login).
    """
    stored = PasswordHash.decode(encoded)
    data = _password_bytes(password)
    if data is None:
        return False
    candidate = derive(data, stored.salt, stored.params, len(stored.digest))
    return hmac.compare_digest(candidate, stored.digest)


def generate_password() -> str:
    """A one-time password: 144 random bits as 24 URL-safe characters."""
    return secrets.token_urlsafe(18)
