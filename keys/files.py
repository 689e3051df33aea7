"""Reading and writing key files safely.

Private key files are created ``0600`` inside ``0700`` folders, written
atomically (temporary file + ``rename``), and refused at load when group or
others have any access: the same rule OpenSSH applies ("UNPROTECTED PRIVATE
KEY FILE"). The mode is read with ``fstat`` on the opened descriptor, so a file
swapped between check and read is still checked.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from keys import strictjson
from keys.errors import InsecureKeyFile, InvalidKey
from keys.keyset import KeySet, PrivateKeySet

__all__ = [
    "load_jwks",
    "load_private_jwks",
    "read_private_file",
    "save_jwks",
    "save_private_jwks",
    "write_private_file",
    "write_public_file",
]

_MAX_KEY_FILE = 1 << 20


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically."""
    _atomic_write(path, data, 0o600)


def write_public_file(path: Path, data: bytes) -> None:
    """Write non-secret ``data`` (certificates, public JWKS) with mode 0644."""
    _atomic_write(path, data, 0o644)


def read_private_file(path: Path) -> bytes:
    """Read a private key file, refusing one that group or others can access."""
    fd = os.open(path, os.O_RDONLY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InsecureKeyFile(f"{path}: not a regular file")
        if info.st_mode & 0o077:
            raise InsecureKeyFile(
                f"{path}: private key is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run 'chmod 600 {path}' "
                "(in Kubernetes, mount the secret with defaultMode 0400)"
            )
        if info.st_size > _MAX_KEY_FILE:
            raise InvalidKey(f"{path}: larger than {_MAX_KEY_FILE} bytes")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read(_MAX_KEY_FILE + 1)
    finally:
        os.close(fd)


def _dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def load_private_jwks(path: Path) -> PrivateKeySet:
    """Load a private key set written by :func:`save_private_jwks`."""
    return PrivateKeySet.from_jwks(strictjson.loads_object(read_private_file(path)))


def save_private_jwks(path: Path, keys: PrivateKeySet) -> None:
    write_private_file(path, _dump(keys.to_private_jwks()))


def load_jwks(path: Path) -> KeySet:
    """Load a public JWKS file."""
    data = path.read_bytes()
    return KeySet.from_jwks(strictjson.loads_object(data, max_bytes=_MAX_KEY_FILE))


def save_jwks(path: Path, keys: KeySet) -> None:
    write_public_file(path, _dump(keys.to_jwks()))
