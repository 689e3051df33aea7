"""Fuzz properties: handoff bundles (``protocol/bundle.py``) and ``baton verify``
(``gateway/verify.py``) on arbitrary and mutated bytes.

The samples are one real handoff (built as ``tests/gateway/test_verify.py``
builds it, with fixed keys): the signed bundle JWS, the sealed JWE, an export
and a decision. Opening or verifying either succeeds on the one bundle that
was signed or raises ``BatonError``; never another exception.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import FUZZ, json_mutated, mutated
from tests.fuzz.targets import TARGETS, samples


def _inputs(name: str) -> st.SearchStrategy[bytes]:
    return st.binary(max_size=512) | mutated(samples(name)) | json_mutated(samples(name))


@pytest.mark.threat("H02", "H13", "E04")
@FUZZ
@given(data=_inputs("bundle"))
def test_bundle_opens_or_refuses(data: bytes) -> None:
    TARGETS["bundle"](data)


@pytest.mark.threat("H02", "H05")
@FUZZ
@given(data=_inputs("verify"))
def test_verify_artifact_verifies_or_refuses(data: bytes) -> None:
    TARGETS["verify"](data)
