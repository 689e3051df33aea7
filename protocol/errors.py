"""Baton's one error hierarchy.

Every error has a stable string :attr:`~BatonError.code` (never renamed: it is
part of the public contract, and audit events and metrics are keyed by it), an
HTTP status, and a short public message. The precise internal reason is the
``detail`` argument: it goes to logs, metrics and the audit event, never to
the caller (``public()`` omits it).

::

    BatonError (500 internal_error)
    +-- InvalidRequest (400)            malformed_input, too_deep, invalid_identity, ...
    |   +-- InvalidEnvelope (400)       one body for every JWE failure; compression_not_allowed
    |   +-- InvalidArtifact (400)       invalid_schema, response_invalid (``protocol/schema.py``)
    |   +-- header_mismatch, unsupported_version, unsafe_webhook (protocol adapters)
    +-- AuthenticationFailed (401)      bad_signature, replay_detected, expired, unknown_kid,
    |                                   invalid_credentials, session_required, oidc_failed, ...
    +-- Forbidden (403)                 policy_denied, not_participant, csrf_failed,
    |                                   tool_changed, ...
    +-- NotFound (404)                  session_not_found, task_not_found
    +-- MethodNotAllowed (405), MisdirectedRequest (421)
    +-- Conflict (409)                  duplicate_bundle, stale_decision, out_of_order
    +-- RequestTimeout (408), PayloadTooLarge (413), HeadersTooLarge (431)
    +-- IntegrityError (422)            chain_break, head_mismatch, seq_violation, binding_mismatch
    +-- RateLimited (429)               too_many_connections
    +-- BadGateway (502), GatewayTimeout (504)   upstream_error, upstream_timeout
    +-- Unavailable (503)               store_unavailable, audit_unavailable, circuit_open,
    |                                   overloaded
    +-- ConfigurationError (500)        invalid_key, insecure_key_file, invalid_config

The statuses follow the table in ``research/security.md`` §1. ``keys/`` sits
below this module and raises :class:`keys.errors.KeysError` with the same
codes; :func:`from_keys_error` maps them here, and :func:`translating` does so
for a block of code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from keys.errors import KeysError

__all__ = [
    "ERRORS_BY_CODE",
    "AlgorithmMismatch",
    "AlgorithmNotAllowed",
    "ApprovalRefused",
    "ApprovalRequired",
    "AuditUnavailable",
    "AuthenticationFailed",
    "BadAudience",
    "BadGateway",
    "BadIssuer",
    "BadSignature",
    "BatonError",
    "BindingMismatch",
    "CertificateRejected",
    "ChainBreak",
    "ChainConflict",
    "CircuitOpen",
    "CompressionNotAllowed",
    "ConfigurationError",
    "Conflict",
    "ConnectionLimited",
    "CryptoError",
    "CsrfFailed",
    "DigestInvalid",
    "DigestMismatch",
    "DuplicateBundle",
    "Forbidden",
    "GatewayTimeout",
    "HeadMismatch",
    "HeaderMismatch",
    "HeadersTooLarge",
    "IdentityMismatch",
    "InsecureKeyFile",
    "InsufficientCoverage",
    "IntegrityError",
    "InvalidArtifact",
    "InvalidCredentials",
    "InvalidEnvelope",
    "InvalidIdentity",
    "InvalidKeyMaterial",
    "InvalidRequest",
    "InvalidSchema",
    "MalformedInput",
    "MalformedJws",
    "MalformedSignature",
    "MethodNotAllowed",
    "MisdirectedRequest",
    "NotFound",
    "NotParticipant",
    "NotRecipient",
    "NotYetValid",
    "OidcLoginFailed",
    "OriginRejected",
    "OutOfOrder",
    "Overloaded",
    "PayloadTooLarge",
    "PolicyDenied",
    "RateLimited",
    "ReplayDetected",
    "RequestTimeout",
    "ResponseInvalid",
    "SeqViolation",
    "SessionNotFound",
    "SessionRequired",
    "SignatureMissing",
    "Stale",
    "StaleDecision",
    "StoreUnavailable",
    "TaskNotFound",
    "TokenExpired",
    "TooDeep",
    "ToolChanged",
    "Unavailable",
    "UnknownKeyId",
    "UnsafeWebhook",
    "UnsupportedCrit",
    "UnsupportedHeader",
    "UnsupportedVersion",
    "UntrustedKey",
    "WrongType",
    "from_keys_error",
    "translating",
]

#: code -> class, filled by ``BatonError.__init_subclass__``.
ERRORS_BY_CODE: dict[str, type[BatonError]] = {}


class BatonError(Exception):
    """Root of the hierarchy. Subclasses set the class attributes."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500
    public_message: ClassVar[str] = "internal error"
    retryable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            if cls.code in ERRORS_BY_CODE:
                raise TypeError(f"error code {cls.code!r} defined twice")
            ERRORS_BY_CODE[cls.code] = cls

    def __init__(
        self,
        detail: str = "",
        *,
        retry_after: float | None = None,
        public_data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.code)
        self.detail = detail
        self.retry_after = retry_after
        #: Facts the caller must see to act (the handoff a held call waits on);
        #: never secrets, never the internal ``detail``. Rendered under
        #: ``error.data.baton`` by the protocol adapters.
        self.public_data: Mapping[str, Any] | None = public_data

    def public(self) -> dict[str, Any]:
        """What the caller may see: code, message, retryability. Never ``detail``."""
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.public_message,
            "retryable": self.retryable,
        }
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        if self.public_data is not None:
            body["baton"] = dict(self.public_data)
        return body

    def diagnostics(self) -> str:
        """The internal reason, for logs and audit events only."""
        return f"{self.code}: {self.detail}" if self.detail else self.code


