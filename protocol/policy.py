"""Call policy: deny by default (DESIGN.md "Policy").

A :class:`Policy` is built once from configuration rules and answers one
question on the hot path: may ``caller`` invoke ``method`` on ``upstream``,
and, when the call names a target (an MCP tool, resource or prompt; an A2A
skill), that target? Only an explicit rule allows; ``"*"`` in a rule's methods
allows every method of that upstream and must be written out.

Targets are checked per upstream: a rule allowing tool ``refund`` on
``billing`` says nothing about a tool of the same name on another server, so a
same-name tool elsewhere is never reachable by mistake (tool namespacing; the
"wrong-provider tool execution" case of arXiv:2602.11327). A target pattern is
an exact name, a prefix ending in ``*``, or ``"*"``. A call that names a target
is denied unless some pattern of that kind matches, even when the method is
allowed: allowing ``tools/call`` alone allows no tool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from protocol.errors import PolicyDenied

__all__ = [
    "ANY_METHOD",
    "TARGET_KINDS",
    "ApprovalPolicy",
    "ApprovalRule",
    "Hold",
    "Policy",
    "Rule",
    "TargetPatterns",
]

ANY_METHOD: Final = "*"
TARGET_KINDS: Final = frozenset({"tool", "resource", "prompt", "skill"})


class TargetPatterns:
    """Exact names and ``prefix*`` patterns of one target kind."""

    __slots__ = ("_any", "_exact", "_prefixes")

    def __init__(self, patterns: Iterable[str]) -> None:
        exact: set[str] = set()
        prefixes: set[str] = set()
        for pattern in patterns:
            if pattern.endswith("*"):
                prefixes.add(pattern[:-1])
            else:
                exact.add(pattern)
        self._any = "" in prefixes
        self._exact = frozenset(exact)
        self._prefixes = tuple(sorted(prefixes))

    def matches(self, target: str) -> bool:
        return self._any or target in self._exact or target.startswith(self._prefixes)


@dataclass(frozen=True, slots=True)
class Rule:
    """``caller`` (agent name) may call ``methods`` on ``upstream`` (upstream name),
    and the targets listed per kind in ``targets`` (``{"tool": {"refund"}}``)."""

    caller: str
    upstream: str
    methods: frozenset[str]
    targets: Mapping[str, frozenset[str]] = field(default_factory=dict)


class Policy:
    """An immutable allow-list indexed by ``(caller, upstream)``."""

    __slots__ = ("_allowed", "_targets")

    def __init__(self, rules: Iterable[Rule]) -> None:
        allowed: dict[tuple[str, str], frozenset[str]] = {}
        patterns: dict[tuple[str, str, str], set[str]] = {}
        for rule in rules:
            key = (rule.caller, rule.upstream)
            allowed[key] = allowed.get(key, frozenset()) | rule.methods
            for kind, names in rule.targets.items():
                if kind not in TARGET_KINDS:
                    raise ValueError(f"unknown target kind {kind!r}")
                patterns.setdefault((rule.caller, rule.upstream, kind), set()).update(names)
        self._allowed = allowed
        self._targets = {key: TargetPatterns(names) for key, names in patterns.items()}
        if not allowed:
            raise ValueError("an empty policy denies everything; configure at least one rule")

    def allows(
        self,
        caller: str,
        upstream: str,
        method: str,
        target_kind: str | None = None,
        target: str | None = None,
    ) -> bool:
        methods = self._allowed.get((caller, upstream))
        if methods is None or (method not in methods and ANY_METHOD not in methods):
            return False
        if target_kind is None:
            return True
        if target is None:
            return False
        patterns = self._targets.get((caller, upstream, target_kind))
        return patterns is not None and patterns.matches(target)

    def check(
        self,
        caller: str,
        upstream: str,
        method: str,
        target_kind: str | None = None,
        target: str | None = None,
    ) -> None:
        """Raise :class:`PolicyDenied` unless a rule allows the call (and its target)."""
        if not self.allows(caller, upstream, method, target_kind, target):
            what = (
                f"{method!r}" if target_kind is None else f"{method!r} on {target_kind} {target!r}"
            )
            raise PolicyDenied(f"no rule lets {caller} call {what} on {upstream}")


@dataclass(frozen=True, slots=True)
class Hold:
    """Where a held call's handoff goes: ``queue``, to be decided within
    ``resolve_within_s`` seconds; ``reason`` is shown to the operator."""

    queue: str
    resolve_within_s: int
    reason: str


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """Hold calls by ``callers`` (empty: any) to ``targets`` (``{"tool": {...}}``)
    on ``upstream`` for a person's approval."""

    upstream: str
    callers: frozenset[str]
    targets: Mapping[str, frozenset[str]]
    hold: Hold


class ApprovalPolicy:
    """``require_approval`` rules (DESIGN "Policy"), indexed by upstream.

    Asked only for calls the allow-list already admitted: holding never
    allows. The first matching rule, in configuration order, names the queue.
    """

    __slots__ = ("_rules",)

    def __init__(self, rules: Iterable[ApprovalRule] = ()) -> None:
        by_upstream: dict[str, list[tuple[frozenset[str], str, TargetPatterns, Hold]]] = {}
        for rule in rules:
            for kind, names in rule.targets.items():
                if kind not in TARGET_KINDS:
                    raise ValueError(f"unknown target kind {kind!r}")
                by_upstream.setdefault(rule.upstream, []).append(
                    (rule.callers, kind, TargetPatterns(names), rule.hold)
                )
        self._rules = {name: tuple(entries) for name, entries in by_upstream.items()}

    def __bool__(self) -> bool:
        return bool(self._rules)

    def hold_for(
        self, caller: str, upstream: str, target_kind: str | None, target: str | None
    ) -> Hold | None:
        """The hold for this call, or None if no rule holds it."""
        entries = self._rules.get(upstream)
        if entries is None or target_kind is None or target is None:
            return None
        for callers, kind, patterns, hold in entries:
            if kind == target_kind and (not callers or caller in callers):
                if patterns.matches(target):
                    return hold
        return None
