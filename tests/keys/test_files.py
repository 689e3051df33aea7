"""Key files: 0600, atomic writes, refusal of loose permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from keys.errors import InsecureKeyFile
from keys.files import (
    load_jwks,
    load_private_jwks,
    read_private_file,
    save_jwks,
    save_private_jwks,
    write_private_file,
)
from keys.keyset import PrivateKeySet


def test_private_files_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "key.jwks"
    keys = PrivateKeySet.generate("Ed25519")
    save_private_jwks(path, keys)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_private_jwks(path).active.kid == keys.active.kid


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602, 0o620])
def test_loose_permissions_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "key.jwks"
    save_private_jwks(path, PrivateKeySet.generate("ES256"))
    os.chmod(path, mode)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        load_private_jwks(path)


def test_0400_accepted(tmp_path: Path) -> None:
    path = tmp_path / "key"
    write_private_file(path, b"secret")
    os.chmod(path, 0o400)
    assert read_private_file(path) == b"secret"


def test_symlink_to_loose_file_refused(tmp_path: Path) -> None:
    target = tmp_path / "real"
    write_private_file(target, b"secret")
    os.chmod(target, 0o644)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(InsecureKeyFile):
        read_private_file(link)


def test_directory_refused(tmp_path: Path) -> None:
    folder = tmp_path / "dir"
    folder.mkdir(mode=0o700)
    with pytest.raises(InsecureKeyFile, match="regular file"):
        read_private_file(folder)


def test_atomic_write_replaces_without_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "key"
    write_private_file(path, b"one")
    write_private_file(path, b"two")
    assert read_private_file(path) == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def test_public_jwks_file(tmp_path: Path) -> None:
    keys = PrivateKeySet.generate("ES256")
    path = tmp_path / "jwks.json"
    save_jwks(path, keys.public())
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert b'"d"' not in path.read_bytes()
    assert [k.kid for k in load_jwks(path)] == [keys.active.kid]