ERRORS_BY_CODE[BatonError.code] = BatonError


# --------------------------------------------------------------------------- 400
class InvalidRequest(BatonError):
    """The request is malformed; nothing about it was trusted."""

    code = "invalid_request"
    http_status = 400
    public_message = "invalid request"


class MalformedInput(InvalidRequest):
    """Bytes that do not parse under the strict rules (JSON, base64url, ...)."""

    code = "malformed_input"


class TooDeep(InvalidRequest):
    """JSON nested deeper than the limit (threat X02)."""

    code = "too_deep"


class InvalidIdentity(InvalidRequest):
    """A SPIFFE ID or operator identity that does not parse."""

    code = "invalid_identity"


class InvalidArtifact(InvalidRequest):
    """A Baton artifact (request, bundle, decision, capsule claims) that fails its schema."""

    code = "invalid_artifact"


class InvalidSchema(InvalidArtifact):
    """A response schema outside the subset of JSON Schema that Baton checks
    (``protocol/schema.py``): refused when the handoff is asked for, never
    half-applied. ``pointer`` (RFC 6901, into the schema) and ``keyword`` say
    where; both are also public (the agent must know what to drop)."""

    code = "invalid_schema"
    public_message = "response schema not supported"

    def __init__(self, detail: str = "", *, pointer: str = "", keyword: str = "") -> None:
        super().__init__(detail, public_data=_located(pointer, keyword))
        self.pointer = pointer
        self.keyword = keyword


class ResponseInvalid(InvalidArtifact):
    """A ``respond`` decision whose response does not fit the handoff's
    ``response_schema``. ``pointer`` (RFC 6901, into the response) and
    ``keyword`` (the schema keyword that failed) are also public: the
    operator wrote the response and must see what to fix."""

    code = "response_invalid"
    public_message = "response does not fit the response schema"

    def __init__(self, detail: str = "", *, pointer: str = "", keyword: str = "") -> None:
        super().__init__(detail, public_data=_located(pointer, keyword))
        self.pointer = pointer
        self.keyword = keyword


