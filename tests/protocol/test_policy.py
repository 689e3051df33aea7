"""Deny-by-default policy with per-upstream targets (tools, resources, prompts, skills)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import PolicyDenied
from protocol.policy import Policy, Rule

POLICY = Policy(
    [
        Rule("support", "billing", frozenset({"tools/call", "tools/list", "resources/read"}),
             {"tool": frozenset({"refund", "lookup_*"}), "resource": frozenset({"docs://*"})}),
        Rule("support", "crm", frozenset({"tools/call"}), {"tool": frozenset({"*"})}),
        Rule("ops", "billing", frozenset({"*"})),
    ]
)  # fmt: skip


@pytest.mark.parametrize(
    ("caller", "upstream", "method", "kind", "target", "allowed"),
    [
        ("support", "billing", "tools/list", None, None, True),
        ("support", "billing", "tools/call", "tool", "refund", True),
        ("support", "billing", "tools/call", "tool", "lookup_order", True),
        ("support", "billing", "tools/call", "tool", "lookup", False),  # prefix needs its "_"
        ("support", "billing", "tools/call", "tool", "refund_all", False),
        ("support", "billing", "tools/call", "tool", None, False),  # a target kind, no name
        ("support", "billing", "resources/read", "resource", "docs://policy", True),
        ("support", "billing", "resources/read", "resource", "file:///etc/passwd", False),
        ("support", "billing", "prompts/get", "prompt", "x", False),  # method not allowed
        # the same tool name on another upstream is another tool
        ("support", "crm", "tools/call", "tool", "refund", True),
        ("support", "payments", "tools/call", "tool", "refund", False),
        # "*" methods allow every method, but still no target unless listed
        ("ops", "billing", "anything", None, None, True),
        ("ops", "billing", "tools/call", "tool", "refund", False),
        ("nobody", "billing", "tools/list", None, None, False),
    ],
)
def test_policy_decisions(  # noqa: PLR0917 - one parameter per column of the table
    caller: str, upstream: str, method: str, kind: str | None, target: str | None, allowed: bool
) -> None:
    assert POLICY.allows(caller, upstream, method, kind, target) is allowed
    if not allowed:
        with pytest.raises(PolicyDenied):
            POLICY.check(caller, upstream, method, kind, target)


def test_empty_policy_and_unknown_kinds_are_errors() -> None:
    with pytest.raises(ValueError, match="empty policy"):
        Policy([])
    with pytest.raises(ValueError, match="unknown target kind"):
        Policy([Rule("a", "b", frozenset({"x"}), {"gadget": frozenset({"y"})})])


@given(st.text(max_size=40))
def test_a_call_naming_a_target_is_never_allowed_without_a_matching_pattern(name: str) -> None:
    expected = name == "refund" or name.startswith("lookup_")
    assert POLICY.allows("support", "billing", "tools/call", "tool", name) is expected
