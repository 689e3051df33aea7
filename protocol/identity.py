"""Identities: SPIFFE IDs for workloads, ``operator:<subject>`` for people.

A SPIFFE ID (SPIFFE-ID.md s2) is ``spiffe://<trust domain><path>``:

* the scheme is exactly ``spiffe`` and is followed by ``//``;
* the trust domain is 1-255 characters of ``[a-z0-9.-_]`` (lowercase only);
* the path is zero or more ``/segment``; a segment is 1+ characters of
  ``[A-Za-z0-9.-_]`` and is neither ``.`` nor ``..``; no trailing ``/``;
* no percent-encoding, port, user info, query or fragment; at most 2048 bytes.

Baton gives the path a meaning: ``/agent/<name>`` is an agent,
``/gateway/<name>`` a gateway instance and ``/operator/<name>`` an operator's
client certificate. Names Baton *issues* are stricter than the spec so that
they are safe everywhere they appear (file names, metrics labels, logs):
1-63 characters of ``[a-z0-9_-]`` (plus ``.``), starting with a letter or digit.

People are ``operator:<subject>`` where ``<subject>`` is the login subject
(OIDC ``sub`` or a local account name): printable ASCII, no spaces, 1-255.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from protocol.errors import InvalidIdentity

__all__ = [
    "KINDS",
    "OperatorId",
    "SpiffeId",
    "agent_id",
    "gateway_id",
    "operator_cert_id",
    "parse_baton_id",
    "parse_operator_id",
    "parse_spiffe_id",
    "validate_name",
    "validate_trust_domain",
]

Kind = Literal["agent", "gateway", "operator"]
KINDS: Final = ("agent", "gateway", "operator")

_MAX_ID: Final = 2048
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}\Z")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+\Z")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}\Z")
_SUBJECT = re.compile(r"[\x21-\x7e]{1,255}\Z")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A parsed, valid SPIFFE ID. ``str()`` gives the canonical URI."""

    trust_domain: str
    path: str

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}{self.path}"

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")[1:]) if self.path else ()

    @property
    def kind(self) -> str | None:
        """``agent``/``gateway``/``operator`` for Baton IDs, else ``None``."""
        segments = self.segments
        return segments[0] if len(segments) == 2 and segments[0] in KINDS else None

    @property
    def name(self) -> str | None:
        return self.segments[1] if self.kind else None


@dataclass(frozen=True, slots=True)
class OperatorId:
    """A person: ``operator:<subject>``."""

    subject: str

    def __str__(self) -> str:
        return f"operator:{self.subject}"


def validate_trust_domain(trust_domain: str) -> str:
    """Return ``trust_domain`` if it is a valid SPIFFE trust domain name."""
    if not _TRUST_DOMAIN.match(trust_domain):
        raise InvalidIdentity(
            f"trust domain {trust_domain!r} must be 1-255 characters of [a-z0-9.-_]"
        )
    if trust_domain.strip(".") != trust_domain or ".." in trust_domain:
        raise InvalidIdentity(f"trust domain {trust_domain!r} has empty labels")
    return trust_domain


def validate_name(name: str) -> str:
    """Return ``name`` if Baton may issue it (see the module docstring)."""
    if not _NAME.match(name):
        raise InvalidIdentity(
            f"name {name!r} must be 1-63 characters of [a-z0-9._-], starting with [a-z0-9]"
        )
    return name


def parse_spiffe_id(value: object) -> SpiffeId:
    """Parse and validate any SPIFFE ID (SPIFFE-ID.md s2.1-s2.3)."""
    if not isinstance(value, str) or len(value.encode("utf-8", "replace")) > _MAX_ID:
        raise InvalidIdentity("SPIFFE ID missing or longer than 2048 bytes")
    prefix = "spiffe://"
    if not value.startswith(prefix):
        raise InvalidIdentity("SPIFFE ID must start with 'spiffe://' (lowercase)")
    rest = value[len(prefix) :]
    trust_domain, slash, path = rest.partition("/")
    validate_trust_domain(trust_domain)
    if not slash:
        return SpiffeId(trust_domain, "")
    for segment in path.split("/"):
        if not segment:
            raise InvalidIdentity("SPIFFE ID path has an empty segment or trailing '/'")
        if segment in (".", ".."):
            raise InvalidIdentity("SPIFFE ID path has a '.' or '..' segment")
        if not _SEGMENT.match(segment):
            raise InvalidIdentity("SPIFFE ID path segment has a character outside [A-Za-z0-9.-_]")
    return SpiffeId(trust_domain, "/" + path)


def parse_baton_id(
    value: object, *, trust_domain: str | None = None, kind: Kind | None = None
) -> SpiffeId:
    """Parse a Baton workload ID: ``spiffe://<td>/<kind>/<name>`` with a valid name.

    ``trust_domain`` and ``kind``, when given, must match exactly.
    """
    spiffe_id = parse_spiffe_id(value)
    if spiffe_id.kind is None or spiffe_id.name is None:
        raise InvalidIdentity("not a Baton ID: path must be /agent|gateway|operator/<name>")
    validate_name(spiffe_id.name)
    if trust_domain is not None and spiffe_id.trust_domain != trust_domain:
        raise InvalidIdentity(
            f"trust domain {spiffe_id.trust_domain!r} is not the configured {trust_domain!r}"
        )
    if kind is not None and spiffe_id.kind != kind:
        raise InvalidIdentity(f"identity is a {spiffe_id.kind}, expected a {kind}")
    return spiffe_id


def parse_operator_id(value: object) -> OperatorId:
    """Parse ``operator:<subject>``."""
    prefix = "operator:"
    if not isinstance(value, str) or not value.startswith(prefix):
        raise InvalidIdentity("operator identity must start with 'operator:'")
    subject = value[len(prefix) :]
    if not _SUBJECT.match(subject):
        raise InvalidIdentity("operator subject must be 1-255 printable ASCII characters")
    return OperatorId(subject)


def _baton_id(trust_domain: str, kind: Kind, name: str) -> SpiffeId:
    return SpiffeId(validate_trust_domain(trust_domain), f"/{kind}/{validate_name(name)}")


def agent_id(trust_domain: str, name: str) -> SpiffeId:
    """``spiffe://<td>/agent/<name>``."""
    return _baton_id(trust_domain, "agent", name)


def gateway_id(trust_domain: str, name: str) -> SpiffeId:
    """``spiffe://<td>/gateway/<name>``."""
    return _baton_id(trust_domain, "gateway", name)


def operator_cert_id(trust_domain: str, name: str) -> SpiffeId:
    """``spiffe://<td>/operator/<name>``: the ID in an operator's client certificate."""
    return _baton_id(trust_domain, "operator", name)
