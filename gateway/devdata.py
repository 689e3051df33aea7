"""The development data folder that ``baton init`` creates.

Layout (everything under ``<dir>/.baton/`` is git-ignored and private keys are
0600 in 0700 folders)::

    <dir>/baton.toml                       configuration
    <dir>/.baton/.gitignore                "*": never commit this folder
    <dir>/.baton/ca/ca.pem                 dev CA certificate (trust anchor)
    <dir>/.baton/ca/ca.key                 dev CA private key              0600
    <dir>/.baton/store.key                 AES-256 key for bodies at rest  0600
    <dir>/.baton/gateway/tls.pem, tls.key  gateway certificate (server+client) and key
    <dir>/.baton/gateway/signing.jwks      gateway signing keys, active first  0600
    <dir>/.baton/gateway/card-signing.jwks ES256 key for the Agent Cards it serves (0600)
    <dir>/.baton/gateway/jwks.json         gateway public keys (what /.well-known/jwks.json serves)
    <dir>/.baton/agents/<name>/tls.pem, tls.key
    <dir>/.baton/agents/<name>/signing.jwks, encryption.jwks   0600
    <dir>/.baton/agents/<name>/public.jwks                      signing + encryption public keys
    <dir>/.baton/operators/<name>/signing.jwks      ES256 key that signs decisions    0600
    <dir>/.baton/operators/<name>/encryption.jwks   P-256 ECDH-ES+A256KW bundle key   0600
    <dir>/.baton/operators/<name>/public.jwks       signing + encryption public keys
    <dir>/.baton/operators/<name>/password          scrypt PHC hash of the login      0600

With the default sample agents, ``baton init`` also writes the approval-gate
sample that ``baton demo`` runs: a certificate and keys for the MCP tool
server ``payments`` (``.baton/agents/payments/``, an upstream, not a caller),
the queue ``payments-approvals`` and its operator ``demo-operator``, whose
one-time web-inbox password ``baton init`` prints once (only its scrypt hash
is stored, as with ``baton operators add``).

Agent names and the trust domain are validated before anything is written.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway.config import load as load_config
from keys.atrest import generate_store_key_file
from keys.files import (
    load_private_jwks,
    read_private_file,
    save_jwks,
    save_private_jwks,
    write_private_file,
    write_public_file,
)
from keys.keyset import KeySet, PrivateKeySet
from keys.material import ENCRYPTION_ALG
from keys.passwords import generate_password, hash_password
from keys.x509 import DevCertificateAuthority, TrustAnchors
from protocol.identity import (
    OperatorId,
    agent_id,
    gateway_id,
    validate_name,
    validate_trust_domain,
)

__all__ = [
    "CARD_SIGNING_FILE",
    "LOGIN_HASH_FILE",
    "OPERATOR_SIGNING_ALG",
    "SAMPLE_AGENTS",
    "SAMPLE_APPROVALS",
    "AgentMaterial",
    "DataFolder",
    "GatewayMaterial",
    "InitError",
    "OperatorMaterial",
    "SampleApprovals",
    "init_data_folder",
    "reset_password",
    "write_operator",
]

#: The gateway's Agent Card signing key, beside signing.jwks.
CARD_SIGNING_FILE: Final = "card-signing.jwks"

SAMPLE_AGENTS: Final = ("support", "billing")
#: The sample operator's one-time login password, kept for the developer (0600).
DATA_DIR: Final = ".baton"
CONFIG_FILE: Final = "baton.toml"
#: The file holding an operator's local-account login: a scrypt PHC string (keys.passwords).
LOGIN_HASH_FILE: Final = "password"
#: Operators sign decisions with ES256, which browsers' WebCrypto also does
#: (the inbox web app signs in the browser); Ed25519 is not in every browser.
OPERATOR_SIGNING_ALG: Final = "ES256"


class InitError(Exception):
    """``baton init`` refused (existing files without ``--force``, bad names)."""


@dataclass(frozen=True, slots=True)
class SampleApprovals:
    """The approval-gate sample of ``baton init`` (what ``baton demo`` runs).

    ``caller`` may call ``tools`` on the MCP upstream ``upstream``; every call of
    ``held_tool`` waits for a person on ``queue`` (served by ``operator``).
    ``small_tool`` refunds up to ``limit`` without approval: the tool server
    itself refuses more, so the limit cannot be dodged by picking the tool.
    """

    caller: str = "support"
    upstream: str = "payments"
    port: int = 9002
    queue: str = "payments-approvals"
    operator: str = "demo-operator"
    held_tool: str = "refund"
    small_tool: str = "refund_small"
    lookup_tool: str = "lookup_order"
    limit: int = 100

    @property
    def tools(self) -> tuple[str, ...]:
        return (self.lookup_tool, self.small_tool, self.held_tool)


SAMPLE_APPROVALS: Final = SampleApprovals()


@dataclass(frozen=True, slots=True)
class AgentMaterial:
    """An agent's identity and keys, loaded once."""

    name: str
    identity: str
    signing: PrivateKeySet
    encryption: PrivateKeySet
    cert_pem: bytes
    key_pem: bytes

    def public_keys(self) -> KeySet:
        return self.signing.public().merged(self.encryption.public())


