"""The ``baton`` command on a fresh folder: init, keys, check-config, demo."""

from __future__ import annotations

import json
import re
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.devdata import DataFolder
from keys.files import load_private_jwks
from keys.passwords import verify_password


@pytest.fixture
def home(tmp_path: Path) -> Path:
    assert main(["init", str(tmp_path)]) == 0
    return tmp_path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_layout_and_permissions(home: Path) -> None:
    data = home / ".baton"
    assert (home / "baton.toml").is_file()
    assert (data / ".gitignore").read_text().splitlines()[-1] == "*"
    assert _mode(data) == 0o700
    private = [
        data / "ca" / "ca.key",
        data / "gateway" / "tls.key",
        data / "gateway" / "signing.jwks",
        data / "gateway" / "card-signing.jwks",
        *(
            data / "agents" / name / f
            for name in ("support", "billing")
            for f in ("tls.key", "signing.jwks", "encryption.jwks")
        ),
    ]
    for path in private:
        assert _mode(path) == 0o600, path
    for path in (data / "gateway" / "jwks.json", data / "agents" / "support" / "public.jwks"):
        assert b'"d"' not in path.read_bytes()


def test_init_prints_the_sample_operators_password_once_and_keeps_only_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    match = re.search(r"^  password      (\S+)$", out, re.MULTILINE)
    assert match is not None, out
    password = match.group(1)
    stored = (tmp_path / ".baton" / "operators" / "demo-operator" / "password").read_text()
    assert verify_password(password, stored.strip())
    for path in (tmp_path / ".baton").rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    assert password not in (tmp_path / "baton.toml").read_text()


