"""``[inbox]``, ``[inbox.oidc]`` and ``oidc_subject`` (gateway/config.py, ADR 0015):
defaults, bounds, and errors that name the key and the fix; files checked at
start-up (gateway/runtime.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, parse
from gateway.runtime import load_runtime
from gateway.web.headers import listener_hosts, listener_origins
from tests.gateway.web.webkit import Made, config_text, sqlite_store

BASE = """
trust_domain = "baton.local"
[[queues]]
name = "refunds"
[[operators]]
name = "alice"
queues = ["refunds"]
{alice}
[[operators]]
name = "bob"
queues = ["refunds"]
{bob}
{inbox}
"""


def _parse(*, alice: str = "", bob: str = "", inbox: str = "") -> object:
    return parse(BASE.format(alice=alice, bob=bob, inbox=inbox))


def test_the_defaults_are_the_adrs() -> None:
    config = parse(BASE.format(alice="", bob="", inbox=""))
    inbox = config.inbox
    assert (inbox.web, inbox.idle_timeout_s, inbox.session_max_s) == (True, 900, 43200)
    assert (inbox.login_attempts, inbox.login_window_s, inbox.login_attempts_per_address) == (
        5, 300, 20,
    )  # fmt: skip
    assert inbox.oidc is None and inbox.origins == []
    assert config.operators[0].oidc_subject is None
    assert listener_origins(config) == {"https://127.0.0.1:8444", "https://localhost:8444"}


@pytest.mark.parametrize(
    ("inbox", "message"),
    [
        ("[inbox]\nidle_timeout_s = 30", "inbox.idle_timeout_s"),
        ("[inbox]\nsession_max_s = 10000000", "inbox.session_max_s"),
        ("[inbox]\nidle_timeout_s = 3600\nsession_max_s = 1800", "lower idle_timeout_s"),
        ("[inbox]\nlogin_attempts = 0", "inbox.login_attempts"),
        ("[inbox]\norigins = ['http://inbox.example']", "https origin"),
        ("[inbox]\nwebb = true", "unknown key"),
        (
            "[inbox.oidc]\nissuer = 'http://idp.example'\nclient_id = 'c'\n"
            "client_secret_file = 's'",
            "inbox.oidc.issuer",
        ),
        (
            "[inbox.oidc]\nissuer = 'https://idp.example'\nclient_id = 'c'\n"
            "client_secret_file = 's'\nscopes = ['email']",
            'must include "openid"',
        ),
        ("[inbox.oidc]\nissuer = 'https://idp.example'\nclient_id = 'c'", "client_secret_file"),
    ],
)
def test_bad_inbox_settings_name_the_key_and_the_fix(inbox: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _parse(inbox=inbox)


def test_oidc_subjects_are_unique() -> None:
    with pytest.raises(
        ConfigError, match=r"operators\[1\]\.oidc_subject 'a@x' is also operators\[0\]"
    ):
        _parse(alice='oidc_subject = "a@x"', bob='oidc_subject = "a@x"')
    config = parse(BASE.format(alice='oidc_subject = "a@x"', bob='oidc_subject = "b@x"', inbox=""))
    assert [op.oidc_subject for op in config.operators] == ["a@x", "b@x"]


def test_configured_origins_replace_the_listeners() -> None:
    config = parse(
        BASE.format(alice="", bob="", inbox="[inbox]\norigins = ['https://Inbox.example']")
    )
    assert listener_origins(config) == {"https://inbox.example"}


def test_the_hosts_a_listener_answers_are_its_origins_authorities() -> None:
    """P06: Host is checked against these (gateway/web/webapp.py ``host_check``)."""
    assert listener_hosts({"https://inbox.example"}) == {"inbox.example", "inbox.example:443"}
    assert listener_hosts({"https://127.0.0.1:8444", "https://localhost:8444"}) == {
        "127.0.0.1:8444",
        "localhost:8444",
    }
    assert listener_hosts({"https://[::1]:8444"}) == {"[::1]:8444"}
    assert listener_hosts({"https://inbox.example:443"}) == {"inbox.example", "inbox.example:443"}


def test_the_oidc_client_secret_file_must_exist_at_start_up(made: Made, tmp_path: Path) -> None:
    oidc = (
        "[inbox.oidc]\nissuer = 'https://idp.example'\nclient_id = 'baton-inbox'\n"
        "client_secret_file = 'secrets/oidc-client-secret'"
    )
    text = config_text(
        port=1, operator_port=2, a2a_port=3, store=sqlite_store(tmp_path / "b.db"), inbox=""
    ).replace("[inbox]\n", oidc + "\n")
    with pytest.raises(ConfigError, match=r"inbox\.oidc\.client_secret_file: .*not found"):
        load_runtime(parse(text), made.folder.root)
    secret = made.folder.root / "secrets" / "oidc-client-secret"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    try:
        assert load_runtime(parse(text), made.folder.root).config.inbox.oidc is not None
    finally:
        secret.unlink()
