"""Regression tests for what the fuzzers found (one test per finding).

1. ``keys.jose.recipient_key`` put each recipient header's ``kid`` in a set,
   so a JWE whose ``kid`` is a JSON array or object raised ``TypeError:
   unhashable type`` instead of ``InvalidEnvelope``: a sealed bundle
   (``open_bundle``, the inbox and ``baton verify``) or a capsule
   (``open_capsule_at``) with ``"kid": []`` crashed the parser. Found by
   ``test_jwe_decrypts_or_refuses`` / ``test_bundle_opens_or_refuses``
   (Hypothesis, structure-mutated samples). Fixed in keys/jose.py: a kid
   that is not a string names no key.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from keys import jose
from keys.errors import InvalidEnvelope
from protocol.errors import BatonError
from tests.fuzz.targets import ENC, ENC_KEYS, TARGETS, samples


def _with_first_kid(obj: dict[str, Any], kid: Any) -> dict[str, Any]:
    changed = copy.deepcopy(obj)
    changed["recipients"][0]["header"]["kid"] = kid
    return changed


@pytest.mark.threat("E04")
@pytest.mark.parametrize("kid", [[], {}, ["x"], {"a": 1}, None, 7, 1.5, True])
def test_recipient_key_with_a_kid_that_is_not_a_string(kid: Any) -> None:
    general = json.loads(samples("jwe")[0])
    general["recipients"] = [general["recipients"][0]]  # only our entry
    assert general["recipients"][0]["header"]["kid"] == ENC.kid
    with pytest.raises(InvalidEnvelope):
        jose.recipient_key(_with_first_kid(general, kid), ENC_KEYS)
    with pytest.raises(InvalidEnvelope):
        jose.decrypt(_with_first_kid(general, kid), ENC, typ="fuzz+jwe")


@pytest.mark.threat("E04")
def test_our_entry_is_still_found_next_to_a_malformed_one() -> None:
    general = json.loads(samples("jwe")[0])
    mine = general["recipients"][0]
    general["recipients"] = [{"header": {"kid": []}, "encrypted_key": "AAAA"}, mine]
    assert jose.recipient_key(general, ENC_KEYS) is ENC


@pytest.mark.threat("H02", "E04")
@pytest.mark.parametrize("name", ["bundle", "capsule"])
def test_sealed_bundle_and_capsule_with_an_array_kid(name: str) -> None:
    sealed = json.loads(next(s for s in samples(name) if s.startswith(b"{")))
    data = json.dumps(_with_first_kid(sealed, [])).encode()
    TARGETS[name](data)  # raises only BatonError, which the target accepts
    run = TARGETS[name].run
    with pytest.raises(BatonError):
        run(data)