def _located(pointer: str, keyword: str) -> dict[str, str] | None:
    """The public facts of a schema error (none when it names no keyword)."""
    return {"pointer": pointer, "keyword": keyword} if keyword else None


class InvalidEnvelope(InvalidRequest):
    """A JWE that does not parse or decrypt. One body for every cause (E01-E10)."""

    code = "invalid_envelope"
    public_message = "invalid envelope"


class HeaderMismatch(InvalidRequest):
    """A routing header disagrees with the body (MCP 2026-07-28 ``Mcp-Method``/``Mcp-Name``)."""

    code = "header_mismatch"
    public_message = "header does not match the body"


class UnsupportedVersion(InvalidRequest):
    """A protocol version the gateway does not speak (``MCP-Protocol-Version``, ``A2A-Version``)."""

    code = "unsupported_version"
    public_message = "unsupported protocol version"


class UnsafeWebhook(InvalidRequest):
    """A push-notification URL outside the allow-list or pointing at a private range (SSRF)."""

    code = "unsafe_webhook"
    public_message = "webhook URL not allowed"


class CompressionNotAllowed(InvalidEnvelope):
    """JWE ``zip``: compression is refused outright (E05)."""

    code = "compression_not_allowed"


# --------------------------------------------------------------------------- 401
class AuthenticationFailed(BatonError):
    """A credential, signature or freshness check failed (RFC 6750 s3.1 ``invalid_token``)."""

    code = "unauthenticated"
    http_status = 401
    public_message = "authentication failed"
    www_authenticate: ClassVar[str] = 'Bearer error="invalid_token"'


# Codes shared with keys.errors, one class each (see the catalogue in security.md).
class MalformedJws(AuthenticationFailed):
    """Unparseable JWS."""

    code = "malformed_jws"


class AlgorithmNotAllowed(AuthenticationFailed):
    """none/HMAC/unknown alg."""

    code = "alg_not_allowed"


class AlgorithmMismatch(AuthenticationFailed):
    """alg differs from the key's."""

    code = "alg_mismatch"


class UnknownKeyId(AuthenticationFailed):
    """kid not known."""

    code = "unknown_kid"


class UntrustedKey(AuthenticationFailed):
    """Key from a header, not config."""

    code = "untrusted_key"


class UnsupportedCrit(AuthenticationFailed):
    """crit/b64 extension."""

    code = "unsupported_crit"


class UnsupportedHeader(AuthenticationFailed):
    """Header not allowed."""

    code = "unsupported_header"


class WrongType(AuthenticationFailed):
    """typ of another artifact."""

    code = "wrong_typ"


class BadSignature(AuthenticationFailed):
    """Signature fails."""

    code = "bad_signature"


class TokenExpired(AuthenticationFailed):
    """exp has passed."""

    code = "expired"


class NotYetValid(AuthenticationFailed):
    """nbf/iat ahead."""

    code = "not_yet_valid"


class BadAudience(AuthenticationFailed):
    """aud not ours."""

    code = "bad_audience"


class BadIssuer(AuthenticationFailed):
    """iss not exact."""

    code = "bad_issuer"


class IdentityMismatch(AuthenticationFailed):
    """Credentials disagree."""

    code = "identity_mismatch"


class SignatureMissing(AuthenticationFailed):
    """No required signature."""

    code = "signature_missing"


class MalformedSignature(AuthenticationFailed):
    """Bad RFC 9421 fields."""

    code = "malformed_signature"


class InsufficientCoverage(AuthenticationFailed):
    """RFC 9421 signature misses required components or parameters (R10)."""

    code = "insufficient_coverage"


class DigestMismatch(AuthenticationFailed):
    """Content-Digest wrong (R11)."""

    code = "digest_mismatch"


class CertificateRejected(AuthenticationFailed):
    """Bad peer certificate."""

    code = "certificate_rejected"


class Stale(AuthenticationFailed):
    """created outside the freshness window (R06, R07)."""

    code = "stale"


class ReplayDetected(AuthenticationFailed):
    """Nonce seen before (R01-R05)."""

    code = "replay_detected"


