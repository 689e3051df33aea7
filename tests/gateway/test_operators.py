"""Operators: ``baton operators add|list``, their key folders, and the runtime's operator keys."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import stat
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import ConfigError, load
from gateway.devdata import (
    LOGIN_HASH_FILE,
    DataFolder,
    InitError,
    init_data_folder,
    write_operator,
)
from gateway.runtime import load_runtime
from keys.errors import InsecureKeyFile
from keys.files import load_jwks
from keys.jose import decrypt, encrypt_general, recipient_key
from keys.material import ENCRYPTION_ALG
from keys.passwords import verify_password
from keys.strictjson import loads_object
from protocol.canonical import canonical_digest, digest
from protocol.decision import (
    DecisionBinding,
    DecisionBody,
    HandoffDecision,
    make_decision_at,
    sign_decision,
    verify_decision_at,
)
from protocol.directory import KeyDirectory
from protocol.errors import IdentityMismatch, UnknownKeyId
from protocol.handoff import HandoffRequest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A ``baton init`` folder without its approval sample: no queues, no operators."""
    init_data_folder(
        tmp_path, trust_domain="baton.local", force=False, now=dt.datetime.now(dt.UTC),
        approvals=False,
    )  # fmt: skip
    return tmp_path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _add(home: Path, name: str, *queues: str) -> int:
    args = ["operators", "add", name, "--dir", str(home)]
    for queue in queues:
        args += ["--queue", queue]
    return main(args)


def _password(out: str) -> str:
    match = re.search(r"^  password  (\S+)$", out, re.MULTILINE)
    assert match is not None, out
    return match.group(1)


