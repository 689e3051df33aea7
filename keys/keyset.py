"""Key sets: lookup by ``kid``, rotation, and JWKS import/export (RFC 7517 s5).

:class:`KeySet` holds public keys and answers "which key has this ``kid``?"
from an in-memory map only (RFC 8725 s3.10: a ``kid`` is never a path, a query
or a URL). :class:`PrivateKeySet` holds one *active* key that signs (or that
senders encrypt to) plus older keys that only verify (or decrypt), the way
``MultiFernet`` rotates: the first key is active, every key is accepted.

JWKS import is strict (Wycheproof ``json_web_key`` cases, threat J21): every
member must import under :meth:`PublicKey.from_jwk`, ``kid`` values are
unique, private and public material never mix, and a set must not be empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from keys.errors import InvalidKey, UnknownKeyId
from keys.material import KeyUse, PrivateKey, PublicKey

__all__ = ["KeySet", "PrivateKeySet"]

_MAX_KEYS = 64
_MAX_KID = 128


def _jwk_list(jwks: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if set(jwks) != {"keys"}:
        raise InvalidKey("JWKS must be an object with exactly one member, 'keys'")
    keys = jwks["keys"]
    if not isinstance(keys, list) or not keys:
        raise InvalidKey("JWKS 'keys' must be a non-empty array")
    if len(keys) > _MAX_KEYS:
        raise InvalidKey(f"JWKS holds more than {_MAX_KEYS} keys")
    if not all(isinstance(k, Mapping) for k in keys):
        raise InvalidKey("JWKS members must be objects")
    return keys


class KeySet:
    """An immutable set of public keys indexed by ``kid``."""

    __slots__ = ("_by_kid", "_order")

    def __init__(self, keys: Iterable[PublicKey]) -> None:
        self._order: tuple[PublicKey, ...] = tuple(keys)
        self._by_kid: dict[str, PublicKey] = {}
        for key in self._order:
            if key.kid in self._by_kid:
                raise InvalidKey(f"duplicate kid {key.kid!r} in key set")
            self._by_kid[key.kid] = key

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any], *, require_thumbprint_kid: bool = True) -> KeySet:
        """Import public keys; any private member rejects the whole set."""
        return cls(
            PublicKey.from_jwk(jwk, require_thumbprint_kid=require_thumbprint_kid)
            for jwk in _jwk_list(jwks)
        )

    def get(self, kid: object) -> PublicKey:
        """The key named ``kid``; :class:`UnknownKeyId` for anything else."""
        if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID:
            raise UnknownKeyId("kid missing, not a string, or too long")
        try:
            return self._by_kid[kid]
        except KeyError:
            raise UnknownKeyId("kid not in key set") from None

    def __contains__(self, kid: object) -> bool:
        return isinstance(kid, str) and kid in self._by_kid

    def __iter__(self) -> Iterator[PublicKey]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def merged(self, other: KeySet) -> KeySet:
        """Union of two sets; a ``kid`` in both must name the same key."""
        keys = list(self._order)
        for key in other:
            if key.kid in self._by_kid:
                if self._by_kid[key.kid] != key:
                    raise InvalidKey(f"kid {key.kid!r} names two different keys")
                continue
            keys.append(key)
        return KeySet(keys)

    def to_jwks(self) -> dict[str, list[dict[str, str]]]:
        """Public JWKS, in set order."""
        return {"keys": [key.to_jwk() for key in self._order]}

    def __repr__(self) -> str:
        return f"KeySet({[k.kid for k in self._order]!r})"


class PrivateKeySet:
    """One active private key plus verify-only (or decrypt-only) older keys.

    Invariants: non-empty; all keys share one ``use``; ``kid`` values unique;
    :attr:`active` is the first key. Instances are immutable; :meth:`rotated`
    returns a new set.
    """

    __slots__ = ("_by_kid", "_keys")

    def __init__(self, keys: Iterable[PrivateKey]) -> None:
        self._keys: tuple[PrivateKey, ...] = tuple(keys)
        if not self._keys:
            raise InvalidKey("a private key set needs at least one key")
        uses = {key.use for key in self._keys}
        if len(uses) != 1:
            raise InvalidKey("a private key set mixes signing and encryption keys")
        self._by_kid = {key.kid: key for key in self._keys}
        if len(self._by_kid) != len(self._keys):
            raise InvalidKey("duplicate kid in private key set")

    @classmethod
    def generate(cls, alg: str) -> PrivateKeySet:
        return cls([PrivateKey.generate(alg)])

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> PrivateKeySet:
        """Import a private JWKS written by :meth:`to_private_jwks`."""
        return cls(PrivateKey.from_jwk(jwk) for jwk in _jwk_list(jwks))

    @property
    def active(self) -> PrivateKey:
        """The key that signs now (or that senders encrypt to)."""
        return self._keys[0]

    @property
    def use(self) -> KeyUse:
        return self.active.use

    @property
    def retired(self) -> tuple[PrivateKey, ...]:
        """Older keys: verify or decrypt only."""
        return self._keys[1:]

    def get(self, kid: object) -> PrivateKey:
        if not isinstance(kid, str) or kid not in self._by_kid:
            raise UnknownKeyId("kid not in private key set")
        return self._by_kid[kid]

    def rotated(self, new: PrivateKey | None = None, *, keep: int = 4) -> PrivateKeySet:
        """New set whose active key is ``new`` (generated with the same alg if
        omitted); the old active key becomes verify-only. At most ``keep``
        retired keys are kept, newest first."""
        if keep < 0:
            raise ValueError("keep must be >= 0")
        new = new or PrivateKey.generate(self.active.alg)
        if new.kid in self._by_kid:
            raise InvalidKey("the new key is already in the set")
        return PrivateKeySet([new, *self._keys[:keep]])

    def public(self) -> KeySet:
        """Public halves, active first."""
        return KeySet(key.public for key in self._keys)

    def to_private_jwks(self) -> dict[str, list[dict[str, str]]]:
        """Private JWKS for a 0600 file; the first entry is the active key."""
        return {"keys": [key.to_private_jwk() for key in self._keys]}

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"PrivateKeySet(active={self.active.kid!r}, retired={len(self.retired)})"
