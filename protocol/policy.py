"""Call policy: deny by default (DESIGN.md "Policy").

A :class:`Policy` is built once from configuration rules and answers one
question on the hot path: may ``caller`` invoke ``method`` on ``upstream``?
Only an explicit rule allows; ``"*"`` in a rule's methods allows every method
of that upstream and must be written out. Tools and skills are checked by the
adapters' refinement of ``method`` in a later layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from protocol.errors import PolicyDenied

__all__ = ["ANY_METHOD", "Policy", "Rule"]

ANY_METHOD: Final = "*"


@dataclass(frozen=True, slots=True)
class Rule:
    """``caller`` (agent name) may call ``methods`` on ``upstream`` (upstream name)."""

    caller: str
    upstream: str
    methods: frozenset[str]


class Policy:
    """An immutable allow-list indexed by ``(caller, upstream)``."""

    __slots__ = ("_allowed",)

    def __init__(self, rules: Iterable[Rule]) -> None:
        allowed: dict[tuple[str, str], frozenset[str]] = {}
        for rule in rules:
            key = (rule.caller, rule.upstream)
            allowed[key] = allowed.get(key, frozenset()) | rule.methods
        self._allowed = allowed
        if not allowed:
            raise ValueError("an empty policy denies everything; configure at least one rule")

    def allows(self, caller: str, upstream: str, method: str) -> bool:
        methods = self._allowed.get((caller, upstream))
        return methods is not None and (method in methods or ANY_METHOD in methods)

    def check(self, caller: str, upstream: str, method: str) -> None:
        """Raise :class:`PolicyDenied` unless a rule allows the call."""
        if not self.allows(caller, upstream, method):
            raise PolicyDenied(f"no rule lets {caller} call {method!r} on {upstream}")
