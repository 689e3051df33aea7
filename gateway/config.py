"""Configuration: one TOML file, validated by pydantic at start-up.

Errors name the key and say how to fix it (:class:`ConfigError`); nothing is
defaulted silently into an insecure state:

* the public listener requires client certificates unless
  ``gateway.client_auth = "optional"`` (bearer-only agents) is chosen;
* the admin listener must be on a loopback address unless
  ``gateway.admin_allow_remote = true``;
* policy is deny by default, and an empty rule set, or a rule that names an
  unknown agent or upstream, is an error rather than an open or dead door;
* an agent that needs a bearer token requires a configured issuer.

Example (``baton init`` writes one)::

    trust_domain = "baton.local"
    [gateway]
    listen = "127.0.0.1:8443"
    [[agents]]
    name = "support"
    [[upstreams]]
    name = "billing"
    url = "https://127.0.0.1:9001"
    [[policy.allow]]
    caller = "support"
    upstream = "billing"
    methods = ["tools/call"]
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from protocol.errors import InvalidIdentity
from protocol.identity import validate_name, validate_trust_domain

__all__ = [
    "AgentConfig",
    "BatonConfig",
    "BearerIssuerConfig",
    "ConfigError",
    "GatewayConfig",
    "InboxConfig",
    "LimitsConfig",
    "OidcConfig",
    "OperatorConfig",
    "PolicyConfig",
    "PolicyRule",
    "QueueConfig",
    "RateLimitConfig",
    "ReplayConfig",
    "StoreConfig",
    "UpstreamConfig",
    "load",
    "parse",
    "split_host_port",
]

_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
Name = Annotated[str, Field(pattern=_NAME_PATTERN)]
#: JSON-RPC method names or ``"<HTTP-METHOD> <path>"`` for non-JSON-RPC traffic; ``*`` any.
Method = Annotated[str, Field(min_length=1, max_length=200)]


class ConfigError(Exception):
    """A configuration problem, with the key and the fix in the message."""


def split_host_port(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8443"`` or ``"[::1]:8443"`` -> (host, port); ValueError otherwise."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RateLimitConfig(_Section):
    """At most ``requests`` per ``window_s`` seconds per caller identity."""

    requests: int = Field(default=100, ge=1, le=10_000_000)
    window_s: float = Field(default=1.0, gt=0, le=3600)


class GatewayConfig(_Section):
    name: Name = "gw1"
    listen: str = "127.0.0.1:8443"
    #: Host[:port] values the gateway answers to: the signed ``@authority`` must be one.
    #: Empty means the listen address (and ``localhost`` for a loopback one).
    authorities: list[str] = Field(default_factory=list, max_length=64)
    client_auth: Literal["required", "optional"] = "required"
    admin_listen: str = "127.0.0.1:9464"
    admin_allow_remote: bool = False
    #: Where operators reach the inbox API (TLS with the gateway's certificate,
    #: no client certificate: each request is signed by the operator's key).
    #: Empty: no operator listener.
    operator_listen: str = "127.0.0.1:8444"
    #: Browser origins (``https://host[:port]``) allowed to call MCP and A2A
    #: upstreams. A request with any other ``Origin`` is refused 403 (DNS
    #: rebinding; MCP transports "MUST validate the Origin"). Agents send none.
    allowed_origins: list[str] = Field(default_factory=list, max_length=64)
    #: The gateway's base URL as upstreams reach it (push-notification relay
    #: URLs are built on it). Default: ``https://`` + ``listen``.
    public_url: str | None = None
    #: Networks an operator trusts as webhook destinations although they are
    #: not public (an internal receiver). Empty: only public addresses.
    webhook_trusted_networks: list[str] = Field(default_factory=list, max_length=64)
    #: Extra CA bundle for webhook receivers' certificates (PEM); the system
    #: store is always used too.
    webhook_ca_file: str | None = None
    drain_timeout_s: float = Field(default=10.0, gt=0, le=600)

    @field_validator("listen", "admin_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_host_port(value)
        return value

    @field_validator("operator_listen")
    @classmethod
    def _optional_host_port(cls, value: str) -> str:
        if value:
            split_host_port(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{value!r}: write https://host[:port][/prefix]")
        return value.rstrip("/")

    @field_validator("webhook_trusted_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value)
            except ValueError as exc:
                raise ValueError(
                    f"{value!r} is not a network; write 10.0.0.0/8 or fd00::/8"
                ) from exc
        return values

    def relay_base(self) -> str:
        """Where upstreams reach the gateway (push-notification relay URLs)."""
        if self.public_url is not None:
            return self.public_url
        host, port = split_host_port(self.listen)
        return f"https://{f'[{host}]' if ':' in host else host}:{port}"

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        for value in values:
            parts = urlsplit(value)
            if parts.scheme not in ("https", "http") or not parts.hostname or parts.path:
                raise ValueError(f"{value!r} is not an origin; write scheme://host[:port]")
        return [value.lower() for value in values]

    @model_validator(mode="after")
    def _admin_on_loopback(self) -> GatewayConfig:
        host, _ = split_host_port(self.admin_listen)
        if not self.admin_allow_remote and not _is_loopback(host):
            raise ValueError(
                f"admin_listen {self.admin_listen!r} is not a loopback address; "
                "use 127.0.0.1:PORT, or set admin_allow_remote = true behind a firewall"
            )
        return self

    def public_authorities(self) -> frozenset[str]:
        if self.authorities:
            return frozenset(a.lower() for a in self.authorities)
        host, port = split_host_port(self.listen)
        shown = f"[{host}]" if ":" in host else host
        names = {f"{shown}:{port}"}
        if _is_loopback(host):
            names.add(f"localhost:{port}")
        return frozenset(names)


class StoreConfig(_Section):
    kind: Literal["sqlite", "redis"] = "sqlite"
    path: str = "baton.db"
    url: str | None = None
    prefix: str = Field(default="baton:", pattern=r"^[A-Za-z0-9_.:-]{1,40}$")

    @model_validator(mode="after")
    def _redis_needs_url(self) -> StoreConfig:
        if self.kind == "redis":
            if not self.url:
                raise ValueError(
                    'store.kind = "redis" needs store.url, e.g. "redis://127.0.0.1:6379/0"'
                )
            if urlsplit(self.url).scheme not in ("redis", "rediss", "unix"):
                raise ValueError("store.url must start with redis://, rediss:// or unix://")
        return self


class LimitsConfig(_Section):
    """Caps enforced before anything is parsed (threats X01-X05)."""

    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=1 << 30)
    max_header_bytes: int = Field(default=8190, ge=1024, le=65536)
    max_headers: int = Field(default=100, ge=8, le=1000)
    max_json_depth: int = Field(default=64, ge=4, le=512)
    #: Close a keep-alive connection idle this long (seconds).
    idle_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    #: A request body must arrive within this many seconds (slow clients).
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    #: Open connections one client address may hold on a listener (per
    #: process); one more is answered 429 ``too_many_connections`` and closed.
    max_connections_per_address: int = Field(default=128, ge=1, le=1_000_000)
    #: A TLS handshake must finish within this many seconds.
    tls_handshake_timeout_s: float = Field(default=10.0, gt=0, le=120)
    #: Data-plane requests one gateway process serves at once (streams count
    #: until they end); more are answered 503 ``overloaded`` before any work.
    max_in_flight: int = Field(default=2048, ge=1, le=1_000_000)


class ReplayConfig(_Section):
    window_s: int = Field(default=60, ge=1, le=3600)
    skew_s: int = Field(default=5, ge=0, le=300)


class BearerIssuerConfig(_Section):
    """A pinned token issuer: its JWKS comes from a local file, never fetched (J07)."""

    issuer: str = Field(min_length=1)
    jwks_file: str = Field(min_length=1)
    #: Defaults to the gateway's SPIFFE ID.
    audience: str | None = None
    leeway_s: int = Field(default=30, ge=0, le=300)
    max_lifetime_s: int = Field(default=3600, ge=1, le=86400)


class AgentConfig(_Section):
    name: Name
    signatures: Literal["required", "optional"] = "required"
    bearer: Literal["none", "optional", "required"] = "none"
    rate_limit: RateLimitConfig | None = None


class UpstreamConfig(_Section):
    """An agent or tool server behind the gateway, reached at ``/u/<name>/...``.

    ``protocol`` picks the adapter that reads its traffic: ``"mcp"`` (an MCP
    Streamable HTTP endpoint, both eras), ``"a2a"`` (an A2A agent: v1.0
    JSON-RPC and HTTP+JSON, v0.3 JSON-RPC) or ``"http"`` (generic JSON-RPC or
    HTTP, policy on methods only).
    """

    name: Name
    url: str
    protocol: Literal["http", "mcp", "a2a"] = "http"
    #: A2A: JWKS file of keys that may sign this upstream's Agent Card. When
    #: set, a card without a valid signature by one of them is refused.
    card_jwks_file: str | None = None
    #: A2A: host names (``*.example.com`` for subdomains) push-notification
    #: webhooks may point at. Empty: push-notification configs are refused.
    webhook_hosts: list[str] = Field(default_factory=list, max_length=1000)
    #: Agent name whose SPIFFE ID the upstream's server certificate must carry.
    #: Defaults to ``name``.
    identity: Name | None = None
    #: MCP: pin each tool's definition (RFC 8785 digest) the first time it is
    #: listed; a later change hides the tool and refuses calls to it until
    #: ``baton tools approve`` (threat I04, gateway/tool_pins.py).
    pin_tools: bool = True
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    #: Retries after a connection failure, for idempotent requests only.
    retries: int = Field(default=1, ge=0, le=5)
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_reset_s: float = Field(default=30.0, gt=0, le=3600)
    max_connections: int = Field(default=100, ge=1, le=10_000)

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("upstream url must be https://HOST[:PORT][/path] (mTLS to upstreams)")
        if parts.query or parts.fragment:
            raise ValueError("upstream url must not have a query or fragment")
        return value.rstrip("/")

    @property
    def identity_name(self) -> str:
        return self.identity or self.name


Target = Annotated[str, Field(min_length=1, max_length=1024)]


class PolicyRule(_Section):
    """``caller`` may call ``methods`` on ``upstream``. ``"*"`` in methods: any method.

    A method that acts on a named target (MCP ``tools/call``, ``resources/read``,
    ``prompts/get``; an A2A message naming a skill) also needs the target listed
    in ``tools``, ``resources``, ``prompts`` or ``skills``: an exact name, a
    prefix ending in ``*`` (``"file:///docs/*"``), or ``"*"`` for all.
    """

    caller: Name
    upstream: Name
    methods: list[Method] = Field(min_length=1, max_length=1000)
    tools: list[Target] = Field(default_factory=list, max_length=10_000)
    resources: list[Target] = Field(default_factory=list, max_length=10_000)
    prompts: list[Target] = Field(default_factory=list, max_length=10_000)
    skills: list[Target] = Field(default_factory=list, max_length=10_000)


class QueueConfig(_Section):
    """An operator queue, served as the A2A agent ``/a2a/inbox/<name>`` (DESIGN "Human handoff").

    ``escalate_from`` lists the agents that may escalate to it (deny by default);
    operators join a queue from their own ``[[operators]]`` entry.
    """

    name: Name
    description: str = Field(default="", max_length=500)
    escalate_from: list[Name] = Field(default_factory=list, max_length=10_000)
    #: Default time to resolve a handoff when the request names no SLA.
    resolve_within_s: int = Field(default=3600, ge=10, le=30 * 24 * 3600)
    #: What an expired handoff becomes (fail closed: reject).
    on_expiry: Literal["reject"] = "reject"
    #: How long an operator's claim lasts before the bundle returns to the queue.
    lease_s: int = Field(default=900, ge=10, le=24 * 3600)
    #: Hosts an escalating agent's push-notification webhook may be on (HTTPS,
    #: public addresses unless in ``gateway.webhook_trusted_networks``). Empty:
    #: no pushes; the agent polls ``GetTask`` or streams ``SubscribeToTask``.
    webhook_hosts: list[str] = Field(default_factory=list, max_length=256)
    #: Escalations each agent may send to this queue per window, beside its own
    #: rate limit (H11: a flood of handoffs buries the reviewers). Over it: 429.
    #: None: only the agent's rate limit counts.
    agent_escalations: RateLimitConfig | None = None
    #: Escalations all agents together may send to this queue per window (what
    #: its reviewers can take). Over it: 429. None: no queue-wide quota.
    queue_escalations: RateLimitConfig | None = None


class OperatorConfig(_Section):
    """A person who handles a queue: identity ``operator:<name>``; keys in
    ``.baton/operators/<name>/`` (``baton operators add``)."""

    name: Name
    queues: list[Name] = Field(min_length=1, max_length=100)
    #: May this operator see masked PII originals (each reveal needs a reason
    #: and is audited)? Off by default.
    reveal_pii: bool = False
    #: The value of ``inbox.oidc.claim`` in this person's ID token ("Sign in
    #: with OIDC"); unique across operators. None: no OIDC login.
    oidc_subject: str | None = Field(default=None, min_length=1, max_length=512)


class OidcConfig(_Section):
    """``[inbox.oidc]``: "Sign in with OIDC" on the web inbox (ADR 0015).

    An authorization-code flow with PKCE at ``issuer``; the ID token's
    ``claim`` names the operator (``[[operators]] oidc_subject``). Files are
    relative to the configuration file's folder.
    """

    issuer: str
    client_id: str = Field(min_length=1, max_length=256)
    #: A file holding the client secret the IdP issued (kept out of baton.toml).
    client_secret_file: str = Field(min_length=1)
    #: Extra CA bundle (PEM) for the issuer's TLS; empty: the system store.
    ca_file: str = ""
    claim: str = Field(default="sub", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    scopes: list[str] = Field(default_factory=lambda: ["openid"], min_length=1, max_length=16)

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{value!r}: write the issuer as https://host[:port][/path]")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, values: list[str]) -> list[str]:
        if "openid" not in values:
            raise ValueError('scopes must include "openid" (an OIDC login needs an ID token)')
        for value in values:
            if not value or not all(0x21 <= ord(c) <= 0x7E and c not in '"\\' for c in value):
                raise ValueError(f"{value!r} is not a scope token (RFC 6749 s3.3)")
        return values


class InboxConfig(_Section):
    """``[inbox]``: the operator web inbox on ``gateway.operator_listen`` (ADR 0015)."""

    #: Serve the web app (login sessions, pages) beside ``POST /inbox/api``.
    web: bool = True
    #: A session unused this long ends (seconds).
    idle_timeout_s: int = Field(default=900, ge=60, le=86400)
    #: A session ends this long after its login, used or not (seconds).
    session_max_s: int = Field(default=43200, ge=300, le=604800)
    #: Password checks per operator name per window (failed or not; an
    #: unknown name counts like a known one). Over it: 429, no check.
    login_attempts: int = Field(default=5, ge=1, le=1000)
    login_window_s: int = Field(default=300, ge=10, le=86400)
    #: Password checks per client address per window (all names together).
    login_attempts_per_address: int = Field(default=20, ge=1, le=100_000)
    #: Browser origins (``https://host[:port]``) the web app is reached at;
    #: a POST from any other ``Origin`` is refused. Empty: ``https://`` +
    #: ``gateway.operator_listen`` (and ``localhost`` for a loopback one).
    origins: list[str] = Field(default_factory=list, max_length=64)
    oidc: OidcConfig | None = None

    @field_validator("origins")
    @classmethod
    def _origins(cls, values: list[str]) -> list[str]:
        for value in values:
            parts = urlsplit(value)
            if parts.scheme != "https" or not parts.hostname or parts.path or parts.query:
                raise ValueError(f"{value!r} is not an https origin; write https://host[:port]")
        return [value.lower() for value in values]

    @model_validator(mode="after")
    def _lifetimes(self) -> InboxConfig:
        if self.idle_timeout_s > self.session_max_s:
            raise ValueError(
                f"idle_timeout_s ({self.idle_timeout_s}) is over session_max_s "
                f"({self.session_max_s}); lower idle_timeout_s or raise session_max_s"
            )
        return self


class ApprovalRule(_Section):
    """Calls matching this rule are held until a person approves them (DESIGN
    "Approval-gated calls"): ``callers`` (empty: every caller the allow rules
    let through) calling ``tools`` (MCP) or ``skills`` (A2A) on ``upstream``.
    The handoff goes to ``queue``; it must be decided within ``resolve_within_s``
    (default: the queue's), or it expires and the call never passes.

    A rule only holds calls the allow rules already let through: it never
    allows anything by itself.
    """

    upstream: Name
    queue: Name
    callers: list[Name] = Field(default_factory=list, max_length=10_000)
    tools: list[Target] = Field(default_factory=list, max_length=10_000)
    skills: list[Target] = Field(default_factory=list, max_length=10_000)
    resolve_within_s: int | None = Field(default=None, ge=60, le=30 * 24 * 3600)
    reason: str = Field(default="", max_length=500)


class PolicyConfig(_Section):
    allow: list[PolicyRule] = Field(default_factory=list, max_length=100_000)
    require_approval: list[ApprovalRule] = Field(default_factory=list, max_length=10_000)


class BatonConfig(_Section):
    trust_domain: str
    data_dir: str = ".baton"
    gateway: GatewayConfig = GatewayConfig()
    store: StoreConfig = StoreConfig()
    limits: LimitsConfig = LimitsConfig()
    replay: ReplayConfig = ReplayConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    bearer_issuers: list[BearerIssuerConfig] = Field(default_factory=list, max_length=16)
    agents: list[AgentConfig] = Field(default_factory=list, max_length=10_000)
    upstreams: list[UpstreamConfig] = Field(default_factory=list, max_length=10_000)
    queues: list[QueueConfig] = Field(default_factory=list, max_length=1000)
    operators: list[OperatorConfig] = Field(default_factory=list, max_length=10_000)
    inbox: InboxConfig = InboxConfig()
    policy: PolicyConfig = PolicyConfig()

    @field_validator("trust_domain")
    @classmethod
    def _trust_domain(cls, value: str) -> str:
        try:
            return validate_trust_domain(value)
        except InvalidIdentity as exc:
            raise ValueError(exc.detail) from exc

    @field_validator("agents", "upstreams", "queues", "operators")
    @classmethod
    def _unique_names(
        cls,
        items: list[AgentConfig] | list[UpstreamConfig] | list[QueueConfig] | list[OperatorConfig],
    ) -> list[AgentConfig] | list[UpstreamConfig] | list[QueueConfig] | list[OperatorConfig]:
        names = [item.name for item in items]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"names must be unique; repeated: {duplicates}")
        for name in names:
            validate_name(name)
        return items

    @model_validator(mode="after")
    def _coherent(self) -> BatonConfig:
        agents = {agent.name for agent in self.agents}
        upstreams = {upstream.name: upstream.protocol for upstream in self.upstreams}
        for index, rule in enumerate(self.policy.allow):
            if rule.caller not in agents:
                raise ValueError(
                    f"policy.allow[{index}].caller {rule.caller!r} is not a configured agent; "
                    "add it under [[agents]] or fix the name"
                )
            if rule.upstream not in upstreams:
                raise ValueError(
                    f"policy.allow[{index}].upstream {rule.upstream!r} is not a configured "
                    "upstream; add it under [[upstreams]] or fix the name"
                )
            for key, protocol in (("tools", "mcp"), ("resources", "mcp"), ("prompts", "mcp"),
                                  ("skills", "a2a")):  # fmt: skip
                if getattr(rule, key) and upstreams[rule.upstream] != protocol:
                    raise ValueError(
                        f"policy.allow[{index}].{key}: upstream {rule.upstream!r} has protocol "
                        f"{upstreams[rule.upstream]!r}; {key} apply to protocol = {protocol!r} "
                        "upstreams (set it on the upstream or remove the key)"
                    )
        queues = {queue.name for queue in self.queues}
        for index, queue in enumerate(self.queues):
            for agent in queue.escalate_from:
                if agent not in agents:
                    raise ValueError(
                        f"queues[{index}].escalate_from {agent!r} is not a configured agent; "
                        "add it under [[agents]] or fix the name"
                    )
        for index, operator in enumerate(self.operators):
            for queue_name in operator.queues:
                if queue_name not in queues:
                    raise ValueError(
                        f"operators[{index}].queues {queue_name!r} is not a configured queue; "
                        "add it under [[queues]] or fix the name"
                    )
        subjects: dict[str, int] = {}
        for index, operator in enumerate(self.operators):
            if operator.oidc_subject is None:
                continue
            if operator.oidc_subject in subjects:
                raise ValueError(
                    f"operators[{index}].oidc_subject {operator.oidc_subject!r} is also "
                    f"operators[{subjects[operator.oidc_subject]}]'s; each person signs in "
                    "as one operator: give each its own subject"
                )
            subjects[operator.oidc_subject] = index
        for index, hold in enumerate(self.policy.require_approval):
            where = f"policy.require_approval[{index}]"
            if hold.upstream not in upstreams:
                raise ValueError(
                    f"{where}.upstream {hold.upstream!r} is not a configured upstream; "
                    "add it under [[upstreams]] or fix the name"
                )
            if hold.queue not in queues:
                raise ValueError(
                    f"{where}.queue {hold.queue!r} is not a configured queue; "
                    "add it under [[queues]] or fix the name"
                )
            for agent in hold.callers:
                if agent not in agents:
                    raise ValueError(
                        f"{where}.callers {agent!r} is not a configured agent; "
                        "add it under [[agents]] or fix the name"
                    )
            kind = "tools" if upstreams[hold.upstream] == "mcp" else "skills"
            other = "skills" if kind == "tools" else "tools"
            if upstreams[hold.upstream] not in ("mcp", "a2a"):
                raise ValueError(
                    f"{where}: upstream {hold.upstream!r} has protocol "
                    f"{upstreams[hold.upstream]!r}; approval rules hold MCP tools and A2A skills"
                )
            if getattr(hold, other) or not getattr(hold, kind):
                raise ValueError(
                    f"{where}: upstream {hold.upstream!r} speaks "
                    f"{upstreams[hold.upstream]}; list what to hold in {kind!r} (and no {other})"
                )
        if any(agent.bearer != "none" for agent in self.agents) and not self.bearer_issuers:
            raise ValueError(
                "an agent accepts bearer tokens but no [[bearer_issuers]] is configured; "
                'add one or set bearer = "none"'
            )
        if self.gateway.client_auth == "optional" and not any(
            agent.bearer == "required" for agent in self.agents
        ):
            raise ValueError(
                'gateway.client_auth = "optional" but no agent has bearer = "required": '
                'every caller could then arrive unauthenticated; use "required"'
            )
        return self

    def require_serving_policy(self) -> None:
        """What ``baton serve`` needs beyond a valid file: something to serve, and rules."""
        if not self.upstreams:
            raise ConfigError("upstreams: none configured; add an [[upstreams]] table")
        if not self.policy.allow:
            raise ConfigError(
                "policy.allow: empty, so every call would be denied (deny by default); "
                "add [[policy.allow]] rules naming caller, upstream and methods"
            )


_FIXES = {
    "missing": "add it",
    "extra_forbidden": "remove it (unknown key; check the spelling)",
    "string_pattern_mismatch": "use 1-63 characters of [a-z0-9._-], starting with [a-z0-9]",
    "literal_error": "use one of the values listed",
}


def _explain(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for error in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        fix = _FIXES.get(error["type"], "")
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}: {message}" + (f"; fix: {fix}" if fix else ""))
    return "\n".join(lines)


def parse(text: str, source: str = "baton.toml") -> BatonConfig:
    """Validate TOML ``text``; raise :class:`ConfigError` naming every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    try:
        return BatonConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, source)) from exc


def load(path: Path) -> BatonConfig:
    """Read and validate ``path``; raise :class:`ConfigError` with every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run 'baton init' to create one") from None
    return parse(text, str(path))
