"""Shared fixtures.

External test vectors live outside the project (``../shared/vectors`` by
default, or ``$BATON_VECTORS``); tests that need them skip with a clear
message when the folder is absent. CI always has them and sets
``BATON_REQUIRE_VECTORS=1`` so a missing folder fails instead of skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

_DEFAULT_VECTORS = Path(__file__).resolve().parent.parent.parent / "shared" / "vectors"


def vectors_root() -> Path | None:
    root = Path(os.environ.get("BATON_VECTORS", _DEFAULT_VECTORS))
    return root if (root / "MANIFEST.json").is_file() else None


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    root = vectors_root()
    if root is None:
        message = (
            "external test vectors not found: set BATON_VECTORS to the folder holding "
            f"MANIFEST.json (default {_DEFAULT_VECTORS})"
        )
        if os.environ.get("BATON_REQUIRE_VECTORS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root


# Hypothesis: explore freely on a developer machine, reproducibly in CI.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("BATON_CI") == "1" else "dev")