def test_add_creates_keys_account_and_config(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _add(home, "alice", "refunds") == 0
    out = capsys.readouterr().out
    folder = DataFolder(home)
    target = folder.operator("alice")
    assert "operator:alice" in out
    assert str(target) in out
    assert "shown once" in out
    password = _password(out)

    assert _mode(target) == 0o700
    for name in ("signing.jwks", "encryption.jwks", LOGIN_HASH_FILE):
        assert _mode(target / name) == 0o600, name
    assert sorted(p.name for p in target.iterdir()) == sorted(
        ["signing.jwks", "encryption.jwks", "public.jwks", LOGIN_HASH_FILE]
    )
    assert [p.name for p in target.parent.iterdir()] == ["alice"]  # no staging left over
    assert password not in (target / LOGIN_HASH_FILE).read_text()
    assert verify_password(password, folder.load_login_hash("alice"))
    assert not verify_password(password + "x", folder.load_login_hash("alice"))

    public = loads_object((target / "public.jwks").read_bytes())
    assert all("d" not in key for key in public["keys"])
    assert sorted((key["use"], key["alg"]) for key in public["keys"]) == [
        ("enc", ENCRYPTION_ALG),
        ("sig", "ES256"),
    ]
    operator = folder.load_operator("alice")
    assert operator.identity == "operator:alice"
    assert operator.signing.active.alg == "ES256"
    assert operator.encryption.active.alg == ENCRYPTION_ALG
    assert load_jwks(target / "public.jwks").to_jwks() == operator.public_keys().to_jwks()

    config = load(folder.config)
    assert [(q.name, q.escalate_from, q.on_expiry) for q in config.queues] == [
        ("refunds", [], "reject")
    ]
    assert [(o.name, o.queues) for o in config.operators] == [("alice", ["refunds"])]


def test_second_operator_joins_an_existing_queue(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _add(home, "alice", "refunds") == 0
    first = _password(capsys.readouterr().out)
    assert _add(home, "bob", "refunds", "disputes", "refunds") == 0
    second = _password(capsys.readouterr().out)
    assert first != second
    text = (home / "baton.toml").read_text()
    assert text.count('[[queues]]\nname = "refunds"') == 1
    assert text.count('[[queues]]\nname = "disputes"') == 1
    config = load(home / "baton.toml")
    assert [q.name for q in config.queues] == ["refunds", "disputes"]
    assert [(o.name, o.queues) for o in config.operators] == [
        ("alice", ["refunds"]),
        ("bob", ["refunds", "disputes"]),
    ]


def test_an_existing_operator_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _add(home, "alice", "refunds") == 0
    capsys.readouterr()
    config_before = (home / "baton.toml").read_bytes()
    keys_before = (DataFolder(home).operator("alice") / "signing.jwks").read_bytes()
    assert _add(home, "alice", "refunds") == 1
    assert "already exists" in capsys.readouterr().err
    assert (home / "baton.toml").read_bytes() == config_before
    assert (DataFolder(home).operator("alice") / "signing.jwks").read_bytes() == keys_before
    with pytest.raises(InitError):
        write_operator(DataFolder(home), "alice", now=dt.datetime.now(dt.UTC))


@pytest.mark.parametrize(
    ("name", "queues"),
    [("Alice", ("refunds",)), ("a/b", ("refunds",)), ("alice", ("Refunds",)), ("alice", ())],
)
def test_bad_input_writes_nothing(
    home: Path, capsys: pytest.CaptureFixture[str], name: str, queues: tuple[str, ...]
) -> None:
    before = (home / "baton.toml").read_bytes()
    assert _add(home, name, *queues) == 1
    assert capsys.readouterr().err.startswith("baton: ")
    assert (home / "baton.toml").read_bytes() == before
    assert not (home / ".baton" / "operators").exists()


def test_a_config_that_would_not_validate_writes_nothing(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An inline ``queues = [...]`` array cannot take a ``[[queues]]`` table after it."""
    config = home / "baton.toml"
    config.write_text(config.read_text().replace("[gateway]", "queues = []\n\n[gateway]", 1))
    before = config.read_bytes()
    assert _add(home, "alice", "refunds") == 1
    assert "baton.toml" in capsys.readouterr().err
    assert config.read_bytes() == before
    assert not DataFolder(home).operator("alice").exists()


def test_list(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operators", "list", "--dir", str(home)]) == 0
    assert "no operators" in capsys.readouterr().out
    assert _add(home, "alice", "refunds") == 0
    assert _add(home, "bob", "refunds", "disputes") == 0
    capsys.readouterr()
    shutil.rmtree(DataFolder(home).operator("bob"))
    assert main(["operators", "list", "--dir", str(home)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("operator:alice")
    assert "queues: refunds " in lines[0]
    assert str(DataFolder(home).operator("alice")) in lines[0]
    assert lines[1].startswith("operator:bob")
    assert "queues: refunds, disputes " in lines[1]
    assert "missing: run 'baton operators add bob'" in lines[1]


def test_loose_password_file_is_refused(home: Path) -> None:
    assert _add(home, "alice", "refunds") == 0
    path = DataFolder(home).operator("alice") / LOGIN_HASH_FILE
    path.chmod(0o644)
    with pytest.raises(InsecureKeyFile):
        DataFolder(home).load_login_hash("alice")


# ---------------------------------------------------------------- runtime
def _request() -> HandoffRequest:
    arguments = {"amount": 900}
    return HandoffRequest.from_value(
        {
            "reason_code": "refund_over_limit",
            "reason_text": "over the limit",
            "trigger": "authorization",
            "requested_action": {
                "kind": "tool_call",
                "target": "payments/refund.create",
                "arguments": arguments,
                "args_digest": canonical_digest(arguments),
            },
            "allowed_decisions": ["approve", "reject"],
            "sla": {"resolve_within_s": 3600},
            "idempotency_key": "idem-0001",
        }
    )


BINDING = DecisionBinding("hb_01JABCDEFGHJKMNPQRS", digest(b"payload"), 1, 1)
NOW = 1_750_000_000


def _verify(token: str, deciders: KeyDirectory) -> HandoffDecision:
    return verify_decision_at(
        token, operators=deciders, binding=BINDING, request=_request(), now=NOW
    )


def test_runtime_loads_operator_public_keys(home: Path) -> None:
    assert _add(home, "alice", "refunds") == 0
    assert _add(home, "bob", "refunds", "disputes") == 0
    with (home / "baton.toml").open("a") as handle:
        handle.write('\n[[queues]]\nname = "empty"\n')
    folder = DataFolder(home)
    alice, bob = folder.load_operator("alice"), folder.load_operator("bob")
    runtime = load_runtime(load(folder.config), home)

    assert {key.kid for key in runtime.queue_keys["refunds"]} == {
        alice.encryption.active.kid,
        bob.encryption.active.kid,
    }
    assert [key.kid for key in runtime.queue_keys["disputes"]] == [bob.encryption.active.kid]
    assert len(runtime.queue_keys["empty"]) == 0
    assert set(runtime.operator_keys) == {"operator:alice", "operator:bob"}
    assert [k.kid for k in runtime.operator_keys["operator:alice"]] == [alice.signing.active.kid]
    assert set(runtime.queue_deciders["refunds"]) == {"operator:alice", "operator:bob"}
    assert set(runtime.queue_deciders["disputes"]) == {"operator:bob"}
    assert len(runtime.queue_deciders["empty"]) == 0

    # What the queue's keys seal, each of its operators opens with its own key.
    sealed = encrypt_general(b"bundle", runtime.queue_keys["refunds"], typ="test+jwe")
    for operator in (alice, bob):
        key = recipient_key(sealed, operator.encryption)
        assert decrypt(sealed, key, typ="test+jwe").plaintext == b"bundle"

    # An ES256 decision by alice verifies against the refunds deciders only.
    body = DecisionBody.from_value({"type": "approve", "commitment": "agreed"})
    decision = make_decision_at(BINDING, body, operator="operator:alice", now=NOW)
    token = sign_decision(decision, alice.signing.active)
    assert _verify(token, runtime.queue_deciders["refunds"]).operator == "operator:alice"
    with pytest.raises(UnknownKeyId):
        _verify(token, runtime.queue_deciders["disputes"])  # alice does not serve disputes
    with pytest.raises(IdentityMismatch):  # bob's key, alice's name
        _verify(sign_decision(decision, bob.signing.active), runtime.queue_deciders["refunds"])


def test_configured_operator_without_keys_is_a_config_error(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (home / "baton.toml").open("a") as handle:
        handle.write('\n[[queues]]\nname = "refunds"\n\n[[operators]]\nname = "carol"\n')
        handle.write('queues = ["refunds"]\n')
    config = load(home / "baton.toml")
    with pytest.raises(ConfigError, match=r"operators\.carol: .*'baton operators add carol'"):
        load_runtime(config, home)
    assert main(["check-config", "--dir", str(home)]) == 1
    assert "baton operators add carol" in capsys.readouterr().err

    # The fix it names works: keys for the configured operator, baton.toml untouched.
    before = (home / "baton.toml").read_bytes()
    assert _add(home, "carol", "other") == 1  # not the queues it is configured with
    assert _add(home, "carol") == 0
    assert verify_password(
        _password(capsys.readouterr().out), DataFolder(home).load_login_hash("carol")
    )
    assert (home / "baton.toml").read_bytes() == before
    runtime = load_runtime(load(home / "baton.toml"), home)
    assert set(runtime.queue_deciders["refunds"]) == {"operator:carol"}


def test_incomplete_or_shared_operator_keys_are_config_errors(home: Path) -> None:
    assert _add(home, "alice", "refunds") == 0
    assert _add(home, "bob", "disputes") == 0
    folder = DataFolder(home)
    alice_public = folder.operator("alice") / "public.jwks"
    bob_public = folder.operator("bob") / "public.jwks"
    original = bob_public.read_bytes()

    shutil.copyfile(alice_public, bob_public)  # one key, two owners
    with pytest.raises(ConfigError, match="two operators share a key"):
        load_runtime(load(folder.config), home)

    only_signing = folder.load_operator("bob").signing.public()
    bob_public.write_text(json.dumps(only_signing.to_jwks()))
    with pytest.raises(ConfigError, match=r"operators\.bob: .*ECDH-ES\+A256KW"):
        load_runtime(load(folder.config), home)

    bob_public.write_text("{not json")
    with pytest.raises(ConfigError, match=r"operators\.bob"):
        load_runtime(load(folder.config), home)

    bob_public.write_bytes(original)
    assert set(load_runtime(load(folder.config), home).operator_keys) == {
        "operator:alice",
        "operator:bob",
    }


def test_check_config_summarises_the_handoff_setup(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _add(home, "alice", "refunds") == 0
    with (home / "baton.toml").open("a", encoding="utf-8") as handle:
        handle.write('\n[[queues]]\nname = "unstaffed"\n')
    capsys.readouterr()
    assert main(["check-config", "--dir", str(home)]) == 0
    out = capsys.readouterr().out
    assert "operators, 0 approval rules, operator listener 127.0.0.1:8444" in out
    assert "warning: queue 'unstaffed' has no operators" in out
    assert "warning: queue 'refunds'" not in out
