"""Key sets: lookup, rotation, JWKS import/export (threat J21)."""

from __future__ import annotations

import pytest

from keys.errors import InvalidKey, UnknownKeyId
from keys.keyset import KeySet, PrivateKeySet
from keys.material import PrivateKey


def test_lookup_is_by_kid_only() -> None:
    key = PrivateKey.generate("Ed25519").public
    keys = KeySet([key])
    assert keys.get(key.kid) is key
    for bad in ["../../dev/null", "", "x" * 129, None, 7, key.kid + " "]:
        with pytest.raises(UnknownKeyId):
            keys.get(bad)


def test_duplicate_kids_refused() -> None:
    key = PrivateKey.generate("Ed25519").public
    with pytest.raises(InvalidKey, match="duplicate"):
        KeySet([key, key])
    jwks = {"keys": [key.to_jwk(), key.to_jwk()]}
    with pytest.raises(InvalidKey, match="duplicate"):
        KeySet.from_jwks(jwks)


@pytest.mark.parametrize(
    "jwks",
    [{}, {"keys": []}, {"keys": {}}, {"keys": ["x"]}, {"keys": [], "extra": 1}],
)
def test_malformed_jwks_refused(jwks: dict[str, object]) -> None:
    with pytest.raises(InvalidKey):
        KeySet.from_jwks(jwks)


def test_public_jwks_with_private_member_refused() -> None:
    private = PrivateKey.generate("ES256")
    with pytest.raises(InvalidKey, match="private"):
        KeySet.from_jwks({"keys": [private.to_private_jwk()]})


def test_jwks_round_trip_keeps_order() -> None:
    keys = KeySet(PrivateKey.generate(alg).public for alg in ("Ed25519", "ES256"))
    again = KeySet.from_jwks(keys.to_jwks())
    assert [k.kid for k in again] == [k.kid for k in keys]
    assert all("d" not in jwk for jwk in again.to_jwks()["keys"])


def test_rotation_keeps_old_key_verify_only() -> None:
    first = PrivateKeySet.generate("Ed25519")
    old = first.active
    second = first.rotated()
    assert second.active.kid != old.kid
    assert second.retired == (old,)
    signature = old.sign(b"before rotation")
    assert second.public().get(old.kid).verify(signature, b"before rotation")
    assert next(iter(second.public())).kid == second.active.kid


def test_rotation_bounds_retired_keys() -> None:
    keys = PrivateKeySet.generate("ES256")
    for _ in range(10):
        keys = keys.rotated(keep=2)
    assert len(keys.retired) == 2


def test_rotation_refuses_reusing_a_key() -> None:
    keys = PrivateKeySet.generate("ES256")
    with pytest.raises(InvalidKey):
        keys.rotated(keys.active)


def test_private_set_refuses_mixed_uses() -> None:
    with pytest.raises(InvalidKey, match="mixes"):
        PrivateKeySet([PrivateKey.generate("ES256"), PrivateKey.generate("ECDH-ES+A256KW")])
    with pytest.raises(InvalidKey):
        PrivateKeySet([])


def test_private_jwks_round_trip() -> None:
    keys = PrivateKeySet.generate("Ed25519").rotated()
    again = PrivateKeySet.from_jwks(keys.to_private_jwks())
    assert again.active.kid == keys.active.kid
    assert [k.kid for k in again.retired] == [k.kid for k in keys.retired]


def test_merged_refuses_conflicting_kid() -> None:
    a = KeySet([PrivateKey.generate("ES256").public])
    assert len(a.merged(a)) == 1
    b = KeySet([PrivateKey.generate("ES256").public])
    assert len(a.merged(b)) == 2