@dataclass(frozen=True, slots=True)
class OperatorMaterial:
    """A person's keys (DESIGN.md "Identities and trust": ``operator:<name>``), loaded once.

    ``signing`` signs decisions (ES256); bundles are encrypted to ``encryption``
    (P-256, ``ECDH-ES+A256KW``).
    """

    name: str
    identity: str
    signing: PrivateKeySet
    encryption: PrivateKeySet

    def public_keys(self) -> KeySet:
        return self.signing.public().merged(self.encryption.public())


@dataclass(frozen=True, slots=True)
class GatewayMaterial:
    identity: str
    signing: PrivateKeySet
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True, slots=True)
class DataFolder:
    """Paths inside ``<root>/.baton``."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / DATA_DIR

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def ca_cert(self) -> Path:
        return self.data / "ca" / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.data / "ca" / "ca.key"

    @property
    def store_key(self) -> Path:
        return self.data / "store.key"

    @property
    def gateway(self) -> Path:
        return self.data / "gateway"

    def agent(self, name: str) -> Path:
        return self.data / "agents" / validate_name(name)

    def operator(self, name: str) -> Path:
        return self.data / "operators" / validate_name(name)

    # ---------------------------------------------------------------- loading
    def trust_domain(self) -> str:
        return load_config(self.config).trust_domain

    def load_ca(self) -> DevCertificateAuthority:
        return DevCertificateAuthority.load(
            self.ca_cert.read_bytes(), read_private_file(self.ca_key)
        )

    def trust_anchors(self) -> TrustAnchors:
        return TrustAnchors.from_pem(self.ca_cert.read_bytes())

    def load_gateway(self, trust_domain: str, name: str = "gw1") -> GatewayMaterial:
        return GatewayMaterial(
            identity=str(gateway_id(trust_domain, name)),
            signing=load_private_jwks(self.gateway / "signing.jwks"),
            cert_pem=(self.gateway / "tls.pem").read_bytes(),
            key_pem=read_private_file(self.gateway / "tls.key"),
        )

    def load_agent(self, trust_domain: str, name: str) -> AgentMaterial:
        folder = self.agent(name)
        if not folder.is_dir():
            raise InitError(f"no agent {name!r}: run 'baton keys new-agent {name}'")
        return AgentMaterial(
            name=name,
            identity=str(agent_id(trust_domain, name)),
            signing=load_private_jwks(folder / "signing.jwks"),
            encryption=load_private_jwks(folder / "encryption.jwks"),
            cert_pem=(folder / "tls.pem").read_bytes(),
            key_pem=read_private_file(folder / "tls.key"),
        )

    def load_operator(self, name: str) -> OperatorMaterial:
        folder = self.operator(name)
        if not folder.is_dir():
            raise InitError(f"no operator {name!r}: run 'baton operators add {name} --queue QUEUE'")
        return OperatorMaterial(
            name=name,
            identity=str(OperatorId(name)),
            signing=load_private_jwks(folder / "signing.jwks"),
            encryption=load_private_jwks(folder / "encryption.jwks"),
        )

    def load_login_hash(self, name: str) -> str:
        """Operator ``name``'s stored scrypt PHC string (for keys.passwords.verify_password)."""
        data = read_private_file(self.operator(name) / LOGIN_HASH_FILE)
        return data.decode("ascii", "replace").strip()


