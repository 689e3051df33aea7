"""Errors raised by ``keys/``.

``keys/`` sits below ``protocol/`` and cannot import its error hierarchy, so it
raises :class:`KeysError` subclasses whose ``code`` is one of the stable string
codes of ``protocol/errors.py``. ``protocol.errors.from_keys_error`` turns each
into the matching :class:`protocol.errors.BatonError`; a test checks that every
code used here has a class there.

Every message is safe to log but is *internal*: callers show only the public
message of the translated error. No message ever contains key material, a
token, or a body.
"""

from __future__ import annotations

__all__ = [
    "AlgorithmMismatch",
    "AlgorithmNotAllowed",
    "BadAudience",
    "BadIssuer",
    "BadSignature",
    "CertificateRejected",
    "CompressionNotAllowed",
    "CoverageInsufficient",
    "DigestMismatch",
    "IdentityMismatch",
    "InsecureKeyFile",
    "InvalidEnvelope",
    "InvalidKey",
    "KeysError",
    "MalformedInput",
    "MalformedJws",
    "MalformedSignatureHeader",
    "NotYetValid",
    "SignatureMissing",
    "TokenExpired",
    "TooDeep",
    "TooLarge",
    "UnknownKeyId",
    "UnsupportedCrit",
    "UnsupportedHeader",
    "UntrustedKey",
    "WrongType",
]


class KeysError(Exception):
    """Base class. ``code`` is a stable string shared with ``protocol/errors.py``."""

    code: str = "crypto_error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.code)
        self.detail = detail


class MalformedInput(KeysError):
    """Bytes that are not what they claim to be (bad JSON, bad base64url, ...)."""

    code = "malformed_input"


class TooLarge(MalformedInput):
    """An input exceeded a size cap; nothing was parsed or verified."""

    code = "payload_too_large"


class TooDeep(MalformedInput):
    """JSON nested deeper than the configured limit."""

    code = "too_deep"


class InvalidKey(KeysError):
    """Key material that is unusable or unsafe (wrong curve, private part in a public JWK...)."""

    code = "invalid_key"


class InsecureKeyFile(InvalidKey):
    """A private key file readable or writable by group or others."""

    code = "insecure_key_file"


class MalformedJws(KeysError):
    """A JWS that does not parse under the strict rules (RFC 7515 s3, s7)."""

    code = "malformed_jws"


class AlgorithmNotAllowed(KeysError):
    """``none``, HMAC, a deprecated or an unknown algorithm (RFC 8725 s3.1)."""

    code = "alg_not_allowed"


class AlgorithmMismatch(KeysError):
    """The header's ``alg`` is not the algorithm pinned to the key (RFC 8725 s3.1)."""

    code = "alg_mismatch"


class UnknownKeyId(KeysError):
    """``kid`` missing, malformed or not in the key set; never a file lookup (RFC 8725 s3.10)."""

    code = "unknown_kid"


class UntrustedKey(KeysError):
    """Key or certificate not anchored in configured trust (``x5c``, ``jwk``, ``jku``...)."""

    code = "untrusted_key"


class UnsupportedCrit(KeysError):
    """A ``crit`` header naming an extension we do not implement (RFC 7515 s4.1.11)."""

    code = "unsupported_crit"


class UnsupportedHeader(KeysError):
    """A header parameter outside the allow-list for this artifact."""

    code = "unsupported_header"


class WrongType(KeysError):
    """``typ`` is not the one this artifact must carry (RFC 8725 s3.11)."""

    code = "wrong_typ"


class BadSignature(KeysError):
    """The signature does not verify."""

    code = "bad_signature"


class InvalidEnvelope(KeysError):
    """A JWE that fails to parse or decrypt. One code and one message for every cause."""

    code = "invalid_envelope"


class CompressionNotAllowed(InvalidEnvelope):
    """``zip`` present: compression is refused outright (CVE-2024-28180 class)."""

    code = "compression_not_allowed"


class TokenExpired(KeysError):
    """``exp`` has passed (RFC 7519 s4.1.4)."""

    code = "expired"


class NotYetValid(KeysError):
    """``nbf`` or ``iat`` in the future beyond the leeway (RFC 7519 s4.1.5, s4.1.6)."""

    code = "not_yet_valid"


class BadAudience(KeysError):
    """``aud`` missing, not ours, or more than one audience."""

    code = "bad_audience"


class BadIssuer(KeysError):
    """``iss`` is not exactly the configured issuer."""

    code = "bad_issuer"


class IdentityMismatch(KeysError):
    """Two credentials name different identities, or a token is bound to another certificate."""

    code = "identity_mismatch"


class MalformedSignatureHeader(KeysError):
    """``Signature``/``Signature-Input`` do not parse (RFC 9421 s4, RFC 8941)."""

    code = "malformed_signature"


class SignatureMissing(KeysError):
    """No ``Signature``/``Signature-Input`` member under the label the policy requires."""

    code = "signature_missing"


class CoverageInsufficient(KeysError):
    """An RFC 9421 signature misses a component or parameter the policy requires."""

    code = "insufficient_coverage"


class DigestMismatch(KeysError):
    """``Content-Digest`` missing, malformed or not matching the body (RFC 9530)."""

    code = "digest_mismatch"


class CertificateRejected(KeysError):
    """An X.509 chain that does not validate or does not carry exactly one SPIFFE ID."""

    code = "certificate_rejected"