class OidcLoginFailed(AuthenticationFailed):
    """An OpenID Connect login did not complete (state, nonce, issuer answer, unmapped subject)."""

    code = "oidc_failed"


class InvalidCredentials(AuthenticationFailed):
    """A web-inbox login failed. One answer for an unknown name and a wrong
    password, so the answer does not reveal which names exist."""

    code = "invalid_credentials"


class SessionRequired(AuthenticationFailed):
    """A web-inbox route needs a live login session (none, expired or logged out)."""

    code = "session_required"


# --------------------------------------------------------------------------- 403
class Forbidden(BatonError):
    """Authenticated, but not allowed."""

    code = "forbidden"
    http_status = 403
    public_message = "forbidden"


class PolicyDenied(Forbidden):
    """Denied by policy."""

    code = "policy_denied"


class ToolChanged(Forbidden):
    """An MCP tool's definition changed since it was pinned (I04, "rug pull"):
    hidden from listings and refused until an administrator approves it again."""

    code = "tool_changed"
    public_message = "tool changed since it was approved"


class NotParticipant(Forbidden):
    """Sender is not in the conversation (H01)."""

    code = "not_participant"


class ApprovalRequired(Forbidden):
    """A ``require_approval`` rule holds the call until a person decides
    (DESIGN "Approval-gated calls"); ``public_data`` names the handoff."""

    code = "approval_required"
    public_message = "this call waits for a person's approval"


class ApprovalRefused(Forbidden):
    """The held call's handoff was rejected, expired, cancelled, decided for
    other arguments, or its single approval was already used: it never passes."""

    code = "approval_refused"
    public_message = "this call was not approved"


class OriginRejected(Forbidden):
    """A browser ``Origin`` that is not allowed (DNS rebinding; MCP transports: 403)."""

    code = "origin_rejected"


class CsrfFailed(Forbidden):
    """A state-changing web request without the session's CSRF token
    (``X-Baton-CSRF``), or with another one."""

    code = "csrf_failed"
    public_message = "missing or wrong CSRF token"


class NotRecipient(Forbidden):
    """Capsule or bundle not addressed to the opener."""

    code = "not_recipient"


# --------------------------------------------------------------------------- 404
class NotFound(BatonError):
    """Absent, or present but not visible to this caller (existence is not revealed)."""

    code = "not_found"
    http_status = 404
    public_message = "not found"


class SessionNotFound(NotFound):
    """An MCP session that does not exist or belongs to another identity (MCP: 404)."""

    code = "session_not_found"
    public_message = "session not found"


class TaskNotFound(NotFound):
    """An A2A task that does not exist or belongs to another identity (A2A s13.1)."""

    code = "task_not_found"
    public_message = "task not found"


# --------------------------------------------------------------------------- 405/421
class MethodNotAllowed(BatonError):
    """The HTTP method is not served for this protocol era (MCP 2026-07-28: GET, DELETE)."""

    code = "method_not_allowed"
    http_status = 405
    public_message = "method not allowed"


class MisdirectedRequest(BatonError):
    """``Host`` names a server other than this gateway (DNS rebinding, RFC 9110 s15.5.20)."""

    code = "misdirected_request"
    http_status = 421
    public_message = "misdirected request"


# --------------------------------------------------------------------------- 409
class Conflict(BatonError):
    """The request conflicts with current state."""

    code = "conflict"
    http_status = 409
    public_message = "conflict"


class DuplicateBundle(Conflict):
    """Bundle replayed (H06)."""

    code = "duplicate_bundle"


class StaleDecision(Conflict):
    """Decision for an old version or lease."""

    code = "stale_decision"


class OutOfOrder(Conflict):
    """Sequence went back or skipped (R08)."""

    code = "out_of_order"


class ChainConflict(Conflict):
    """Compare-and-append lost a race; retry."""

    code = "chain_conflict"