def _config_text(trust_domain: str, agents: tuple[str, ...], *, sample: bool = False) -> str:
    """The ``baton.toml`` of ``baton init``; ``sample`` adds :data:`SAMPLE_APPROVALS`
    (its caller must be among ``agents``)."""
    lines = [
        "# Baton configuration, written by `baton init`.",
        "# Private keys live in .baton/ (git-ignored, mode 0600). Never commit them.",
        f'trust_domain = "{trust_domain}"',
        f'data_dir = "{DATA_DIR}"',
        "",
        "[gateway]",
        'name = "gw1"',
        'listen = "127.0.0.1:8443"',
        "",
        "[store]",
        'kind = "sqlite"',
        f'path = "{DATA_DIR}/baton.db"',
    ]
    for name in agents:
        lines += ["", "[[agents]]", f'name = "{name}"', 'signatures = "required"']
    if len(agents) >= 2:
        caller, callee = agents[0], agents[1]
        lines += [
            "",
            "# Upstreams are reached at https://<gateway>/u/<name>/...; the upstream's",
            "# certificate must carry spiffe://<trust_domain>/agent/<identity or name>.",
            "[[upstreams]]",
            f'name = "{callee}"',
            'url = "https://127.0.0.1:9001"',
            "",
            "# Deny by default: each rule lets one caller use the listed methods.",
            "[[policy.allow]]",
            f'caller = "{caller}"',
            f'upstream = "{callee}"',
            'methods = ["ping", "tools/list", "tools/call", "SendMessage", "GetTask"]',
        ]
    if sample:
        lines += _approvals_text(SAMPLE_APPROVALS)
    return "\n".join(lines) + "\n"


def _approvals_text(s: SampleApprovals) -> list[str]:
    tools = ", ".join(f'"{tool}"' for tool in s.tools)
    return [
        "",
        f"# An MCP tool server: {s.caller} looks orders up and refunds. {s.small_tool}",
        f"# refunds up to {s.limit} (the server refuses more); every {s.held_tool} call waits",
        "# for a person.",
        "[[upstreams]]",
        f'name = "{s.upstream}"',
        f'url = "https://127.0.0.1:{s.port}"',
        'protocol = "mcp"',
        "",
        "# A queue of handoffs for people; escalate_from lists who may escalate to it.",
        "[[queues]]",
        f'name = "{s.queue}"',
        f'description = "{s.held_tool} calls held by the approval gate"',
        f'escalate_from = ["{s.caller}"]',
        "",
        f"# Keys in .baton/operators/{s.operator}/; 'baton inbox --operator {s.operator}'.",
        "[[operators]]",
        f'name = "{s.operator}"',
        f'queues = ["{s.queue}"]',
        "",
        "[[policy.allow]]",
        f'caller = "{s.caller}"',
        f'upstream = "{s.upstream}"',
        'methods = ["initialize", "notifications/initialized", "tools/list", "tools/call"]',
        f"tools = [{tools}]",
        "",
        "# Held until a person approves exactly that call (tool and arguments); then it",
        "# passes once. A hold never allows anything the rules above do not.",
        "[[policy.require_approval]]",
        f'upstream = "{s.upstream}"',
        f'queue = "{s.queue}"',
        f'tools = ["{s.held_tool}"]',
        f'reason = "refunds over {s.limit} need a person\'s approval"',
    ]


def write_agent(
    folder: DataFolder, ca: DevCertificateAuthority, name: str, *, now: dt.datetime
) -> None:
    """Issue certificate and keys for agent ``name``."""
    target = folder.agent(name)
    identity = str(agent_id(ca.trust_domain, name))
    # "both": an agent calls through the gateway (client) and may serve behind it.
    issued = ca.issue(
        identity,
        usage="both",
        now=now,
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1", "::1"),
    )
    signing = PrivateKeySet.generate("Ed25519")
    encryption = PrivateKeySet.generate(ENCRYPTION_ALG)
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_public_file(target / "tls.pem", issued.chain_pem)
    write_private_file(target / "tls.key", issued.key_pem)
    save_private_jwks(target / "signing.jwks", signing)
    save_private_jwks(target / "encryption.jwks", encryption)
    save_jwks(target / "public.jwks", signing.public().merged(encryption.public()))


def reset_password(folder: DataFolder, name: str) -> str:
    """Give operator ``name`` a new one-time web-inbox password; return it.

    Only its scrypt hash is written (atomically, mode 0600); the value cannot
    be recovered later. A running gateway notices the new file at the next
    login or session use (``gateway/web/login.py`` ``LoginHashes``): the old
    password stops working and the operator's password sessions begun before
    the change end.
    """
    target = folder.operator(name)
    if not target.is_dir():
        raise InitError(f"operator {name!r} has no key folder: run 'baton operators add {name}'")
    password = generate_password()
    write_private_file(target / LOGIN_HASH_FILE, (hash_password(password) + "\n").encode("ascii"))
    return password


