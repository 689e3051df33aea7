"""Fuzz properties: RFC 8941 structured fields and RFC 9421 signature headers.

``keys/sfv.py`` parses or raises ``MalformedInput``/``TooLarge``, and what it
parses serialises to text that parses back to the same value.
``keys/httpsig.py`` verifies a whole request whose ``Signature-Input``,
``Signature`` and ``Content-Digest`` (and every covered field) were mutated:
it accepts only what was signed, or raises a ``KeysError``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import FUZZ, TOKENS, mutated
from tests.fuzz.targets import TARGETS, samples

_SFV_CHARS = st.sampled_from([*list(b'abc09*-_.:/=;,()" ?%\\\t@'), 127, 128, 0])


@pytest.mark.threat("R10", "R12")
@FUZZ
@given(
    data=st.binary(max_size=256)
    | st.lists(_SFV_CHARS, max_size=120).map(bytes)
    | st.lists(st.sampled_from(TOKENS), max_size=30).map(b"".join)
    | mutated(samples("sfv"))
)
def test_structured_fields_parse_or_refuse_and_round_trip(data: bytes) -> None:
    TARGETS["sfv"](data)


@pytest.mark.threat("R10", "R11", "R12", "R13")
@FUZZ
@given(data=mutated(samples("httpsig")))
def test_signed_request_verifies_or_refuses(data: bytes) -> None:
    TARGETS["httpsig"](data)
