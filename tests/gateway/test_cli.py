"""The ``baton`` command on a fresh folder: init, keys, check-config, demo."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from keys.files import load_private_jwks


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
    assert [k["kid"] for k in public["keys"]] == [rotated.active.kid, old]


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
    assert len(jwks["keys"]) == 1
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


def test_demo_runs_and_refuses_every_attack(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", str(home)]) == 0
    out = capsys.readouterr().out
    assert "refused: replay_detected (401)" in out
    assert "refused: digest_mismatch (401)" in out
    assert "refused: invalid_envelope (400)" in out
    assert "refused: stale (401)" in out
    assert "1 entry," in out
    assert main(["demo", str(home)]) == 0
    assert "2 entries" in capsys.readouterr().out


def test_demo_detects_a_tampered_transcript(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", str(home)]) == 0
    path = home / ".baton" / "demo-transcript.jsonl"
    path.write_text(path.read_text().replace('"verified":true', '"verified":false'))
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
