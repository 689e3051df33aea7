"""The import rules of DESIGN.md, enforced on every build.

* Layers import only layers below them: ``keys`` < ``protocol`` < ``adapters``
  < ``gateway``.
* Only ``keys/`` imports a cryptography, JOSE, JWT or HTTP-signature library.
* ``protocol/`` and ``adapters/`` do no I/O: no network, files, processes,
  threads, event loop, database, environment, logging or printing.

The checker reads source with :mod:`ast` (imports anywhere in a module count,
including inside functions and ``if TYPE_CHECKING:`` blocks). It is itself
tested on small synthetic modules, so a checker that silently passes
everything would fail here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("keys", "protocol", "adapters", "gateway")
CRYPTO_LIBRARIES = frozenset(
    {
        "cryptography",
        "joserfc",
        "jwt",
        "authlib",
        "jose",
        "jwcrypto",
        "http_message_signatures",
        "http_sfv",
        "nacl",
        "Crypto",
        "Cryptodome",
        "ecdsa",
        "OpenSSL",
    }
)
IO_MODULES = frozenset(
    {
        "aiohttp",
        "asyncio",
        "http",
        "httpx",
        "io",
        "logging",
        "multiprocessing",
        "os",
        "pathlib",
        "redis",
        "requests",
        "selectors",
        "shutil",
        "socket",
        "socketserver",
        "sqlite3",
        "ssl",
        "subprocess",
        "tempfile",
        "threading",
        "urllib",
    }
)
IO_BUILTINS = frozenset({"open", "print", "input", "exec", "eval", "compile", "breakpoint"})
NO_IO_LAYERS = frozenset({"protocol", "adapters"})


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, top-level module) for every absolute import in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield node.lineno, "<relative>"
            elif node.module:
                yield node.lineno, node.module.split(".")[0]


def violations(layer: str, source: str, filename: str = "<src>") -> list[str]:
    """Every rule broken by one module of ``layer``."""
    tree = ast.parse(source, filename)
    found = []
    rank = LAYERS.index(layer)
    for line, module in imported_modules(tree):
        where = f"{filename}:{line}"
        if module == "<relative>":
            found.append(f"{where}: relative import (use absolute imports)")
        elif module in LAYERS and LAYERS.index(module) > rank:
            found.append(f"{where}: {layer} imports {module}, a layer above it")
        elif module in CRYPTO_LIBRARIES and layer != "keys":
            found.append(f"{where}: {layer} imports crypto library {module}")
        elif module in IO_MODULES and layer in NO_IO_LAYERS:
            found.append(f"{where}: {layer} imports I/O module {module}")
    if layer in NO_IO_LAYERS:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in IO_BUILTINS
            ):
                found.append(f"{filename}:{node.lineno}: {layer} calls {node.func.id}()")
    return found


def layer_files() -> Iterator[tuple[str, Path]]:
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            yield layer, path


def test_every_layer_has_modules() -> None:
    found = {layer for layer, _ in layer_files()}
    assert found == set(LAYERS)


@pytest.mark.parametrize(
    ("layer", "path"),
    list(layer_files()),
    ids=[str(path.relative_to(ROOT)) for _, path in layer_files()],
)
def test_module_respects_layering(layer: str, path: Path) -> None:
    assert violations(layer, path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))) == []


@pytest.mark.parametrize(
    ("layer", "source", "expected"),
    [
        ("keys", "from protocol.errors import BatonError", "a layer above"),
        ("protocol", "import gateway.cli", "a layer above"),
        ("adapters", "from gateway import cli", "a layer above"),
        ("protocol", "from cryptography.hazmat.primitives import hashes", "crypto library"),
        ("gateway", "import jwt", "crypto library"),
        ("adapters", "import joserfc.jws", "crypto library"),
        ("protocol", "import sqlite3", "I/O module"),
        ("protocol", "def f():\n    import asyncio\n", "I/O module"),
        ("protocol", "from os import environ", "I/O module"),
        ("adapters", "from aiohttp import web", "I/O module"),
        ("protocol", "def f():\n    return open('x').read()\n", "calls open()"),
        ("protocol", "print('hello')", "calls print()"),
        ("protocol", "from . import errors", "relative import"),
    ],
)
def test_checker_catches(layer: str, source: str, expected: str) -> None:
    found = violations(layer, source)
    assert found, f"checker missed: {source!r}"
    assert expected in found[0]


@pytest.mark.parametrize(
    ("layer", "source"),
    [
        ("keys", "from cryptography import x509"),
        ("protocol", "from keys.jose import sign_compact\nimport hashlib, json, re"),
        ("gateway", "import asyncio, sqlite3\nfrom protocol.errors import BatonError"),
        ("adapters", "from protocol.errors import BatonError\nfrom keys import strictjson"),
    ],
)
def test_checker_allows(layer: str, source: str) -> None:
    assert violations(layer, source) == []
