"""Operator decisions: signed, bound to exactly one bundle version and lease, once.

A decision is a compact JWS (``typ`` ``baton-decision+jws``) by the operator's
own signing key over :class:`HandoffDecision`, which names:

* the bundle (``bundle_id``) and *what the operator saw* (``bundle_digest``,
  the SHA-256 of the signed bundle payload) and its ``bundle_version``;
* the lease it was made under (``fencing_token``): a decision made under a
  lapsed lease, after someone else claimed the bundle, is stale;
* the operator (``operator:<subject>``) whose key signed it;
* a ``nonce``, ``iat`` and ``exp``: a decision is single-use and short-lived;
* the decision itself. ``approve`` binds to the request's ``args_digest``;
  ``edit`` carries new arguments and their digest; ``respond`` carries a
  response, which must fit the request's ``response_schema`` when it has one
  (``protocol/schema.py``; :class:`~protocol.errors.ResponseInvalid`);
  ``reroute`` names another queue; ``reject`` may carry a message.

:func:`verify_decision_at` needs only public keys and the expected binding, so
the agent that escalated can verify the decision it receives, offline. That a
decision is the *first* for its lease is enforced by the inbox store
(:meth:`~protocol.ports.InboxStore.decide`); here a mismatch of version or
fencing token raises :class:`~protocol.errors.StaleDecision` (409).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import Field, model_validator

from keys.b64 import b64url_encode
from keys.jose import sign_compact, verify_compact
from keys.material import PrivateKey
from protocol.canonical import canonical_digest
from protocol.directory import KeyDirectory
from protocol.errors import (
    BindingMismatch,
    IdentityMismatch,
    PolicyDenied,
    StaleDecision,
    translating,
)
from protocol.handoff import DecisionType, HandoffRequest
from protocol.model import BatonModel, Digest, JsonData, Name, Nonce, OperatorIdentity, Text
from protocol.replay import check_lifetime
from protocol.schema import validate

__all__ = [
    "DECISION_TYP",
    "DecisionBinding",
    "DecisionBody",
    "DecisionTerms",
    "HandoffDecision",
    "make_decision_at",
    "sign_decision",
    "verify_decision_at",
]

DECISION_TYP: Final = "baton-decision+jws"
MAX_DECISION_TTL_S: Final = 24 * 3600


class DecisionBody(BatonModel):
    """The decision proper."""

    type: DecisionType
    commitment: Literal["agreed", "refused"]
    arguments: JsonData = None
    args_digest: Digest | None = None
    response: JsonData = None
    reroute_queue: Name | None = None
    message: Text | None = None

    @model_validator(mode="after")
    def _check(self) -> DecisionBody:
        expected = "refused" if self.type == "reject" else "agreed"
        if self.commitment != expected:
            raise ValueError(f"a {self.type} decision has commitment {expected!r}")
        if self.type == "edit":
            if self.args_digest is None or self.args_digest != canonical_digest(self.arguments):
                raise ValueError("an edit carries arguments and their args_digest")
        elif self.arguments is not None:
            raise ValueError(f"a {self.type} decision carries no arguments")
        if (self.type == "reroute") != (self.reroute_queue is not None):
            raise ValueError("reroute_queue is required for, and only for, reroute")
        if self.type == "respond" and self.response is None:
            raise ValueError("a respond decision carries a response")
        return self


class HandoffDecision(BatonModel):
    """The signed content of a decision (schema ``baton.handoff-decision/v1``)."""

    schema_: Literal["baton.handoff-decision/v1"] = Field(
        default="baton.handoff-decision/v1", alias="schema"
    )
    bundle_id: str = Field(pattern=r"^hb_[A-Za-z0-9_-]{16,64}$")
    bundle_digest: Digest
    bundle_version: int = Field(ge=1)
    fencing_token: int = Field(ge=1)
    operator: OperatorIdentity
    decision: DecisionBody
    nonce: Nonce
    iat: int = Field(ge=0)
    exp: int = Field(ge=0)

    @model_validator(mode="after")
    def _check(self) -> HandoffDecision:
        if not self.iat < self.exp <= self.iat + MAX_DECISION_TTL_S:
            raise ValueError(f"exp must be after iat and at most {MAX_DECISION_TTL_S}s later")
        return self


@dataclass(frozen=True, slots=True)
class DecisionTerms:
    """What a decision may be, from the handoff request: the allowed types,
    the digest of the arguments asked about and the schema a response must
    fit. The inbox keeps these in clear beside the sealed bundle (they hold no
    arguments), so it can verify a decision without opening the bundle."""

    allowed_decisions: tuple[str, ...]
    args_digest: str | None = None
    response_schema: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, request: HandoffRequest) -> DecisionTerms:
        action = request.requested_action
        return cls(
            tuple(request.allowed_decisions),
            None if action is None else action.args_digest,
            request.response_schema,
        )


@dataclass(frozen=True, slots=True)
class DecisionBinding:
    """What a decision must be about, as the verifier knows it."""

    bundle_id: str
    bundle_digest: str
    bundle_version: int
    fencing_token: int


def make_decision_at(
    binding: DecisionBinding,
    body: DecisionBody,
    *,
    operator: str,
    now: float,
    ttl_s: int = 900,
    nonce: str | None = None,
) -> HandoffDecision:
    """A decision for ``binding``; ``nonce`` defaults to 128 random bits."""
    iat = math.floor(now)
    return HandoffDecision.build(
        bundle_id=binding.bundle_id,
        bundle_digest=binding.bundle_digest,
        bundle_version=binding.bundle_version,
        fencing_token=binding.fencing_token,
        operator=operator,
        decision=body,
        nonce=nonce or b64url_encode(secrets.token_bytes(16)),
        iat=iat,
        exp=iat + ttl_s,
    )


def sign_decision(decision: HandoffDecision, operator_key: PrivateKey) -> str:
    """Compact JWS by the operator's signing key."""
    with translating():
        return sign_compact(decision.canonical(), operator_key, typ=DECISION_TYP)


