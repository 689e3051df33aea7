"""protocol/directory.py: one key, one owner."""

from __future__ import annotations

from keys.keyset import KeySet
from keys.material import PrivateKey
from protocol.directory import KeyDirectory
from protocol.errors import ConfigurationError, UnknownKeyId
from tests.protocol._support import ALICE, ALPHA, BETA, raises_exactly


def test_lookup(alpha_sig: PrivateKey, beta_sig: PrivateKey, alice_sig: PrivateKey) -> None:
    directory = KeyDirectory(
        {
            ALPHA: KeySet([alpha_sig.public]),
            BETA: KeySet([beta_sig.public]),
            ALICE: KeySet([alice_sig.public]),
        }
    )
    assert directory.owner_of(alpha_sig.kid) == ALPHA
    assert directory.owner_of(alice_sig.kid) == ALICE
    assert list(directory.keys_of(BETA)) == [beta_sig.public]
    assert {key.kid for key in directory.all_keys} == {alpha_sig.kid, beta_sig.kid, alice_sig.kid}
    assert ALPHA in directory and "spiffe://baton.local/agent/other" not in directory
    assert list(directory) == [ALPHA, BETA, ALICE]
    assert len(directory) == 3


def test_an_identity_may_hold_several_keys(alpha_sig: PrivateKey, beta_sig: PrivateKey) -> None:
    directory = KeyDirectory({ALPHA: KeySet([alpha_sig.public, beta_sig.public])})
    assert directory.owner_of(alpha_sig.kid) == directory.owner_of(beta_sig.kid) == ALPHA


def test_one_key_two_owners_is_a_configuration_error(alpha_sig: PrivateKey) -> None:
    with raises_exactly(ConfigurationError) as info:
        KeyDirectory({ALPHA: KeySet([alpha_sig.public]), BETA: KeySet([alpha_sig.public])})
    assert info.value.http_status == 500


def test_unknown_kid_and_identity(alpha_sig: PrivateKey, rogue_key: PrivateKey) -> None:
    directory = KeyDirectory({ALPHA: KeySet([alpha_sig.public])})
    with raises_exactly(UnknownKeyId):
        directory.owner_of(rogue_key.kid)
    with raises_exactly(UnknownKeyId):
        directory.owner_of("")
    with raises_exactly(UnknownKeyId):
        directory.keys_of(BETA)


def test_later_changes_to_the_source_mapping_do_not_leak_in(
    alpha_sig: PrivateKey, rogue_key: PrivateKey
) -> None:
    source = {ALPHA: KeySet([alpha_sig.public])}
    directory = KeyDirectory(source)
    source[BETA] = KeySet([rogue_key.public])
    assert BETA not in directory
    with raises_exactly(UnknownKeyId):
        directory.owner_of(rogue_key.kid)


def test_empty_directory_knows_no_one(alpha_sig: PrivateKey) -> None:
    directory = KeyDirectory({})
    assert len(directory) == 0
    assert len(directory.all_keys) == 0
    with raises_exactly(UnknownKeyId):
        directory.owner_of(alpha_sig.kid)
