"""Configuration: one TOML file, validated by pydantic at start-up.

Errors name the key and say how to fix it (:class:`ConfigError`); nothing is
defaulted silently into an insecure state. This module covers what the
foundation needs (trust domain, data folder, gateway identity, store, the
agent roster); the data plane adds listeners, limits and policy.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from protocol.errors import InvalidIdentity
from protocol.identity import validate_name, validate_trust_domain

__all__ = ["AgentConfig", "BatonConfig", "ConfigError", "GatewayConfig", "StoreConfig", "load"]

_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
Name = Annotated[str, Field(pattern=_NAME_PATTERN)]


class ConfigError(Exception):
    """A configuration problem, with the key and the fix in the message."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class GatewayConfig(_Section):
    name: Name = "gw1"
    listen: str = "127.0.0.1:8443"


class StoreConfig(_Section):
    kind: Literal["sqlite", "redis"] = "sqlite"
    path: str = "baton.db"
    url: str | None = None


class AgentConfig(_Section):
    name: Name
    signatures: Literal["required", "optional"] = "required"


class BatonConfig(_Section):
    trust_domain: str
    data_dir: str = ".baton"
    gateway: GatewayConfig = GatewayConfig()
    store: StoreConfig = StoreConfig()
    agents: list[AgentConfig] = Field(default_factory=list, max_length=10_000)

    @field_validator("trust_domain")
    @classmethod
    def _trust_domain(cls, value: str) -> str:
        try:
            return validate_trust_domain(value)
        except InvalidIdentity as exc:
            raise ValueError(exc.detail) from exc

    @field_validator("agents")
    @classmethod
    def _unique_agents(cls, agents: list[AgentConfig]) -> list[AgentConfig]:
        names = [agent.name for agent in agents]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"agent names must be unique; repeated: {duplicates}")
        for name in names:
            validate_name(name)
        return agents


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
        lines.append(f"  {key}: {error['msg']}" + (f"; fix: {fix}" if fix else ""))
    return "\n".join(lines)


def load(path: Path) -> BatonConfig:
    """Read and validate ``path``; raise :class:`ConfigError` with every problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; run 'baton init' to create one") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return BatonConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, str(path))) from exc
