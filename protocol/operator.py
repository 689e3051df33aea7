"""Operator commands: what an operator's client asks the inbox to do, signed.

The operator API (``POST /inbox/api`` on the operator listener) takes one
compact JWS per request (``typ`` ``baton-operator-command+jws``), signed by
the operator's own signing key (ES256, the key that also signs decisions), over
an :class:`OperatorCommand`. The signature is the credential: no password or
session travels, and a captured command is useless elsewhere or later:

* ``aud`` names the gateway it is for (another gateway refuses it);
* ``iat``/``exp`` bound it to at most :data:`MAX_COMMAND_TTL_S` seconds;
* ``nonce`` is claimed once in the gateway's shared nonce store, so a
  replayed command is refused (R01) even across gateway processes;
* ``queue`` and ``bundle_id`` say exactly what it acts on.

``decide`` carries the decision JWS (``protocol/decision.py``) as it is: the
decision is verified on its own, and the command only transports it.
``reveal`` must give a ``reason``; the gateway audits it before it hands out
the encrypted originals (DESIGN "PII").
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import Field, model_validator

from keys.b64 import b64url_encode
from keys.jose import sign_compact, verify_compact
from keys.material import PrivateKey
from protocol.directory import KeyDirectory
from protocol.errors import (
    BadAudience,
    IdentityMismatch,
    InvalidRequest,
    translating,
)
from protocol.model import BatonModel, Identity, JsonPointer, Name, Nonce, OperatorIdentity, Text
from protocol.replay import check_lifetime

__all__ = [
    "COMMAND_MEDIA_TYPE",
    "COMMAND_TYP",
    "MAX_COMMAND_TTL_S",
    "CommandOp",
    "OperatorCommand",
    "VerifiedCommand",
    "make_command_at",
    "sign_command",
    "verify_command_at",
]

COMMAND_TYP: Final = "baton-operator-command+jws"
COMMAND_MEDIA_TYPE: Final = "application/baton-operator-command+jws"
#: A command is good for at most this long (clock skew included).
MAX_COMMAND_TTL_S: Final = 300
_MAX_COMMAND_BYTES: Final = 256 * 1024

CommandOp = Literal["list", "show", "claim", "release", "decide", "reveal"]
#: Operations that act on one bundle and so must name it.
_ON_BUNDLE: Final = frozenset({"show", "claim", "release", "decide", "reveal"})
_Status = Literal[
    "queued", "claimed", "decided", "delivered", "acknowledged", "expired", "cancelled"
]


class OperatorCommand(BatonModel):
    """The signed content of a command (schema ``baton.operator-command/v1``)."""

    schema_: Literal["baton.operator-command/v1"] = Field(
        default="baton.operator-command/v1", alias="schema"
    )
    op: CommandOp
    operator: OperatorIdentity
    aud: Identity
    queue: Name
    bundle_id: str | None = Field(default=None, pattern=r"^hb_[A-Za-z0-9_-]{16,64}$")
    status: _Status | None = None
    fencing_token: int | None = Field(default=None, ge=1)
    decision: str | None = Field(default=None, min_length=1, max_length=200_000)
    reason: Text | None = None
    paths: tuple[JsonPointer, ...] = Field(default=(), max_length=64)
    nonce: Nonce
    iat: int = Field(ge=0)
    exp: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self) -> OperatorCommand:
        if not self.iat < self.exp <= self.iat + MAX_COMMAND_TTL_S:
            raise ValueError(f"exp must be after iat and at most {MAX_COMMAND_TTL_S}s later")
        if (self.op in _ON_BUNDLE) != (self.bundle_id is not None):
            raise ValueError(
                f"{self.op} {'needs' if self.op in _ON_BUNDLE else 'takes no'} bundle_id"
            )
        if self.op == "release" and self.fencing_token is None:
            raise ValueError("release names the lease's fencing_token")
        if (self.op == "decide") != (self.decision is not None):
            raise ValueError("decision is required for, and only for, decide")
        if self.op == "reveal" and not (self.reason and self.reason.strip()):
            raise ValueError("a reveal needs a reason")
        if self.status is not None and self.op != "list":
            raise ValueError("status filters list only")
        return self


@dataclass(frozen=True, slots=True)
class VerifiedCommand:
    """A command whose signature, audience, freshness and signer verified.
    The nonce is not yet claimed: the caller claims ``command.nonce`` once."""

    command: OperatorCommand
    kid: str


def make_command_at(
    op: CommandOp,
    *,
    operator: str,
    audience: str,
    queue: str,
    now: float,
    ttl_s: int = 60,
    nonce: str | None = None,
    bundle_id: str | None = None,
    status: str | None = None,
    fencing_token: int | None = None,
    decision: str | None = None,
    reason: str | None = None,
    paths: tuple[str, ...] = (),
) -> OperatorCommand:
    """A command issued at ``now``; ``nonce`` defaults to 128 random bits."""
    iat = math.floor(now)
    return OperatorCommand.build(
        op=op,
        operator=operator,
        aud=audience,
        queue=queue,
        bundle_id=bundle_id,
        status=status,
        fencing_token=fencing_token,
        decision=decision,
        reason=reason,
        paths=paths,
        nonce=nonce or b64url_encode(secrets.token_bytes(16)),
        iat=iat,
        exp=iat + ttl_s,
    )


def sign_command(command: OperatorCommand, operator_key: PrivateKey) -> str:
    """Compact JWS by the operator's signing key."""
    with translating():
        return sign_compact(command.canonical(), operator_key, typ=COMMAND_TYP)


def verify_command_at(
    token: str | bytes,
    *,
    operators: KeyDirectory,
    audience: str,
    now: float,
    skew_s: int = 5,
) -> VerifiedCommand:
    """Verify a command with the operators' public keys.

    Checks, in order: size; signature and ``typ`` against every known
    operator key (algorithm pinned by the key); the signing key belongs to
    ``command.operator``; ``aud`` is this gateway; ``iat <= now + skew`` and
    ``now < exp``. Whether that operator serves ``command.queue`` is the
    caller's policy check.
    """
    if len(token) > _MAX_COMMAND_BYTES:
        raise InvalidRequest(f"command over {_MAX_COMMAND_BYTES} bytes")
    with translating():
        verified = verify_compact(token, operators.all_keys, typ=COMMAND_TYP)
    command = OperatorCommand.parse(verified.payload)
    if operators.owner_of(verified.key.kid) != command.operator:
        raise IdentityMismatch("command signed by a key that is not the operator's")
    if command.aud != audience:
        raise BadAudience(f"command is for {command.aud}, not {audience}")
    check_lifetime(command.iat, command.exp, now=now, skew_s=skew_s, what="command")
    return VerifiedCommand(command, verified.key.kid)
