"""Everything the data plane needs, loaded and checked once at start-up.

Keys, certificates, key sets, policy and issuers are parsed here and never on
the hot path. A missing or unreadable file is a :class:`ConfigError` naming
the file and the fix, so ``baton serve`` and ``baton check-config`` refuse to
start rather than run half-configured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from gateway.config import (
    AgentConfig,
    BatonConfig,
    ConfigError,
    OperatorConfig,
    RateLimitConfig,
)
from gateway.devdata import CARD_SIGNING_FILE, LOGIN_HASH_FILE, DataFolder
from gateway.stores import Stores, open_stores
from keys.atrest import StoreCipher
from keys.bearer import BearerIssuer
from keys.errors import KeysError
from keys.files import load_jwks, load_private_jwks
from keys.keyset import KeySet, PrivateKeySet
from keys.material import ENCRYPTION_ALG, PrivateKey
from keys.passwords import PasswordHash
from keys.strictjson import loads_object
from keys.x509 import TrustAnchors
from protocol.directory import KeyDirectory
from protocol.errors import ConfigurationError
from protocol.identity import OperatorId, agent_id, gateway_id
from protocol.policy import ApprovalPolicy, ApprovalRule, Hold, Policy, Rule
from protocol.replay import FreshnessPolicy

__all__ = ["AgentPolicy", "Runtime", "load_runtime"]


@dataclass(frozen=True, slots=True)
class AgentPolicy:
    """One agent as the gateway treats it."""

    name: str
    identity: str
    keys: KeySet
    signatures: Literal["required", "optional"]
    bearer: Literal["none", "optional", "required"]
    rate_limit: RateLimitConfig


@dataclass(frozen=True, slots=True)
class Runtime:
    """Immutable after start-up; shared by every request."""

    config: BatonConfig
    folder: DataFolder
    identity: str
    signing: PrivateKeySet
    anchors: TrustAnchors
    cipher: StoreCipher
    policy: Policy
    freshness: FreshnessPolicy
    agents_by_identity: MappingProxyType[str, AgentPolicy]
    bearer_issuers: tuple[BearerIssuer, ...]
    authorities: frozenset[str]
    upstream_identities: MappingProxyType[str, str] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: The key the gateway signs the Agent Cards it serves with (ES256, ADR 0013).
    card_signing: PrivateKey | None = None
    #: A2A upstreams with pinned Agent Card signing keys (``card_jwks_file``).
    card_keys: MappingProxyType[str, KeySet] = field(default_factory=lambda: MappingProxyType({}))
    #: Queue -> its operators' encryption public keys: the recipients a bundle is sealed to.
    queue_keys: MappingProxyType[str, KeySet] = field(default_factory=lambda: MappingProxyType({}))
    #: Operator identity (``operator:<name>``) -> the public keys its decisions are signed with.
    operator_keys: MappingProxyType[str, KeySet] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: Queue -> the operators who may decide there (``verify_decision_at(operators=...)``).
    queue_deciders: MappingProxyType[str, KeyDirectory] = field(
        default_factory=lambda: MappingProxyType({})
    )
    #: ``require_approval`` rules: which admitted calls wait for a person.
    approvals: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    #: Operators allowed to reveal masked PII (``reveal_pii = true``).
    revealers: frozenset[str] = frozenset()
    #: Operator name -> its local-account login (scrypt PHC string), for the
    #: web inbox (``inbox.web``); an operator without a ``password`` file has
    #: no local login (OIDC only).
    login_hashes: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def ca_file(self) -> Path:
        return self.folder.ca_cert

    @property
    def cert_file(self) -> Path:
        return self.folder.gateway / "tls.pem"

    @property
    def key_file(self) -> Path:
        return self.folder.gateway / "tls.key"

    @property
    def store_path(self) -> Path:
        path = Path(self.config.store.path)
        return path if path.is_absolute() else self.folder.root / path

    async def open_stores(self) -> Stores:
        """The configured store backend, opened (the caller closes it)."""
        store = self.config.store
        return await open_stores(
            store.kind,
            path=self.store_path if store.kind == "sqlite" else None,
            url=store.url,
            cipher=self.cipher,
            prefix=store.prefix,
        )


def _load(what: str, path: Path, fix: str) -> None:
    if not path.is_file():
        raise ConfigError(f"{what}: {path} not found; {fix}")


def _agent(config: BatonConfig, folder: DataFolder, agent: AgentConfig) -> AgentPolicy:
    path = folder.agent(agent.name) / "public.jwks"
    _load(f"agents.{agent.name}", path, f"run 'baton keys new-agent {agent.name}'")
    try:
        keys = load_jwks(path)
    except (KeysError, OSError) as exc:
        raise ConfigError(f"agents.{agent.name}: {path}: {exc}") from exc
    return AgentPolicy(
        name=agent.name,
        identity=str(agent_id(config.trust_domain, agent.name)),
        keys=keys,
        signatures=agent.signatures,
        bearer=agent.bearer,
        rate_limit=agent.rate_limit or config.rate_limit,
    )


def _issuers(config: BatonConfig, root: Path, gateway: str) -> tuple[BearerIssuer, ...]:
    issuers = []
    for index, item in enumerate(config.bearer_issuers):
        path = Path(item.jwks_file)
        path = path if path.is_absolute() else root / path
        where = f"bearer_issuers[{index}].jwks_file"
        _load(where, path, "point it at the issuer's public JWKS file")
        try:
            jwks = loads_object(path.read_bytes())
            issuers.append(
                BearerIssuer.from_jwks(
                    item.issuer,
                    item.audience or gateway,
                    jwks,
                    leeway_s=item.leeway_s,
                    max_lifetime_s=item.max_lifetime_s,
                )
            )
        except (KeysError, ValueError) as exc:
            raise ConfigError(f"{where}: {path}: {exc}") from exc
    return tuple(issuers)


def _card_keys(config: BatonConfig, root: Path) -> dict[str, KeySet]:
    pinned = {}
    for index, upstream in enumerate(config.upstreams):
        if upstream.card_jwks_file is None:
            continue
        path = Path(upstream.card_jwks_file)
        path = path if path.is_absolute() else root / path
        where = f"upstreams[{index}].card_jwks_file"
        _load(where, path, "point it at the JWKS of the keys that sign this agent's card")
        try:
            pinned[upstream.name] = load_jwks(path)
        except (KeysError, OSError) as exc:
            raise ConfigError(f"{where}: {path}: {exc}") from exc
    return pinned


@dataclass(frozen=True, slots=True)
class _OperatorKeys:
    signing: KeySet
    encryption: KeySet


def _operator(folder: DataFolder, operator: OperatorConfig) -> _OperatorKeys:
    """An operator's public keys from ``.baton/operators/<name>/public.jwks``.

    Only public keys are read: the gateway never needs an operator's private
    keys (bundles are opened and decisions signed by the operator).
    """
    where = f"operators.{operator.name}"
    path = folder.operator(operator.name) / "public.jwks"
    _load(where, path, f"run 'baton operators add {operator.name}' to create its keys")
    try:
        keys = load_jwks(path)
    except (KeysError, OSError) as exc:
        raise ConfigError(f"{where}: {path}: {exc}") from exc
    signing = KeySet(key for key in keys if key.use == "sig")
    encryption = KeySet(key for key in keys if key.use == "enc")
    if not signing or not encryption:
        raise ConfigError(
            f"{where}: {path} needs a signing and an {ENCRYPTION_ALG} key; "
            f"recreate them with 'baton operators add {operator.name}'"
        )
    return _OperatorKeys(signing, encryption)


def _queue_keys(
    config: BatonConfig, folder: DataFolder
) -> tuple[dict[str, KeySet], dict[str, KeySet], dict[str, KeyDirectory]]:
    """(queue -> encryption keys, operator identity -> signing keys, queue -> deciders).

    One key, one owner: a key two operators list is a :class:`ConfigError`,
    so a decision's ``kid`` names exactly one person.
    """
    operators = [
        (str(OperatorId(operator.name)), operator.queues, _operator(folder, operator))
        for operator in config.operators
    ]
    signing = {who: keys.signing for who, _, keys in operators}
    try:
        KeyDirectory(signing)
        KeySet(key for _, _, keys in operators for key in keys.encryption)
    except (KeysError, ConfigurationError) as exc:
        raise ConfigError(
            f"operators: two operators share a key ({exc.detail}); "
            "give each its own keys ('baton operators add NAME')"
        ) from exc
    recipients: dict[str, KeySet] = {}
    deciders: dict[str, KeyDirectory] = {}
    for queue in config.queues:
        members = [(who, keys) for who, queues, keys in operators if queue.name in queues]
        recipients[queue.name] = KeySet(key for _, keys in members for key in keys.encryption)
        deciders[queue.name] = KeyDirectory({who: keys.signing for who, keys in members})
    return recipients, signing, deciders


def _login_hashes(config: BatonConfig, folder: DataFolder) -> dict[str, str]:
    """Operators' local-account hashes, parsed and bounds-checked now (a broken
    file stops start-up instead of failing each login)."""
    if not config.inbox.web:
        return {}
    hashes = {}
    for operator in config.operators:
        path = folder.operator(operator.name) / LOGIN_HASH_FILE
        if not path.exists():
            continue
        try:
            encoded = folder.load_login_hash(operator.name)
            PasswordHash.decode(encoded)
        except (KeysError, OSError) as exc:
            raise ConfigError(
                f"operators.{operator.name}: {path}: {exc}; remove the file (no local "
                "login) or set a new password for the operator"
            ) from exc
        hashes[operator.name] = encoded
    return hashes


def _check_oidc_files(config: BatonConfig, root: Path) -> None:
    oidc = config.inbox.oidc
    if oidc is None:
        return
    secret = Path(oidc.client_secret_file)
    _load(
        "inbox.oidc.client_secret_file",
        secret if secret.is_absolute() else root / secret,
        "write the client secret your identity provider issued into it (mode 0600)",
    )
    if oidc.ca_file:
        ca = Path(oidc.ca_file)
        _load(
            "inbox.oidc.ca_file",
            ca if ca.is_absolute() else root / ca,
            "point it at the PEM CA bundle of the issuer, or remove the key",
        )


def load_runtime(config: BatonConfig, root: Path) -> Runtime:
    """Load keys, certificates and policy for ``config`` (its folder is ``root``)."""
    config.require_serving_policy()
    folder = DataFolder(root)
    init_fix = "run 'baton init' (or restore the data folder)"
    for what, path in (
        ("CA certificate", folder.ca_cert),
        ("gateway certificate", folder.gateway / "tls.pem"),
        ("gateway TLS key", folder.gateway / "tls.key"),
        ("gateway signing keys", folder.gateway / "signing.jwks"),
        ("store key", folder.store_key),
    ):
        _load(what, path, init_fix)
    try:
        signing = load_private_jwks(folder.gateway / "signing.jwks")
        card_file = folder.gateway / CARD_SIGNING_FILE
        # Folders made before ADR 0013 have no card key: cards are then signed
        # with the Ed25519 key (verifiable by Baton, not by PyJWT-based SDKs).
        card_signing = load_private_jwks(card_file).active if card_file.exists() else None
        cipher = StoreCipher.from_file(folder.store_key)
        anchors = TrustAnchors.from_pem(folder.ca_cert.read_bytes())
    except (KeysError, OSError) as exc:
        raise ConfigError(f"gateway keys: {exc}") from exc
    identity = str(gateway_id(config.trust_domain, config.gateway.name))
    agents = {}
    for agent in config.agents:
        policy = _agent(config, folder, agent)
        agents[policy.identity] = policy
    queue_keys, operator_keys, queue_deciders = _queue_keys(config, folder)
    _check_oidc_files(config, root)
    rules = [
        Rule(
            rule.caller,
            rule.upstream,
            frozenset(rule.methods),
            {
                kind: frozenset(names)
                for kind, names in (
                    ("tool", rule.tools),
                    ("resource", rule.resources),
                    ("prompt", rule.prompts),
                    ("skill", rule.skills),
                )
                if names
            },
        )
        for rule in config.policy.allow
    ]
    queues = {queue.name: queue for queue in config.queues}
    holds = [
        ApprovalRule(
            upstream=hold.upstream,
            callers=frozenset(hold.callers),
            targets={
                kind: frozenset(names)
                for kind, names in (("tool", hold.tools), ("skill", hold.skills))
                if names
            },
            hold=Hold(
                queue=hold.queue,
                resolve_within_s=hold.resolve_within_s or queues[hold.queue].resolve_within_s,
                reason=hold.reason,
            ),
        )
        for hold in config.policy.require_approval
    ]
    return Runtime(
        config=config,
        folder=folder,
        identity=identity,
        signing=signing,
        anchors=anchors,
        cipher=cipher,
        policy=Policy(rules),
        approvals=ApprovalPolicy(holds),
        freshness=FreshnessPolicy(config.replay.window_s, config.replay.skew_s),
        agents_by_identity=MappingProxyType(agents),
        bearer_issuers=_issuers(config, root, identity),
        authorities=config.gateway.public_authorities(),
        upstream_identities=MappingProxyType(
            {
                upstream.name: str(agent_id(config.trust_domain, upstream.identity_name))
                for upstream in config.upstreams
            }
        ),
        card_keys=MappingProxyType(_card_keys(config, root)),
        card_signing=card_signing or signing.active,
        queue_keys=MappingProxyType(queue_keys),
        operator_keys=MappingProxyType(operator_keys),
        queue_deciders=MappingProxyType(queue_deciders),
        revealers=frozenset(
            str(OperatorId(operator.name)) for operator in config.operators if operator.reveal_pii
        ),
        login_hashes=MappingProxyType(_login_hashes(config, folder)),
    )