# --------------------------------------------------------------------------- 413/431
class RequestTimeout(BatonError):
    """The client was too slow sending its request (X05)."""

    code = "request_timeout"
    http_status = 408
    public_message = "request timeout"


class PayloadTooLarge(BatonError):
    """Body or artifact over its cap (X01, H13)."""

    code = "payload_too_large"
    http_status = 413
    public_message = "payload too large"


class HeadersTooLarge(BatonError):
    """Header section over its cap (X04)."""

    code = "headers_too_large"
    http_status = 431
    public_message = "request header fields too large"


# --------------------------------------------------------------------------- 422
class IntegrityError(BatonError):
    """Well-formed, but fails integrity or binding checks."""

    code = "bundle_integrity"
    http_status = 422
    public_message = "integrity check failed"


class ChainBreak(IntegrityError):
    """prev does not link (H02)."""

    code = "chain_break"


class HeadMismatch(IntegrityError):
    """Chain head is not the signed one (H03)."""

    code = "head_mismatch"


class SeqViolation(IntegrityError):
    """Sequence numbers out of order (H04)."""

    code = "seq_violation"


class BindingMismatch(IntegrityError):
    """Artifact bound to something else (H05)."""

    code = "binding_mismatch"


class DigestInvalid(IntegrityError):
    """A recorded digest does not match content."""

    code = "digest_invalid"


# --------------------------------------------------------------------------- 429/503
class RateLimited(BatonError):
    """Over the rate limit; ``retry_after`` seconds (X06, H11)."""

    code = "rate_limited"
    http_status = 429
    public_message = "rate limited"
    retryable = True


class ConnectionLimited(RateLimited):
    """One client address holds the most connections allowed (X05); this one is closed."""

    code = "too_many_connections"
    public_message = "too many connections"


class Unavailable(BatonError):
    """A dependency is down; Baton fails closed."""

    code = "unavailable"
    http_status = 503
    public_message = "service unavailable"
    retryable = True


class Overloaded(Unavailable):
    """This gateway process already serves its most requests at once (X06); shed."""

    code = "overloaded"
    public_message = "overloaded"


class StoreUnavailable(Unavailable):
    """Store down."""

    code = "store_unavailable"


class AuditUnavailable(Unavailable):
    """Audit down."""

    code = "audit_unavailable"


class CircuitOpen(Unavailable):
    """The upstream's circuit breaker is open: it failed repeatedly; nothing was sent."""

    code = "circuit_open"
    public_message = "upstream unavailable"


class BadGateway(BatonError):
    """The upstream could not be reached, or its identity or answer was unacceptable."""

    code = "upstream_error"
    http_status = 502
    public_message = "bad gateway"
    retryable = True


class GatewayTimeout(BatonError):
    """The upstream did not answer in time."""

    code = "upstream_timeout"
    http_status = 504
    public_message = "upstream timed out"
    retryable = True


# --------------------------------------------------------------------------- 500
class ConfigurationError(BatonError):
    """The operator's configuration or key material is wrong. Fix and restart."""

    code = "invalid_config"
    http_status = 500
    public_message = "internal error"


class InvalidKeyMaterial(ConfigurationError):
    """Bad key."""

    code = "invalid_key"


class InsecureKeyFile(InvalidKeyMaterial):
    """Key file readable by others."""

    code = "insecure_key_file"


class CryptoError(BatonError):
    """Unclassified crypto failure."""

    code = "crypto_error"


# ``keys.errors.TooLarge`` carries code "payload_too_large": PayloadTooLarge above.


def from_keys_error(exc: KeysError) -> BatonError:
    """The :class:`BatonError` for a ``keys/`` error, keeping its detail."""
    cls = ERRORS_BY_CODE.get(exc.code, BatonError)
    return cls(exc.detail)


@contextmanager
def translating() -> Iterator[None]:
    """Re-raise any :class:`KeysError` raised in the block as a :class:`BatonError`."""
    try:
        yield
    except KeysError as exc:
        raise from_keys_error(exc) from exc