def verify_decision_at(
    token: str | bytes,
    *,
    operators: KeyDirectory,
    binding: DecisionBinding,
    request: HandoffRequest | DecisionTerms,
    now: float,
    skew_s: int = 5,
) -> HandoffDecision:
    """Verify a decision with public keys only.

    ``operators`` holds the keys of the operators allowed to decide on this
    bundle's queue. Checks: signature and type; the signing key belongs to
    ``decision.operator``; the binding (bundle, digest, version, fencing
    token); freshness; the decision type is allowed; an approval is for the
    requested arguments; a response fits the response schema
    (:class:`~protocol.errors.ResponseInvalid`, or
    :class:`~protocol.errors.InvalidSchema` for a schema outside the subset).
    """
    with translating():
        verified = verify_compact(token, operators.all_keys, typ=DECISION_TYP)
    decision = HandoffDecision.parse(verified.payload)
    if operators.owner_of(verified.key.kid) != decision.operator:
        raise IdentityMismatch("decision signed by a key that is not the operator's")
    if decision.bundle_id != binding.bundle_id or decision.bundle_digest != binding.bundle_digest:
        raise BindingMismatch("decision is about another bundle")
    if decision.bundle_version != binding.bundle_version:
        raise StaleDecision("decision is for another bundle version")
    if decision.fencing_token != binding.fencing_token:
        raise StaleDecision("decision was made under a lease that is no longer current")
    check_lifetime(decision.iat, decision.exp, now=now, skew_s=skew_s, what="decision")
    terms = request if isinstance(request, DecisionTerms) else DecisionTerms.of(request)
    body = decision.decision
    if body.type not in terms.allowed_decisions:
        raise PolicyDenied(f"decision {body.type!r} is not allowed for this handoff")
    asked = terms.args_digest
    if body.type == "approve" and asked is not None:
        # An approval is for the arguments the agent asked about, nothing else.
        if body.args_digest not in (None, asked):
            raise BindingMismatch("approval names other arguments")
    if body.type == "edit" and body.args_digest == asked:
        raise BindingMismatch("an edit must change the arguments")
    if body.type == "respond" and terms.response_schema is not None:
        validate(body.response, terms.response_schema)
    return decision
