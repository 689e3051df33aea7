"""Fuzz property: ``gateway/config.py`` parse on arbitrary and mutated TOML.

``baton check-config`` and start-up read this file: whatever it holds, the
answer is a validated ``BatonConfig`` or a ``ConfigError`` naming the
problem, never a traceback.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import FUZZ, TOKENS, mutated
from tests.fuzz.targets import TARGETS, samples


@FUZZ
@given(
    data=st.binary(max_size=512)
    | st.text(max_size=200).map(str.encode)
    | st.lists(st.sampled_from(TOKENS), max_size=30).map(b"".join)
    | mutated(samples("config"))
)
def test_config_parses_or_explains(data: bytes) -> None:
    TARGETS["config"](data)
