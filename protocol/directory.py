"""Who owns which key: identity -> public keys, and ``kid`` -> identity.

The gateway verifies a signature with whatever key the ``keyid`` names, then
asks :meth:`KeyDirectory.owner_of` *who* signed; that identity is compared
with the identity the channel authenticated (mTLS, JWT) and with the claims
inside the artifact (``iss``, ``operator``). A ``kid`` that two identities
claim is a configuration error: one key, one owner.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from keys.keyset import KeySet
from protocol.errors import ConfigurationError, UnknownKeyId

__all__ = ["KeyDirectory"]


class KeyDirectory:
    """Immutable map of identities to their public key sets."""

    __slots__ = ("_all", "_by_identity", "_owner")

    def __init__(self, entries: Mapping[str, KeySet]) -> None:
        self._by_identity = dict(entries)
        self._owner: dict[str, str] = {}
        for identity, keys in self._by_identity.items():
            for key in keys:
                other = self._owner.setdefault(key.kid, identity)
                if other != identity:
                    raise ConfigurationError(
                        f"key {key.kid} is listed for both {other} and {identity}"
                    )
        self._all = KeySet(key for keys in self._by_identity.values() for key in keys)

    @property
    def all_keys(self) -> KeySet:
        """Every key, for signature lookup by ``kid``."""
        return self._all

    def owner_of(self, kid: str) -> str:
        """The identity that owns ``kid``."""
        try:
            return self._owner[kid]
        except KeyError:
            raise UnknownKeyId("kid has no owner in the directory") from None

    def keys_of(self, identity: str) -> KeySet:
        try:
            return self._by_identity[identity]
        except KeyError:
            raise UnknownKeyId(f"no keys for {identity}") from None

    def __contains__(self, identity: object) -> bool:
        return identity in self._by_identity

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_identity)

    def __len__(self) -> int:
        return len(self._by_identity)