def write_operator(folder: DataFolder, name: str, *, now: dt.datetime) -> str:
    """Create keys and a local account for operator ``name``; return its one-time password.

    The folder is assembled under a temporary name and renamed into place, so
    an operator folder is either complete or absent; an existing one is never
    overwritten (:class:`InitError`). Only the scrypt hash of the password is
    stored: the returned value cannot be recovered later. ``now`` is accepted
    like :func:`write_agent`'s (an operator client certificate would be issued
    at it); nothing written today depends on the time.
    """
    del now
    target = folder.operator(name)
    if target.exists():
        raise InitError(f"operator {name!r} already has a key folder: {target}")
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    signing = PrivateKeySet.generate(OPERATOR_SIGNING_ALG)
    encryption = PrivateKeySet.generate(ENCRYPTION_ALG)
    password = generate_password()
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))  # mode 0700
    try:
        save_private_jwks(staging / "signing.jwks", signing)
        save_private_jwks(staging / "encryption.jwks", encryption)
        save_jwks(staging / "public.jwks", signing.public().merged(encryption.public()))
        write_private_file(
            staging / LOGIN_HASH_FILE, (hash_password(password) + "\n").encode("ascii")
        )
        if target.exists():  # rename() would replace an empty directory
            raise InitError(f"operator {name!r} already has a key folder: {target}")
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return password


def init_data_folder(
    root: Path,
    *,
    trust_domain: str,
    force: bool,
    now: dt.datetime,
    agents: tuple[str, ...] = SAMPLE_AGENTS,
    approvals: bool | None = None,
    on_password: Callable[[str, str], None] | None = None,
) -> DataFolder:
    """Create config, dev CA, gateway keys and sample agents under ``root``.

    ``approvals`` (default: exactly when ``agents`` are :data:`SAMPLE_AGENTS`)
    adds the approval-gate sample (:data:`SAMPLE_APPROVALS`): the tool
    server's certificate, the operator's keys and login (its one-time password
    is handed to ``on_password(operator, password)`` and kept nowhere), and
    their tables in ``baton.toml``; its caller must be among ``agents``.
    Refuses to overwrite an existing config or data folder unless ``force``.
    """
    validate_trust_domain(trust_domain)
    for name in agents:
        validate_name(name)
    sample = agents == SAMPLE_AGENTS if approvals is None else approvals
    if sample and SAMPLE_APPROVALS.caller not in agents:
        raise InitError(f"the approval sample needs agent {SAMPLE_APPROVALS.caller!r}")
    folder = DataFolder(root)
    existing = [p for p in (folder.config, folder.data) if p.exists()]
    if existing and not force:
        raise InitError(
            "refusing to overwrite " + ", ".join(str(p) for p in existing) + " (use --force)"
        )
    root.mkdir(parents=True, exist_ok=True)
    if folder.data.exists():
        shutil.rmtree(folder.data)  # --force: replace the whole dev folder, no stale agents
    folder.data.mkdir(mode=0o700)
    (folder.data / ".gitignore").write_text("# Private keys: never commit this folder.\n*\n")

    ca = DevCertificateAuthority.create(trust_domain, now=now)
    write_public_file(folder.ca_cert, ca.cert_pem)
    write_private_file(folder.ca_key, ca.key_pem)

    gateway = ca.issue(
        str(gateway_id(trust_domain, "gw1")),
        usage="both",
        now=now,
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1", "::1"),
    )
    write_public_file(folder.gateway / "tls.pem", gateway.chain_pem)
    write_private_file(folder.gateway / "tls.key", gateway.key_pem)
    signing = PrivateKeySet.generate("Ed25519")
    save_private_jwks(folder.gateway / "signing.jwks", signing)
    # Agent Cards are signed with ES256 (ADR 0013): every JOSE stack verifies it,
    # including the PyJWT inside a2a-sdk, which knows Ed25519 only as "EdDSA".
    card_signing = PrivateKeySet.generate("ES256")
    save_private_jwks(folder.gateway / CARD_SIGNING_FILE, card_signing)
    save_jwks(folder.gateway / "jwks.json", signing.public().merged(card_signing.public()))

    generate_store_key_file(folder.store_key)
    for name in agents:
        write_agent(folder, ca, name, now=now)
    if sample:
        s = SAMPLE_APPROVALS
        if s.upstream not in agents:
            write_agent(folder, ca, s.upstream, now=now)
        password = write_operator(folder, s.operator, now=now)
        if on_password is not None:
            on_password(s.operator, password)
    folder.config.write_text(_config_text(trust_domain, agents, sample=sample), encoding="utf-8")
    return folder
