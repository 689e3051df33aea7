"""Key fixtures for the protocol tests: generated once per session, never hard-coded."""

from __future__ import annotations

import pytest

from keys.keyset import KeySet, PrivateKeySet
from keys.material import PrivateKey


@pytest.fixture(scope="session")
def gateway_key() -> PrivateKey:
    return PrivateKey.generate("Ed25519")


@pytest.fixture(scope="session")
def gateway_keys(gateway_key: PrivateKey) -> KeySet:
    return KeySet([gateway_key.public])


@pytest.fixture(scope="session")
def rogue_key() -> PrivateKey:
    """A signing key that no key set or directory lists."""
    return PrivateKey.generate("Ed25519")


# Agents: signing keys (one of each algorithm) and encryption key sets.
@pytest.fixture(scope="session")
def alpha_sig() -> PrivateKey:
    return PrivateKey.generate("Ed25519")


@pytest.fixture(scope="session")
def beta_sig() -> PrivateKey:
    return PrivateKey.generate("ES256")


@pytest.fixture(scope="session")
def alpha_enc() -> PrivateKeySet:
    return PrivateKeySet.generate("ECDH-ES+A256KW")


@pytest.fixture(scope="session")
def beta_enc() -> PrivateKeySet:
    """Rotated once: an active key plus one retired (decrypt-only) key."""
    return PrivateKeySet.generate("ECDH-ES+A256KW").rotated()


@pytest.fixture(scope="session")
def payments_enc() -> PrivateKeySet:
    return PrivateKeySet.generate("ECDH-ES+A256KW")


@pytest.fixture(scope="session")
def mallory_enc() -> PrivateKeySet:
    return PrivateKeySet.generate("ECDH-ES+A256KW")


# Operators: signing keys (decisions) and encryption key sets (bundles).
@pytest.fixture(scope="session")
def alice_sig() -> PrivateKey:
    return PrivateKey.generate("ES256")


@pytest.fixture(scope="session")
def bob_sig() -> PrivateKey:
    return PrivateKey.generate("Ed25519")


@pytest.fixture(scope="session")
def alice_enc() -> PrivateKeySet:
    return PrivateKeySet.generate("ECDH-ES+A256KW")


@pytest.fixture(scope="session")
def bob_enc() -> PrivateKeySet:
    return PrivateKeySet.generate("ECDH-ES+A256KW")


@pytest.fixture(scope="session")
def carol_enc() -> PrivateKeySet:
    return PrivateKeySet.generate("ECDH-ES+A256KW")
