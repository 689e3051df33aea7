"""protocol/errors.py: stable codes, statuses per security.md §1, keys/ translation, no leaks."""

from __future__ import annotations

import json
import re

import pytest

import keys.errors as keys_errors
from protocol import errors
from protocol.errors import (
    ERRORS_BY_CODE,
    AuthenticationFailed,
    BatonError,
    ConfigurationError,
    Conflict,
    CryptoError,
    Forbidden,
    HeadersTooLarge,
    IntegrityError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    from_keys_error,
    translating,
)


def _all_subclasses(cls: type[BatonError]) -> list[type[BatonError]]:
    found: list[type[BatonError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


#: Every class defined in protocol/errors.py (test modules may define others).
BATON_ERRORS: list[type[BatonError]] = [BatonError] + [
    cls for cls in _all_subclasses(BatonError) if cls.__module__ == "protocol.errors"
]

#: Every KeysError class defined in keys/errors.py, the base included.
KEYS_ERRORS = [
    obj
    for obj in vars(keys_errors).values()
    if isinstance(obj, type)
    and issubclass(obj, keys_errors.KeysError)
    and obj.__module__ == "keys.errors"
]

#: security.md §1 status table, by family root.
FAMILY_STATUS: list[tuple[type[BatonError], int]] = [
    (InvalidRequest, 400),
    (AuthenticationFailed, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (IntegrityError, 422),
    (RateLimited, 429),
    (HeadersTooLarge, 431),
    (ConfigurationError, 500),
    (CryptoError, 500),
    (Unavailable, 503),
    (errors.RequestTimeout, 408),
    (errors.BadGateway, 502),
    (errors.GatewayTimeout, 504),
    (errors.MethodNotAllowed, 405),
    (errors.MisdirectedRequest, 421),
]

#: Codes that audit events, metrics and clients key on. Never renamed.
STABLE_CODES = {
    "internal_error": 500,
    "invalid_request": 400,
    "malformed_input": 400,
    "too_deep": 400,
    "invalid_identity": 400,
    "invalid_artifact": 400,
    "invalid_envelope": 400,
    "compression_not_allowed": 400,
    "unauthenticated": 401,
    "malformed_jws": 401,
    "alg_not_allowed": 401,
    "alg_mismatch": 401,
    "unknown_kid": 401,
    "untrusted_key": 401,
    "unsupported_crit": 401,
    "unsupported_header": 401,
    "wrong_typ": 401,
    "bad_signature": 401,
    "expired": 401,
    "not_yet_valid": 401,
    "bad_audience": 401,
    "bad_issuer": 401,
    "identity_mismatch": 401,
    "signature_missing": 401,
    "malformed_signature": 401,
    "insufficient_coverage": 401,
    "digest_mismatch": 401,
    "certificate_rejected": 401,
    "stale": 401,
    "replay_detected": 401,
    "forbidden": 403,
    "policy_denied": 403,
    "not_participant": 403,
    "not_recipient": 403,
    "not_found": 404,
    "conflict": 409,
    "duplicate_bundle": 409,
    "stale_decision": 409,
    "out_of_order": 409,
    "chain_conflict": 409,
    "payload_too_large": 413,
    "headers_too_large": 431,
    "bundle_integrity": 422,
    "chain_break": 422,
    "head_mismatch": 422,
    "seq_violation": 422,
    "binding_mismatch": 422,
    "digest_invalid": 422,
    "rate_limited": 429,
    "unavailable": 503,
    "store_unavailable": 503,
    "audit_unavailable": 503,
    "invalid_config": 500,
    "invalid_key": 500,
    "insecure_key_file": 500,
    "crypto_error": 500,
    "header_mismatch": 400,
    "unsupported_version": 400,
    "unsafe_webhook": 400,
    "origin_rejected": 403,
    "session_not_found": 404,
    "task_not_found": 404,
    "method_not_allowed": 405,
    "misdirected_request": 421,
    "invalid_schema": 400,
    "response_invalid": 400,
    "oidc_failed": 401,
    "invalid_credentials": 401,
    "session_required": 401,
    "csrf_failed": 403,
}


# --------------------------------------------------------------------------- codes


def test_every_class_has_its_own_code() -> None:
    codes = [cls.code for cls in BATON_ERRORS]
    assert len(codes) == len(set(codes)), "two classes share a code"
    for cls in BATON_ERRORS:
        assert "code" in cls.__dict__, f"{cls.__name__} inherits its parent's code"
        assert ERRORS_BY_CODE[cls.code] is cls
        assert re.fullmatch(r"[a-z][a-z0-9_]*", cls.code), cls.code


def test_registry_holds_exactly_the_module_classes() -> None:
    from_module = {cls for cls in ERRORS_BY_CODE.values() if cls.__module__ == "protocol.errors"}
    assert from_module == set(BATON_ERRORS)


def test_every_exported_name_is_listed() -> None:
    exported = {name for name in errors.__all__ if isinstance(getattr(errors, name), type)}
    assert {cls.__name__ for cls in BATON_ERRORS} <= exported


@pytest.mark.parametrize(("code", "status"), sorted(STABLE_CODES.items()))
def test_stable_code_keeps_its_status(code: str, status: int) -> None:
    assert code in ERRORS_BY_CODE, f"code {code!r} was renamed or removed"
    assert ERRORS_BY_CODE[code].http_status == status


def test_a_second_class_with_an_existing_code_is_refused() -> None:
    before = dict(ERRORS_BY_CODE)
    with pytest.raises(TypeError, match="defined twice"):

        class Impostor(BatonError):  # pragma: no cover - creation fails
            code = "bad_signature"

    assert before == ERRORS_BY_CODE
    assert ERRORS_BY_CODE["bad_signature"] is errors.BadSignature


# --------------------------------------------------------------------------- statuses


@pytest.mark.parametrize("cls", BATON_ERRORS, ids=lambda c: c.__name__)
def test_status_follows_its_family(cls: type[BatonError]) -> None:
    families = [(root, status) for root, status in FAMILY_STATUS if issubclass(cls, root)]
    if cls is BatonError:
        assert cls.http_status == 500
        return
    assert len(families) == 1, f"{cls.__name__} is in {len(families)} families"
    assert cls.http_status == families[0][1]


def test_credential_failures_are_401_with_bearer_challenge() -> None:
    for cls in BATON_ERRORS:
        if issubclass(cls, AuthenticationFailed):
            assert cls.http_status == 401
            assert cls.www_authenticate == 'Bearer error="invalid_token"'
            assert cls.public_message == "authentication failed"


def test_handoff_threat_codes_match_the_catalogue() -> None:
    """security.md §1.5: H01 403 not_participant, H02-H05 422, H06 409."""
    expected = {
        "not_participant": (errors.NotParticipant, 403),
        "chain_break": (errors.ChainBreak, 422),
        "head_mismatch": (errors.HeadMismatch, 422),
        "seq_violation": (errors.SeqViolation, 422),
        "binding_mismatch": (errors.BindingMismatch, 422),
        "duplicate_bundle": (errors.DuplicateBundle, 409),
        "replay_detected": (errors.ReplayDetected, 401),
        "out_of_order": (errors.OutOfOrder, 409),
        "invalid_envelope": (errors.InvalidEnvelope, 400),
    }
    for code, (cls, status) in expected.items():
        assert cls.code == code
        assert cls.http_status == status


@pytest.mark.parametrize("cls", BATON_ERRORS, ids=lambda c: c.__name__)
def test_only_rate_limits_and_outages_are_retryable(cls: type[BatonError]) -> None:
    retryable = RateLimited | Unavailable | errors.BadGateway | errors.GatewayTimeout
    assert cls.retryable == issubclass(cls, retryable)


def test_retryable_statuses() -> None:
    assert RateLimited.http_status == 429 and RateLimited.retryable
    for cls in (Unavailable, errors.StoreUnavailable, errors.AuditUnavailable):
        assert cls.http_status == 503 and cls.retryable


def test_every_envelope_failure_has_one_public_body() -> None:
    bodies = {
        json.dumps(errors.InvalidEnvelope(detail).public(), sort_keys=True)
        for detail in ("bad tag", "no recipient entry", "epk not on curve", "")
    }
    assert bodies == {
        json.dumps(
            {"code": "invalid_envelope", "message": "invalid envelope", "retryable": False},
            sort_keys=True,
        )
    }


# --------------------------------------------------------------------------- public()


@pytest.mark.parametrize("cls", BATON_ERRORS, ids=lambda c: c.__name__)
def test_public_never_contains_the_detail(cls: type[BatonError]) -> None:
    secret = "internal-reason-Zq9 kid=abc token=eyJhbGciOi"
    error = cls(secret)
    body = error.public()
    assert set(body) == {"code", "message", "retryable"}
    assert body == {"code": cls.code, "message": cls.public_message, "retryable": cls.retryable}
    assert secret not in json.dumps(body)
    assert "Zq9" not in json.dumps(body)
    assert error.detail == secret
    assert secret in error.diagnostics()
    assert error.diagnostics().startswith(cls.code + ": ")


def test_public_carries_retry_after_when_given() -> None:
    error = RateLimited("bucket alpha empty", retry_after=2.5)
    assert error.public() == {
        "code": "rate_limited",
        "message": "rate limited",
        "retryable": True,
        "retry_after": 2.5,
    }
    assert error.retry_after == 2.5


def test_without_detail_the_code_is_the_message() -> None:
    error = errors.Stale()
    assert str(error) == "stale"
    assert error.diagnostics() == "stale"


# --------------------------------------------------------------------------- keys/ errors


def test_keys_error_classes_were_found() -> None:
    assert keys_errors.KeysError in KEYS_ERRORS
    assert len(KEYS_ERRORS) == len(keys_errors.__all__)


@pytest.mark.parametrize("cls", KEYS_ERRORS, ids=lambda c: c.__name__)
def test_every_keys_error_maps_to_the_class_with_its_code(
    cls: type[keys_errors.KeysError],
) -> None:
    translated = from_keys_error(cls("detail for the log"))
    assert isinstance(translated, BatonError)
    assert translated.code == cls.code
    assert type(translated) is ERRORS_BY_CODE[cls.code]
    assert type(translated) is not BatonError, f"{cls.code} has no class of its own"
    assert translated.detail == "detail for the log"


def test_mapped_families() -> None:
    assert isinstance(
        from_keys_error(keys_errors.CompressionNotAllowed("zip")), errors.InvalidEnvelope
    )
    assert type(from_keys_error(keys_errors.TooLarge("big"))) is PayloadTooLarge
    assert type(from_keys_error(keys_errors.MalformedSignatureHeader())) is (
        errors.MalformedSignature
    )
    assert type(from_keys_error(keys_errors.CoverageInsufficient())) is (
        errors.InsufficientCoverage
    )
    assert type(from_keys_error(keys_errors.KeysError())) is CryptoError


def test_unknown_keys_code_falls_back_to_internal_error() -> None:
    exc = keys_errors.KeysError("odd")
    exc.code = "no_such_code_anywhere"
    translated = from_keys_error(exc)
    assert type(translated) is BatonError
    assert translated.http_status == 500
    assert translated.detail == "odd"


def test_translating_converts_and_chains() -> None:
    original = keys_errors.BadSignature("sig over wrong bytes")
    with pytest.raises(errors.BadSignature) as info, translating():
        raise original
    assert info.value.__cause__ is original
    assert info.value.detail == "sig over wrong bytes"


def test_translating_leaves_other_exceptions_alone() -> None:
    with pytest.raises(ValueError, match="plain"), translating():
        raise ValueError("plain")
    with pytest.raises(errors.Stale), translating():
        raise errors.Stale("already a BatonError")


def test_translating_is_transparent_without_errors() -> None:
    with translating():
        value = 41 + 1
    assert value == 42