def test_init_refuses_to_overwrite(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (home / ".baton" / "gateway" / "signing.jwks").read_bytes()
    assert main(["init", str(home)]) == 1
    assert "--force" in capsys.readouterr().err
    assert (home / ".baton" / "gateway" / "signing.jwks").read_bytes() == before


def test_init_force_replaces_everything(home: Path) -> None:
    assert main(["keys", "new-agent", "extra", "--dir", str(home)]) == 0
    old = load_private_jwks(home / ".baton" / "gateway" / "signing.jwks").active.kid
    assert main(["init", "--force", str(home)]) == 0
    assert load_private_jwks(home / ".baton" / "gateway" / "signing.jwks").active.kid != old
    assert not (home / ".baton" / "agents" / "extra").exists()


@pytest.mark.parametrize("domain", ["Baton.Local", "a/b", "", "x" * 300])
def test_init_refuses_bad_trust_domain(tmp_path: Path, domain: str) -> None:
    assert main(["init", "--trust-domain", domain, str(tmp_path)]) == 1
    assert not (tmp_path / "baton.toml").exists()


def test_new_agent(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new-agent", "triage", "--dir", str(home)]) == 0
    assert "spiffe://baton.local/agent/triage" in capsys.readouterr().out
    assert 'name = "triage"' in (home / "baton.toml").read_text()
    assert main(["keys", "new-agent", "triage", "--dir", str(home)]) == 1
    assert main(["keys", "new-agent", "Bad/Name", "--dir", str(home)]) == 1


def test_rotate_keeps_old_key_for_verification(home: Path) -> None:
    path = home / ".baton" / "gateway" / "signing.jwks"
    old = load_private_jwks(path).active.kid
    assert main(["keys", "rotate", "--dir", str(home)]) == 0
    rotated = load_private_jwks(path)
    assert rotated.active.kid != old
    assert [k.kid for k in rotated.retired] == [old]
    public = json.loads((home / ".baton" / "gateway" / "jwks.json").read_text())
    card = load_private_jwks(home / ".baton" / "gateway" / "card-signing.jwks").active
    # The rotated signing keys, and the Agent Card key (ES256) still published beside them.
    assert [k["kid"] for k in public["keys"]] == [rotated.active.kid, old, card.kid]
    assert public["keys"][2]["alg"] == "ES256"


def test_rotate_agent(home: Path) -> None:
    path = home / ".baton" / "agents" / "support" / "signing.jwks"
    old = load_private_jwks(path).active.kid
    assert main(["keys", "rotate", "--agent", "support", "--dir", str(home)]) == 0
    public = json.loads((home / ".baton" / "agents" / "support" / "public.jwks").read_text())
    kids = [k["kid"] for k in public["keys"]]
    assert old in kids and load_private_jwks(path).active.kid in kids


def test_jwks_prints_public_keys_only(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "jwks", "--dir", str(home)]) == 0
    jwks = json.loads(capsys.readouterr().out)
    assert sorted(k["alg"] for k in jwks["keys"]) == ["ES256", "Ed25519"]  # signing, cards
    assert all("d" not in key for key in jwks["keys"])
    assert main(["keys", "jwks", "--agent", "billing", "--dir", str(home)]) == 0
    agent = json.loads(capsys.readouterr().out)
    assert sorted(k["use"] for k in agent["keys"]) == ["enc", "sig"]
    assert all("d" not in key for key in agent["keys"])


def test_loose_key_file_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (home / ".baton" / "gateway" / "signing.jwks").chmod(0o644)
    assert main(["keys", "jwks", "--dir", str(home)]) == 1
    assert "insecure_key_file" in capsys.readouterr().err


def test_check_config_names_key_and_fix(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--dir", str(home)]) == 0
    config = home / "baton.toml"
    config.write_text(config.read_text() + '\n[[agents]]\nname = "support"\nsignatures = "maybe"\n')
    assert main(["check-config", "--dir", str(home)]) == 1
    err = capsys.readouterr().err
    assert "agents.2.signatures" in err
    config.write_text('trust_domain = "baton.local"\nlisten = 1\n')
    assert main(["check-config", "--dir", str(home)]) == 1
    err = capsys.readouterr().err
    assert "listen: Extra inputs are not permitted; fix: remove it" in err


def test_missing_config_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--dir", str(tmp_path)]) == 1
    assert "baton init" in capsys.readouterr().err


SUPPORT = "spiffe://baton.local/agent/support"
ATTACKS = [
    ("the same request replayed", 401, "replay_detected"),
    ("body changed in transit", 401, "digest_mismatch"),
    ("unsigned request", 401, "signature_missing"),
    ("method the policy does not list (CancelTask)", 403, "policy_denied"),
    ("signed for another gateway (gw2.example:8443)", 401, "bad_audience"),
    ("request signed 61 s ago", 401, "stale"),
]


def _found(pattern: str, out: str) -> str:
    match = re.search(pattern, out, re.MULTILINE)
    assert match, f"{pattern!r} not in:\n{out}"
    return match[1] if match.groups() else match[0]


def _demo(home: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["demo", str(home)]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_demo_runs_the_real_data_plane(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = (home / "baton.toml").read_bytes()
    out = _demo(home, capsys)
    conversation = _found(r"^  conversation (demo-[0-9a-f]{12})$", out)
    # The hop, as the gateway, billing and support each established it.
    _found(rf"^ 1\. mTLS: the gateway authenticated the client certificate as {SUPPORT}$", out)
    _found(r"^ 2\. gateway verified support's RFC 9421 signature", out)
    _found(r"^ 3\. gateway claimed the signature's nonce \S+ in the store: first use$", out)
    _found(r"^ 4\. policy allowed support -> billing: SendMessage \(audit event #0 ", out)
    _found(r"^ 5\. transcript recorded: entry #0, hash sha256:", out)
    _found(
        r"^ 6\. billing accepted the gateway's certificate \(spiffe://baton.local/gateway/gw1\), "
        rf"verified its signature \(key \S+\) and saw caller {SUPPORT}$",
        out,
    )
    _found(rf'^ 7\. billing opened the capsule from {SUPPORT}: .*"order": "A-77"', out)
    _found(r"^ 8\. response recorded \(entry #1\) and signed by the gateway; support verified", out)
    # Every attack refused by the gateway with its status and code; none reached billing.
    for step, (attack, status, code) in enumerate(ATTACKS, start=9):
        _found(rf"^ ?{step}\. attack: {re.escape(attack)} +-> refused: {status} {code}$", out)
    _found(r"^15\. attack: TLS client without a certificate +-> refused in the TLS handshake", out)
    _found(r"^    billing received 1 request in all: none of the attacks$", out)
    bundle = _check_refund_lines(home, out)
    # The conversation verified and traced from the SQLite store; then the pointers.
    _found(rf"^transcript verify {conversation}: ok, 2 entries, head sha256:[0-9a-f]{{64}}$", out)
    _found(r"^transcript verify refund-[0-9a-f]{12}: ok, 15 entries, head sha256:", out)
    assert _found(r"^audit verify: ok, (\d+) events", out) == "22"
    _found(rf"^ +0 .*{SUPPORT} +spiffe://baton.local/agent/billing +request +SendMessage", out)
    _found(r"^ +1 .* response +SendMessage +200 +\d+ ms no$", out)
    assert str(home / ".baton" / "baton.db") in out
    for command in (f"baton trace {conversation}", "baton audit verify", "baton serve"):
        assert f"{command} --dir {home}" in out
    assert (home / "baton.toml").read_bytes() == config, "the user's config is never rewritten"
    # It ends with the web inbox: its URL and a new one-time login that works.
    _found(r"^Web inbox, once 'baton serve --dir .*' runs: https://127\.0\.0\.1:8444/inbox/$", out)
    password = _found(r"^  sign in as demo-operator with the one-time password (\S+)$", out)
    stored = DataFolder(home).load_login_hash("demo-operator")
    assert verify_password(password, stored)
    assert password not in stored

    # The export the demo wrote verifies offline, with nothing running.
    export = home / ".baton" / "exports" / f"{bundle}.json"
    key = home / ".baton" / "operators" / "demo-operator" / "encryption.jwks"
    argv = ["verify", str(export), "--operator-key", str(key), "--dir", str(home)]
    assert main([*argv, "--expect-queue", "payments-approvals"]) == 0
    assert "queued -> claimed -> decided -> delivered -> acknowledged" in capsys.readouterr().out

    # The commands the demo points at see the same store.
    assert main(["transcript", "verify", conversation, "--dir", str(home)]) == 0
    assert f"{conversation}: ok, 2 entries" in capsys.readouterr().out
    assert main(["trace", conversation, "--dir", str(home)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3

    # A second run on the same folder: new conversation, fresh nonces, one store.
    again = _demo(home, capsys)
    assert _found(r"^  conversation (demo-\S+)$", again) != conversation
    nonce = r"nonce (\S+) in the store"
    assert _found(nonce, again) != _found(nonce, out)
    assert _found(r"^audit verify: ok, (\d+) events", again) == "44"
    # A new order, so a new handoff: the first one stays acknowledged and is not listed.
    assert _found(r"^    handoff (hb_g\S+) in queue", again) != bundle
    assert bundle not in again
    assert main(["audit", "verify", "--dir", str(home)]) == 0


def _check_refund_lines(home: Path, out: str) -> str:
    """The approval-gated refund's lines; the handoff's id."""
    _found(r"^16\. MCP session with payments \(2025-11-25\): initialize and notifications", out)
    _found(
        r"^17\. tools/list: support sees lookup_order, refund_small, refund; .*close_account", out
    )
    order = _found(r"^18\. lookup_order (A-[0-9A-F]{6}) -> 'order A-", out)
    _found(rf"^19\. refund of 40 EUR: .* refund_small, .* -> 'refunded 40 EUR on {order}'$", out)
    _found(r"^20\. refund_small of 250 EUR .* refused by payments itself", out)
    _found(r"^21\. refund of 250 EUR: over 100, .* -> held: 403 approval_required$", out)
    bundle = _found(r"^    handoff (hb_g[0-9a-f]{40}) in queue payments-approvals \(queued\)$", out)
    _found(r"^    error\.data\.baton = \{\"handoff\": \"hb_g", out)
    _found(r"^22\. payments received no refund call: the call waits in the gateway$", out)
    # The operator's CLI, run by the demo: what it printed, and what it was asked.
    inbox = rf"^  \$ baton inbox --dir {re.escape(str(home))} --operator demo-operator "
    _found(inbox + "list --status queued$", out)
    _found(rf"^      {bundle}  payments-approvals  queued ", out)
    _found(inbox + f"claim {bundle}$", out)
    _found(rf"^      {bundle}: claimed by operator:demo-operator until ", out)
    _found(inbox + f"show {bundle}$", out)
    _found(r"^        action      tool_call payments/refund$", out)
    _found(rf'^        arguments   \{{"amount": 250, "order": "{order}"\}}$', out)
    _found(inbox + f"decide {bundle} approve$", out)
    _found(
        rf"^      {bundle}: approve recorded \(decided\), signed by operator:demo-operator$", out
    )
    # Passed once after the approval; a repeat is refused; the record verifies offline.
    _found(
        rf"^23\. approved: it passed -> 'refunded 250 EUR on {order}'; payments received it once$",
        out,
    )
    _found(r"^24\. a second retry is refused: 403 approval_refused .* still received it once$", out)
    _found(rf"^      {bundle}: ok \(handoff export, bundle version 1\)$", out)
    _found(r"^        lifecycle  queued -> claimed -> decided -> delivered -> acknowledged ", out)
    _found(r"^        decision   approve by operator:demo-operator \(key ", out)
    assert "handles it from the CLI here (the web inbox is at the end)" in out
    return bundle


def test_demo_needs_the_approval_sample(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = home / "baton.toml"
    text = config.read_text()
    config.write_text(text[: text.index("# Held until a person approves")])
    assert main(["check-config", "--dir", str(home)]) == 0  # a valid file, without the hold
    assert main(["demo", str(home)]) == 1
    captured = capsys.readouterr()
    assert "needs the approval sample of 'baton init'" in captured.err
    assert f"'baton init --force {home}'" in captured.err
    assert "attack:" not in captured.out  # checked before anything starts


def test_demo_fails_with_the_reason_when_an_attack_gets_through(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = home / "baton.toml"
    config.write_text(config.read_text().replace('"GetTask"]', '"GetTask", "CancelTask"]'))
    assert main(["demo", str(home)]) == 1
    captured = capsys.readouterr()
    assert "attack: the same request replayed" in captured.out  # the earlier steps ran
    assert (
        "baton: demo: attack 'method the policy does not list (CancelTask)' answered 400 "
        "invalid_request, expected 403 policy_denied"
    ) in captured.err


def test_demo_detects_an_edited_audit_log(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _demo(home, capsys)
    db = sqlite3.connect(home / ".baton" / "baton.db")
    try:
        record = json.loads(db.execute("SELECT record FROM audit_events WHERE seq=1").fetchone()[0])
        record["reason"] = "policy_denied"  # rewrite why a request was refused
        edited = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
        db.execute("UPDATE audit_events SET record=? WHERE seq=1", (edited,))
        db.commit()
    finally:
        db.close()
    assert main(["demo", str(home)]) == 1
    assert "chain_break" in capsys.readouterr().err


def test_console_script_entry_point(home: Path) -> None:
    """The installed ``baton`` command is this module's ``main``."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", "--dir", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
