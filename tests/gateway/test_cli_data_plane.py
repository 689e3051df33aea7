"""``baton check-config``, ``transcript verify``, ``audit verify`` and ``trace``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, parse
from tests.gateway._harness import rpc
from tests.gateway.conftest import Running

BASE = 'trust_domain = "baton.local"\n'
AGENTS = '[[agents]]\nname = "a"\n[[agents]]\nname = "b"\n'
UPSTREAM = '[[upstreams]]\nname = "b"\nurl = "https://127.0.0.1:9001"\n'


async def cli(argv: list[str]) -> int:
    """The CLI runs its own event loop; give it a thread of its own."""
    return await asyncio.to_thread(main, argv)


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text).require_serving_policy()
    return str(caught.value)


def test_empty_policy_is_an_error_naming_the_key() -> None:
    message = _error(BASE + AGENTS + UPSTREAM)
    assert "policy.allow" in message and "deny by default" in message


def test_rule_naming_an_unknown_agent_or_upstream() -> None:
    rule = '[[policy.allow]]\ncaller = "{c}"\nupstream = "{u}"\nmethods = ["x"]\n'
    message = _error(BASE + AGENTS + UPSTREAM + rule.format(c="ghost", u="b"))
    assert "policy.allow[0].caller 'ghost' is not a configured agent" in message
    message = _error(BASE + AGENTS + UPSTREAM + rule.format(c="a", u="ghost"))
    assert "policy.allow[0].upstream 'ghost' is not a configured upstream" in message


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('[gateway]\nadmin_listen = "0.0.0.0:9464"\n', "gateway: admin_listen"),
        ('[gateway]\nlisten = "nope"\n', "gateway.listen"),
        ('[store]\nkind = "redis"\n', "needs store.url"),
        ('[[upstreams]]\nname = "c"\nurl = "http://x"\n', "upstreams.0.url"),
        ('[gateway]\nclient_auth = "optional"\n', "client_auth"),
        ('[[agents]]\nname = "c"\nbearer = "required"\n', "no [[bearer_issuers]]"),
        ("[limits]\nmax_body_bytes = 1\n", "limits.max_body_bytes"),
        ('[[policy.allow]]\ncaller = "a"\nupstream = "b"\nmethods = []\n', "methods"),
        ("[gateway]\nlisten_typo = 1\n", "remove it (unknown key"),
        ('[gateway]\nallowed_origins = ["https://a.example/x"]\n', "is not an origin"),
        ('[[upstreams]]\nname = "c"\nurl = "https://x"\nprotocol = "grpc"\n', "protocol"),
        (
            AGENTS + UPSTREAM + '[[policy.allow]]\ncaller = "a"\nupstream = "b"\n'
            'methods = ["tools/call"]\ntools = ["refund"]\n',
            "policy.allow[0].tools: upstream 'b' has protocol 'http'",
        ),
    ],
)
def test_config_errors_name_the_key(snippet: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(BASE + snippet)
    assert expected in str(caught.value)


def test_check_config_loads_keys_and_policy(
    gw: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--dir", str(gw.folder.root)]) == 0
    out = capsys.readouterr().out
    assert "4 agents, 1 upstreams, 3 policy rules, store sqlite" in out
    (gw.folder.data / "store.key").unlink()
    assert main(["check-config", "--dir", str(gw.folder.root)]) == 1
    assert "store key" in capsys.readouterr().err


async def test_transcript_verify_trace_and_audit(
    gw: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    conversation = [("baton-conversation", "conv-cli")]
    for method in ("tools/list", "tools/call"):
        status, _, _ = await gw.send("support", "/u/billing/x", rpc(method), extra=conversation)
        assert status == 200
    root = str(gw.folder.root)
    assert await cli(["transcript", "verify", "conv-cli", "--dir", root]) == 0
    assert "conv-cli: ok, 4 entries" in capsys.readouterr().out
    assert await cli(["audit", "verify", "--dir", root]) == 0
    assert "audit log: ok, 2 events" in capsys.readouterr().out
    assert await cli(["trace", "conv-cli", "--dir", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    assert "spiffe://baton.local/agent/support" in lines[1] and "tools/list" in lines[1]
    assert lines[2].split()[-2:] == ["ms", "no"] and " 200 " in lines[2]
    assert await cli(["trace", "nothing-here", "--dir", root]) == 1


async def _tamper(gw: Running, sql: str, *params: object) -> None:
    db = sqlite3.connect(gw.folder.root / ".baton" / "baton.db")
    try:
        db.execute(sql, params)
        db.commit()
    finally:
        db.close()


async def test_transcript_verify_catches_an_edited_entry(
    gw: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    await gw.send(
        "support", "/u/billing/x", rpc("tools/list"), extra=[("baton-conversation", "c1")]
    )
    record = json.loads(
        sqlite3.connect(gw.folder.root / ".baton" / "baton.db")
        .execute("SELECT record FROM transcript_entries WHERE conversation='c1' AND seq=0")
        .fetchone()[0]
    )
    record["method"] = "tools/call"  # rewrite history: the caller "asked" for something else
    edited = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    await _tamper(
        gw, "UPDATE transcript_entries SET record=? WHERE conversation='c1' AND seq=0", edited
    )
    assert await cli(["transcript", "verify", "c1", "--dir", str(gw.folder.root)]) == 1
    assert "chain_break" in capsys.readouterr().err


async def test_audit_verify_catches_a_deleted_event(
    gw: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(3):
        await gw.send("support", "/u/billing/x", rpc("tools/list"))
    await _tamper(gw, "DELETE FROM audit_events WHERE seq = 1")
    assert await cli(["audit", "verify", "--dir", str(gw.folder.root)]) == 1
    assert (
        "seq_violation" in capsys.readouterr().err or "bundle_integrity" in capsys.readouterr().err
    )


def test_transcript_verify_of_an_unknown_conversation(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path)]) == 0
    assert main(["transcript", "verify", "nope", "--dir", str(tmp_path)]) == 1
