"""RFC 9421 signatures and RFC 9530 digests (``keys/httpsig.py``).

Round trips for both key types, every rejection path of the profile (threats
R10-R13, X08), response signatures with ``;req``, and differential tests
against the maintained ``http-message-signatures`` library (test-only): our
signatures verify there, theirs verify here, and both compute the same
signature base.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    MappingKeyResolver,
    algorithms,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keys import httpsig
from keys.b64 import b64encode_std
from keys.errors import (
    AlgorithmMismatch,
    AlgorithmNotAllowed,
    BadSignature,
    CoverageInsufficient,
    DigestMismatch,
    InvalidKey,
    KeysError,
    MalformedSignatureHeader,
    SignatureMissing,
    TooLarge,
    UnknownKeyId,
)
from keys.httpsig import HttpRequest, HttpResponse, SignaturePolicy
from keys.keyset import KeySet
from keys.material import PrivateKey

DETERMINISTIC = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)

ED = PrivateKey.generate("Ed25519")
EC = PrivateKey.generate("ES256")
ENC = PrivateKey.generate("ECDH-ES+A256KW")
OTHER = PrivateKey.generate("Ed25519")
KEYS = KeySet([ED.public, EC.public, ENC.public])

BODY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}'
URI = "https://gw.example:8443/a2a/x?y=1"
FULL = ("@method", "@target-uri", "@authority", "content-digest", "mcp-method")
POLICY = SignaturePolicy(required_components=frozenset(FULL))


def request(
    *, body: bytes = BODY, extra: Sequence[tuple[str, str]] = (), uri: str = URI
) -> HttpRequest:
    headers = [
        ("Host", "gw.example:8443"),
        ("Content-Type", "application/json"),
        ("Content-Digest", httpsig.content_digest(body)),
        ("Mcp-Method", "tools/call"),
        *extra,
    ]
    return HttpRequest("POST", uri, headers)


def with_headers(message: Any, *lines: tuple[str, str]) -> Any:
    if isinstance(message, HttpResponse):
        return HttpResponse(message.status, [*message.headers, *lines], message.request)
    return HttpRequest(message.method, message.target_uri, [*message.headers, *lines])


def signed(
    message: Any, key: PrivateKey = ED, components: Sequence[str] = FULL, **kwargs: Any
) -> Any:
    kwargs.setdefault("created", 1_700_000_000)
    kwargs.setdefault("nonce", "nonce-1")
    sig_input, signature = httpsig.sign(message, key, components=components, **kwargs)
    return with_headers(message, ("Signature-Input", sig_input), ("Signature", signature))


def replace_header(message: HttpRequest, name: str, value: str) -> HttpRequest:
    headers = [(n, value if n.lower() == name else v) for n, v in message.headers]
    return HttpRequest(message.method, message.target_uri, headers)


def header(message: HttpRequest | HttpResponse, name: str) -> str:
    return next(v for n, v in message.headers if n.lower() == name)


def raw(sig_input: str, signature: str = "baton=:AAAA:", *, message: Any = None) -> Any:
    """A message carrying hand-written signature fields."""
    base = request() if message is None else message
    return with_headers(base, ("Signature-Input", sig_input), ("Signature", signature))


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize(("key", "alg"), [(ED, "ed25519"), (EC, "ecdsa-p256-sha256")])
def test_round_trip(key: PrivateKey, alg: str) -> None:
    message = signed(request(), key, tag="baton-req", expires=1_700_000_060)
    result = httpsig.verify(message, KEYS, POLICY, body=BODY)
    assert result.label == "baton"
    assert result.keyid == key.kid
    assert result.key == key.public
    assert result.alg == alg
    assert (result.created, result.expires) == (1_700_000_000, 1_700_000_060)
    assert (result.nonce, result.tag) == ("nonce-1", "baton-req")
    assert result.covered == FULL


def test_sign_output_format() -> None:
    sig_input, signature = httpsig.sign(
        request(), ED, components=["@method", "@authority"], created=5, nonce="n", keyid="k"
    )
    assert sig_input == 'baton=("@method" "@authority");created=5;keyid="k";nonce="n";alg="ed25519"'
    assert signature.startswith("baton=:") and signature.endswith(":")
    no_alg, _ = httpsig.sign(
        request(), EC, components=["@method"], created=5, nonce=None, include_alg=False, label="x"
    )
    assert no_alg == f'x=("@method");created=5;keyid="{EC.kid}"'


def test_verify_without_body_and_without_digest() -> None:
    message = HttpRequest("GET", "https://gw.example/x", [("Host", "gw.example")])
    sig = signed(message, components=("@method", "@target-uri", "@authority"))
    policy = SignaturePolicy()
    assert httpsig.verify(sig, KEYS, policy, body=None).covered[0] == "@method"
    assert httpsig.verify(sig, KEYS, policy, body=b"").nonce == "nonce-1"


def test_verify_reads_no_clock() -> None:
    """Freshness is checked elsewhere: ancient and far-future timestamps verify here."""
    for created in (0, 1, 999_999_999_999_999):
        message = signed(request(), created=created, expires=created)
        assert httpsig.verify(message, KEYS, POLICY, body=BODY).created == created


# ---------------------------------------------------------------- R10 coverage


def test_r10_required_component_missing() -> None:
    message = signed(request(), components=("@method", "@authority", "content-digest"))
    with pytest.raises(CoverageInsufficient):
        httpsig.verify(message, KEYS, POLICY, body=BODY)


def test_r10_empty_component_list_rejected_whatever_the_policy() -> None:
    message = signed(request(body=b""), components=())
    lax = SignaturePolicy(required_components=frozenset(), require_digest_with_body=False)
    with pytest.raises(CoverageInsufficient):
        httpsig.verify(message, KEYS, lax, body=b"")


@pytest.mark.parametrize("missing", ["nonce", "created", "keyid"])
def test_r10_required_parameter_missing(missing: str) -> None:
    message = signed(request())
    sig_input = header(message, "signature-input")
    value = {"nonce": '"nonce-1"', "created": "1700000000", "keyid": f'"{ED.kid}"'}[missing]
    stripped = sig_input.replace(f";{missing}={value}", "")
    assert stripped != sig_input
    with pytest.raises(CoverageInsufficient):
        httpsig.verify(raw(stripped, header(message, "signature")), KEYS, POLICY, body=BODY)


def test_r10_missing_keyid_when_not_required_is_an_unknown_key() -> None:
    message = signed(request())
    sig_input = header(message, "signature-input").replace(f';keyid="{ED.kid}"', "")
    policy = SignaturePolicy(required_components=frozenset(FULL), required_params=frozenset())
    with pytest.raises(UnknownKeyId):
        httpsig.verify(raw(sig_input, header(message, "signature")), KEYS, policy, body=BODY)


# ---------------------------------------------------------------- R11 body and digest


def test_r11_body_changed_digest_kept() -> None:
    message = signed(request())
    with pytest.raises(DigestMismatch):
        httpsig.verify(message, KEYS, POLICY, body=BODY + b" ")


def test_r11_digest_recomputed_but_signed_digest_differs() -> None:
    message = signed(request())
    tampered = replace_header(message, "content-digest", httpsig.content_digest(b"evil"))
    with pytest.raises(BadSignature):
        httpsig.verify(tampered, KEYS, POLICY, body=b"evil")


def test_r11_digest_recomputed_but_not_covered() -> None:
    components = ("@method", "@target-uri", "@authority", "mcp-method")
    message = signed(request(), components=components)
    tampered = replace_header(message, "content-digest", httpsig.content_digest(b"evil"))
    policy = SignaturePolicy(required_components=frozenset(components))
    with pytest.raises(CoverageInsufficient):
        httpsig.verify(tampered, KEYS, policy, body=b"evil")


def test_body_with_uncovered_digest_when_policy_allows() -> None:
    """``require_digest_with_body=False``: the digest is still checked when present,
    and a body without any digest fails."""
    components = ("@method", "@target-uri", "@authority")
    policy = SignaturePolicy(require_digest_with_body=False)
    message = signed(request(), components=components)
    assert httpsig.verify(message, KEYS, policy, body=BODY).covered == components
    with pytest.raises(DigestMismatch):
        httpsig.verify(message, KEYS, policy, body=b"other")
    bare = HttpRequest("POST", URI, [("Host", "gw.example:8443")])
    with pytest.raises(DigestMismatch):
        httpsig.verify(signed(bare, components=components), KEYS, policy, body=BODY)


def test_covered_digest_checked_even_without_body() -> None:
    message = signed(request())
    with pytest.raises(DigestMismatch):
        httpsig.verify(message, KEYS, POLICY, body=None)
    empty = signed(request(body=b""))
    assert httpsig.verify(empty, KEYS, POLICY, body=None).covered == FULL


# ---------------------------------------------------------------- R12 labels


def test_r12_extra_label_ignored() -> None:
    good = signed(request())
    sig_input = 'evil=("@method");created=1;keyid="nobody";alg="hmac-sha256", ' + header(
        good, "signature-input"
    )
    signature = header(good, "signature") + ", evil=:AAAA:"
    result = httpsig.verify(raw(sig_input, signature), KEYS, POLICY, body=BODY)
    assert result.label == "baton" and result.keyid == ED.kid


def test_r12_other_labels_need_not_be_inner_lists_but_must_parse() -> None:
    good = signed(request())
    sig_input = header(good, "signature-input") + ", odd=1;x, flag"
    signature = header(good, "signature") + ", odd=?1"
    assert httpsig.verify(raw(sig_input, signature), KEYS, POLICY, body=BODY).label == "baton"
    with pytest.raises(MalformedSignatureHeader):
        httpsig.verify(raw(sig_input + ", bad=(", signature), KEYS, POLICY, body=BODY)


def test_r12_unknown_label_never_trusted() -> None:
    """A valid signature under another label does not satisfy the policy."""
    message = signed(request(), label="evil")
    with pytest.raises(SignatureMissing):
        httpsig.verify(message, KEYS, POLICY, body=BODY)


def test_r12_label_in_only_one_field() -> None:
    good = signed(request())
    with pytest.raises(SignatureMissing):
        httpsig.verify(
            raw(header(good, "signature-input"), "other=:AAAA:"), KEYS, POLICY, body=BODY
        )
    with pytest.raises(SignatureMissing):
        httpsig.verify(raw('other=("@method")', header(good, "signature")), KEYS, POLICY, body=BODY)


def test_wrong_label_and_absent_fields() -> None:
    message = signed(request())
    with pytest.raises(SignatureMissing):
        httpsig.verify(
            message,
            KEYS,
            SignaturePolicy(label="other", required_components=frozenset(FULL)),
            body=BODY,
        )
    with pytest.raises(SignatureMissing):
        httpsig.verify(request(), KEYS, POLICY, body=BODY)
    only_input = with_headers(request(), ("Signature-Input", header(message, "signature-input")))
    with pytest.raises(SignatureMissing):
        httpsig.verify(only_input, KEYS, POLICY, body=BODY)
    with pytest.raises(SignatureMissing):
        httpsig.verify(raw("", ""), KEYS, POLICY, body=BODY)


def test_signature_fields_across_several_lines() -> None:
    """Field lines are combined with ", " (RFC 8941 s4.2, RFC 9110 s5.3)."""
    good = signed(request())
    message = with_headers(
        request(),
        ("Signature-Input", 'a=("@method")'),
        ("signature", "a=:AAAA:"),
        ("SIGNATURE-INPUT", header(good, "signature-input")),
        ("Signature", header(good, "signature")),
    )
    assert httpsig.verify(message, KEYS, POLICY, body=BODY).label == "baton"


# ---------------------------------------------------------------- R13 algorithms and keys


@pytest.mark.parametrize(
    ("key", "claimed"),
    [
        (ED, "hmac-sha256"),
        (ED, "ecdsa-p256-sha256"),
        (EC, "ed25519"),
        (EC, "rsa-pss-sha512"),
        (ED, "ED25519"),
    ],
)
def test_r13_alg_mismatch(key: PrivateKey, claimed: str) -> None:
    message = signed(request(), key)
    sig_input = header(message, "signature-input").replace(
        f'alg="{key.public.httpsig_alg}"', f'alg="{claimed}"'
    )
    with pytest.raises(AlgorithmMismatch):
        httpsig.verify(raw(sig_input, header(message, "signature")), KEYS, POLICY, body=BODY)


def test_alg_parameter_optional() -> None:
    message = signed(request(), EC, include_alg=False)
    assert httpsig.verify(message, KEYS, POLICY, body=BODY).alg == "ecdsa-p256-sha256"


def test_unknown_keyid() -> None:
    with pytest.raises(UnknownKeyId):
        httpsig.verify(signed(request(), OTHER), KEYS, POLICY, body=BODY)
    with pytest.raises(UnknownKeyId):
        httpsig.verify(signed(request(), ED, keyid="x" * 200), KEYS, POLICY, body=BODY)


def test_keyid_of_an_encryption_key() -> None:
    message = signed(request(), ED, keyid=ENC.kid)
    with pytest.raises(UnknownKeyId):
        httpsig.verify(message, KEYS, POLICY, body=BODY)


def test_signature_from_another_key_with_a_known_keyid() -> None:
    message = signed(request(), OTHER, keyid=ED.kid)
    with pytest.raises(BadSignature):
        httpsig.verify(message, KEYS, POLICY, body=BODY)


# ---------------------------------------------------------------- tampering


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: HttpRequest("PUT", m.target_uri, m.headers),
        lambda m: HttpRequest(m.method, m.target_uri.replace("/x?", "/y?"), m.headers),
        lambda m: HttpRequest(m.method, m.target_uri.replace("gw.", "gx."), m.headers),
        lambda m: replace_header(m, "mcp-method", "tools/list"),
        lambda m: with_headers(m, ("Mcp-Method", "tools/list")),
    ],
)
def test_tampered_covered_component(tamper: Any) -> None:
    with pytest.raises(BadSignature):
        httpsig.verify(tamper(signed(request())), KEYS, POLICY, body=BODY)


def test_uncovered_changes_are_allowed() -> None:
    message = with_headers(signed(request()), ("Accept-Language", "en"))
    assert httpsig.verify(message, KEYS, POLICY, body=BODY).label == "baton"


def test_tampered_signature_bytes() -> None:
    message = signed(request())
    signature = header(message, "signature")
    for bad in ["baton=:" + b64encode_std(b"\0" * 64) + ":", "baton=:" + b64encode_std(b"x") + ":"]:
        with pytest.raises(BadSignature):
            httpsig.verify(raw(header(message, "signature-input"), bad), KEYS, POLICY, body=BODY)
    assert signature.startswith("baton=:")


def test_non_canonical_parameter_serialisation_still_verifies() -> None:
    """The @signature-params line is the canonical serialisation of what was parsed
    (RFC 9421 s2.3), so extra SP inside the inner list does not matter."""
    message = signed(request())
    spaced = header(message, "signature-input").replace("(", "(  ").replace(")", " )")
    result = httpsig.verify(raw(spaced, header(message, "signature")), KEYS, POLICY, body=BODY)
    assert result.covered == FULL


# ---------------------------------------------------------------- profile limits


@pytest.mark.parametrize(
    "inner",
    [
        '("@method" "content-type";sf)',
        '("@method" "accept";key="a")',
        '("@method" "accept";bs)',
        '("@method" "accept";tr)',
        '("@method" "@query-param";name="y")',
        '("@method";req)',  # req on a request
        '("@method" "@status")',  # status on a request
        '("@method" "@foo")',
        '("@method" "@signature-params")',
        '("@method" "Content-Type")',  # field names are lowercase
        '("@method" "content type")',
        '("@method" "")',
        "(@method)",  # a token, not a string
        '("@method" 1)',
        '("@method" "@method")',  # duplicate
        '("@method" "@path";req=?0)',
        '("@method";req=?1)',
    ],
)
def test_unsupported_components(inner: str) -> None:
    sig_input = f'baton={inner};created=1;keyid="{ED.kid}";nonce="n"'
    policy = SignaturePolicy(
        required_components=frozenset({"@method"}), require_digest_with_body=False
    )
    with pytest.raises(MalformedSignatureHeader):
        httpsig.verify(raw(sig_input), KEYS, policy, body=None)


@pytest.mark.parametrize(
    "params",
    [
        ";created=1;keyid=k",  # token where a string is required
        ';created="1";keyid="k"',
        ';created=1.5;keyid="k"',
        ';created;keyid="k"',
        ';created=-1;keyid="k"',
        ';created=1;keyid="k";nonce=""',
        ';created=1;keyid="k";foo="bar"',
        ';created=1;keyid="k";created=2',
        ";created=1;keyid=:AAAA:",
        ';created=1;keyid="k";alg=ed25519',
    ],
)
def test_bad_signature_parameters(params: str) -> None:
    policy = SignaturePolicy(
        required_components=frozenset({"@method"}), required_params=frozenset()
    )
    with pytest.raises(MalformedSignatureHeader):
        httpsig.verify(raw(f'baton=("@method"){params}'), KEYS, policy, body=b"")


@pytest.mark.parametrize(
    ("sig_input", "signature"),
    [
        ('baton="@method"', "baton=:AAAA:"),  # not an inner list
        ('baton=("@method");created=1;keyid="k"', 'baton="AAAA"'),
        ('baton=("@method");created=1;keyid="k"', "baton=:AAAA:;x=1"),
        ('baton=("@method");created=1;keyid="k"', "baton=(:AAAA:)"),
        ('baton=("@method");created=1;keyid="k"', "baton=:AAA*:"),
        ('baton=("@method");created=1;keyid="k", baton=("@path")', "baton=:AAAA:"),
        ('baton=("@method");created=1;keyid="k"', "baton=:AAAA:, baton=:AAAA:"),
        ('baton=("@method");created=1;keyid="k",', "baton=:AAAA:"),
        ('baton=("@method");created=1;keyid="k\u00e9"', "baton=:AAAA:"),
    ],
)
def test_malformed_fields(sig_input: str, signature: str) -> None:
    with pytest.raises(MalformedSignatureHeader):
        httpsig.verify(raw(sig_input, signature), KEYS, POLICY, body=BODY)


def test_missing_covered_field() -> None:
    message = signed(request(extra=[("X-Trace", "1")]), components=(*FULL, "x-trace"))
    stripped = HttpRequest(
        message.method, message.target_uri, [h for h in message.headers if h[0] != "X-Trace"]
    )
    with pytest.raises(MalformedSignatureHeader):
        httpsig.verify(stripped, KEYS, POLICY, body=BODY)
    with pytest.raises(MalformedSignatureHeader):
        httpsig.sign(request(), ED, components=("x-absent",), created=1, nonce="n")


@pytest.mark.parametrize(
    "value", ["caf\u00e9", "a\r\nb", "a\nb", "a\rb", "a\x00b", "a\x7fb", "\x1b[0m"]
)
def test_unsafe_field_values(value: str) -> None:
    """The signature base must be ASCII without CR/LF or controls (RFC 9421 s2.5)."""
    message = request(extra=[("X-Note", value)])
    with pytest.raises(MalformedSignatureHeader):
        httpsig.sign(message, ED, components=("x-note",), created=1, nonce="n")
    good = signed(request(extra=[("X-Note", "fine")]), components=(*FULL, "x-note"))
    with pytest.raises(MalformedSignatureHeader):
        httpsig.verify(replace_header(good, "x-note", value), KEYS, POLICY, body=BODY)


def test_field_value_normalisation() -> None:
    """RFC 9421 s2.1: strip each line, join lines with ", "; internal HTAB is kept."""
    message = request(
        extra=[("Accept", " \ta/b\t "), ("X-T", "a\tb"), ("accept", "c/d"), ("X-E", "")]
    )
    params = '("accept" "x-t" "x-e");created=1'
    base = httpsig.signature_base(message, ["accept", "x-t", "x-e"], params)
    assert base == (
        b'"accept": a/b, c/d\n"x-t": a\tb\n"x-e": \n"@signature-params": ' + params.encode()
    )
    signed_message = signed(message, components=(*FULL, "accept", "x-t", "x-e"))
    assert httpsig.verify(signed_message, KEYS, POLICY, body=BODY).covered[-1] == "x-e"


def test_non_ascii_header_names_are_ignored() -> None:
    # "\u212a" (Kelvin sign) lowercases to ASCII "k": it must not alias a field.
    message = request(extra=[("\u212aey", "x")])
    with pytest.raises(MalformedSignatureHeader):
        httpsig.sign(message, ED, components=("key",), created=1, nonce="n")


# ---------------------------------------------------------------- X08 caps


def test_oversized_fields() -> None:
    good = signed(request())
    padding = ", " + ", ".join(f"p{i}=1" for i in range(2000))
    with pytest.raises(TooLarge):
        httpsig.verify(
            raw(header(good, "signature-input") + padding, header(good, "signature")),
            KEYS,
            POLICY,
            body=BODY,
        )
    with pytest.raises(TooLarge):
        httpsig.verify(
            raw(header(good, "signature-input"), "baton=:" + "A" * 9000 + ":"),
            KEYS,
            POLICY,
            body=BODY,
        )
    small = SignaturePolicy(required_components=frozenset(FULL), max_field_bytes=64)
    with pytest.raises(TooLarge):
        httpsig.verify(good, KEYS, small, body=BODY)


def test_too_many_labels() -> None:
    good = signed(request())
    others = ", ".join(f'l{i}=("@method")' for i in range(8))
    sig_input = header(good, "signature-input") + ", " + others
    with pytest.raises(TooLarge):
        httpsig.verify(raw(sig_input, header(good, "signature")), KEYS, POLICY, body=BODY)
    signature = header(good, "signature") + ", " + ", ".join(f"l{i}=:AAAA:" for i in range(8))
    with pytest.raises(TooLarge):
        httpsig.verify(raw(header(good, "signature-input"), signature), KEYS, POLICY, body=BODY)
    seven = ", ".join(f'l{i}=("@method")' for i in range(7))
    message = raw(header(good, "signature-input") + ", " + seven, header(good, "signature"))
    assert httpsig.verify(message, KEYS, POLICY, body=BODY).label == "baton"


def test_too_many_components() -> None:
    names = [f"x-{i}" for i in range(33)]
    inner = "(" + " ".join(f'"{n}"' for n in names) + ")"
    with pytest.raises(TooLarge):
        httpsig.verify(raw(f'baton={inner};created=1;keyid="k";nonce="n"'), KEYS, POLICY, body=BODY)
    spaced = "( " + "  ".join(f'"{n}"' for n in names) + ")"  # the general parser path
    with pytest.raises(TooLarge):
        httpsig.verify(raw(f'baton={spaced};created=1;keyid="k"'), KEYS, POLICY, body=BODY)


# ---------------------------------------------------------------- responses and ;req


def response(req: HttpRequest | None, body: bytes = b'{"ok":true}') -> HttpResponse:
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Digest", httpsig.content_digest(body)),
    ]
    return HttpResponse(200, headers, req)


RESPONSE_COMPONENTS = (
    "@status",
    "content-digest",
    "@method;req",
    "@target-uri;req",
    "mcp-method;req",
    "content-digest;req",
)


def test_response_signature_with_req() -> None:
    body = b'{"ok":true}'
    message = signed(response(request(), body), EC, components=RESPONSE_COMPONENTS)
    assert header(message, "signature-input").startswith(
        'baton=("@status" "content-digest" "@method";req "@target-uri";req "mcp-method";req '
        '"content-digest";req);'
    )
    policy = SignaturePolicy(
        required_components=frozenset(
            {"@status", "content-digest", "@method;req", "@target-uri;req"}
        )
    )
    result = httpsig.verify(message, KEYS, policy, body=body)
    assert result.covered == RESPONSE_COMPONENTS
    base = httpsig.signature_base(
        message, RESPONSE_COMPONENTS, header(message, "signature-input").split("=", 1)[1]
    )
    assert b'\n"@method";req: POST\n"@target-uri";req: ' + URI.encode() + b"\n" in base
    assert base.startswith(b'"@status": 200\n')


def test_response_req_components_bind_the_request() -> None:
    message = signed(response(request()), components=RESPONSE_COMPONENTS)
    other_request = HttpResponse(message.status, message.headers, request(uri=URI + "&z=2"))
    policy = SignaturePolicy(required_components=frozenset({"@status"}))
    with pytest.raises(BadSignature):
        httpsig.verify(other_request, KEYS, policy, body=b'{"ok":true}')
    orphan = HttpResponse(message.status, message.headers, None)
    with pytest.raises(MalformedSignatureHeader):
        httpsig.verify(orphan, KEYS, policy, body=b'{"ok":true}')


def test_req_coverage_of_request_digest_does_not_cover_the_response_body() -> None:
    components = ("@status", "content-digest;req", "@method;req")
    message = signed(response(request()), components=components)
    policy = SignaturePolicy(required_components=frozenset({"@status"}))
    with pytest.raises(CoverageInsufficient):
        httpsig.verify(message, KEYS, policy, body=b'{"ok":true}')


@pytest.mark.parametrize(
    "components",
    [("@method",), ("@status;req",), ("@path",), ("@status", "@status")],
)
def test_response_component_rules(components: tuple[str, ...]) -> None:
    with pytest.raises(MalformedSignatureHeader):
        httpsig.sign(response(request()), ED, components=components, created=1, nonce="n")


@pytest.mark.parametrize("status", [99, 1000, -1])
def test_response_status_must_be_three_digits(status: int) -> None:
    with pytest.raises(MalformedSignatureHeader):
        httpsig.sign(HttpResponse(status, []), ED, components=("@status",), created=1, nonce="n")


# ---------------------------------------------------------------- derived components


def base_lines(message: HttpRequest, *components: str) -> dict[str, str]:
    params = "(" + " ".join(f'"{c}"' for c in components) + ");created=1"
    base = httpsig.signature_base(message, components, params).decode()
    return dict(line.split(": ", 1) for line in base.split("\n")[:-1])


@pytest.mark.parametrize(
    ("method", "uri", "expected"),
    [
        (
            "POST",
            "https://Gw.Example:443/a%2Fb/c?x=1&y=%20",
            {
                "@method": "POST",
                "@target-uri": "https://Gw.Example:443/a%2Fb/c?x=1&y=%20",
                "@authority": "gw.example",
                "@scheme": "https",
                "@request-target": "/a%2Fb/c?x=1&y=%20",
                "@path": "/a%2Fb/c",
                "@query": "?x=1&y=%20",
            },
        ),
        (
            "get",
            "HTTP://h.example:8080",
            {
                "@method": "get",
                "@target-uri": "HTTP://h.example:8080/",
                "@authority": "h.example:8080",
                "@scheme": "http",
                "@request-target": "/",
                "@path": "/",
                "@query": "?",
            },
        ),
        (
            "GET",
            "http://h:080/p?",
            {
                "@authority": "h",
                "@target-uri": "http://h:080/p?",
                "@query": "?",
                "@request-target": "/p?",
            },
        ),
        (
            "OPTIONS",
            "https://h",
            {"@request-target": "*", "@target-uri": "https://h", "@path": "/"},
        ),
        ("OPTIONS", "https://h/", {"@request-target": "/", "@target-uri": "https://h/"}),
        ("CONNECT", "https://h:8443", {"@request-target": "h:8443", "@authority": "h:8443"}),
        ("GET", "https://[2001:DB8::1]:443/", {"@authority": "[2001:db8::1]"}),
        ("GET", "https://h:/", {"@authority": "h", "@target-uri": "https://h:/"}),
    ],
)
def test_derived_components(method: str, uri: str, expected: dict[str, str]) -> None:
    """RFC 9421 s2.2.1-2.2.7."""
    message = HttpRequest(method, uri, [])
    lines = base_lines(message, *expected)
    assert lines == {f'"{name}"': value for name, value in expected.items()}


@pytest.mark.parametrize(
    ("method", "uri"),
    [
        ("GET", "ftp://h/x"),
        ("GET", "https://user@h/x"),
        ("GET", "https://h/x#frag"),
        ("GET", "//h/x"),
        ("GET", "/x"),
        ("GET", "https://h/x y"),
        ("GET", "https://h/caf\u00e9"),
        ("GET", "https://[zz::1]/"),
        ("GET", "https:///x"),
        ("GE T", "https://h/x"),
        ("G\u00c9T", "https://h/x"),
        ("", "https://h/x"),
    ],
)
def test_bad_request_lines_rejected(method: str, uri: str) -> None:
    message = HttpRequest(method, uri, [])
    with pytest.raises(MalformedSignatureHeader):
        httpsig.sign(message, ED, components=("@method", "@path"), created=1, nonce="n")


def test_signature_base_components_must_match_params() -> None:
    message = request()
    httpsig.signature_base(message, ["@method"], '("@method");created=1')
    for components, params in [
        (["@path"], '("@method");created=1'),
        (["@method", "@path"], '("@path" "@method");created=1'),
        (["@method"], '("@method");created=1;bogus=1'),
        (["@method"], '("@method")garbage'),
        ("@method", '("@method")'),
    ]:
        with pytest.raises(MalformedSignatureHeader):
            httpsig.signature_base(message, components, params)


# ---------------------------------------------------------------- Content-Digest (RFC 9530)


def test_content_digest_values() -> None:
    """RFC 9530 Appendix B.1 and B.2 values for {"hello": "world"}."""
    body = b'{"hello": "world"}'
    assert httpsig.content_digest(body) == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    assert httpsig.content_digest(body, "sha-512") == (
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:"
    )
    with pytest.raises(AlgorithmNotAllowed):
        httpsig.content_digest(body, "md5")


def test_check_content_digest() -> None:
    body = b"payload"
    s256 = httpsig.content_digest(body)
    s512 = httpsig.content_digest(body, "sha-512")
    httpsig.check_content_digest(s256, body)
    httpsig.check_content_digest(f"{s512}, {s256}", body)
    httpsig.check_content_digest(f"md5=:AAAA:, unixsum=12, {s256}", body)  # unknown ignored
    unpadded = s256.replace("=:", ":").replace("sha-256:", "sha-256=:")
    httpsig.check_content_digest(unpadded, body)
    wrong = httpsig.content_digest(b"other", "sha-512")
    for bad in [
        "md5=:AAAA:",  # nothing we recognise
        "",
        f"{s256}, {wrong}",  # every recognised digest must match
        s256.replace(":", '"'),
        "sha-256=1",
        f"{s256}, {s256}",  # duplicate key
        "sha-256=:" + "A" * 9000 + ":",
        "sha-256=:AAAA",
        f"sha-256=:{b64encode_std(hashlib.sha256(body).digest()[:31])}:",
    ]:
        with pytest.raises(DigestMismatch):
            httpsig.check_content_digest(bad, body)


# ---------------------------------------------------------------- signing inputs


def test_sign_rejects_bad_inputs() -> None:
    message = request()
    with pytest.raises(InvalidKey):
        httpsig.sign(message, ENC, components=("@method",), created=1, nonce="n")
    bad_calls: list[dict[str, Any]] = [
        {"label": "Baton"},
        {"label": ""},
        {"nonce": "line\nbreak"},
        {"nonce": ""},
        {"keyid": "caf\u00e9"},
        {"tag": "\x00"},
        {"created": -1},
        {"created": 10**15},
        {"expires": -5},
        {"components": ("@method", "@method")},
        {"components": "@method"},
        {"components": ("@method;sf",)},
        {"components": ("@method;req;req",)},
    ]
    for extra in bad_calls:
        kwargs: dict[str, Any] = {"components": ("@method",), "created": 1, "nonce": "n", **extra}
        with pytest.raises(MalformedSignatureHeader):
            httpsig.sign(message, ED, **kwargs)


def test_policy_validation() -> None:
    cases: list[dict[str, Any]] = [
        {"label": "Bad"},
        {"required_params": frozenset({"exp"})},
        {"required_components": frozenset({"@query-param"})},
        {"required_components": frozenset({"@method;sf"})},
        {"required_components": frozenset({"Host"})},
        {"max_labels": 0},
    ]
    for kwargs in cases:
        with pytest.raises(ValueError):
            SignaturePolicy(**kwargs)


# ---------------------------------------------------------------- robustness


@DETERMINISTIC
@given(
    position=st.integers(0, 400),
    char=st.sampled_from(list(' \t,;=()":?*-.1aZ\\/@%\x00\u00e9')),
    field=st.sampled_from(["signature-input", "signature"]),
    op=st.sampled_from(["insert", "delete", "replace"]),
)
def test_mutated_fields_raise_only_keys_errors(
    position: int, char: str, field: str, op: str
) -> None:
    """Whatever the damage, verify raises a KeysError (never ValueError, KeyError...)."""
    good = signed(request())
    values = {
        "signature-input": header(good, "signature-input"),
        "signature": header(good, "signature"),
    }
    text = values[field]
    pos = position % (len(text) + 1)
    if op == "insert":
        text = text[:pos] + char + text[pos:]
    elif op == "delete":
        text = text[:pos] + text[pos + 1 :]
    else:
        text = text[:pos] + char + text[pos + 1 :]
    values[field] = text
    with contextlib.suppress(KeysError):  # anything else fails the test
        httpsig.verify(raw(values["signature-input"], values["signature"]), KEYS, POLICY, body=BODY)


# ---------------------------------------------------------------- differential tests


class LibHeaders:
    """A requests-like header container that keeps repeated field lines."""

    def __init__(self, lines: Sequence[tuple[str, str]]) -> None:
        self.lines = list(lines)

    def items(self) -> list[tuple[str, str]]:
        return list(self.lines)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self.lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n.lower() == name.lower() for n, _ in self.lines)

    def __setitem__(self, name: str, value: str) -> None:
        del self[name]
        self.lines.append((name, value))

    def __delitem__(self, name: str) -> None:
        self.lines = [(n, v) for n, v in self.lines if n.lower() != name.lower()]


class LibRequest:
    def __init__(self, message: HttpRequest) -> None:
        self.method = message.method
        self.url = message.target_uri
        self.headers = LibHeaders(message.headers)


class LibResponse:
    def __init__(self, message: HttpResponse) -> None:
        assert message.request is not None
        self.status_code = message.status
        self.headers = LibHeaders(message.headers)
        self.request = LibRequest(message.request)


class NoClockVerifier(HTTPMessageVerifier):
    """Freshness is not what we compare (and the library reads the real clock)."""

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


LIB_ALGS = {"Ed25519": algorithms.ED25519, "ES256": algorithms.ECDSA_P256_SHA256}
RESOLVER = MappingKeyResolver(
    public_keys={k.kid: k.public.crypto_key for k in (ED, EC)},
    private_keys={k.kid: k.crypto_key for k in (ED, EC)},
)


def lib_signer(key: PrivateKey) -> HTTPMessageSigner:
    return HTTPMessageSigner(signature_algorithm=LIB_ALGS[key.alg], key_resolver=RESOLVER)


def lib_verifier(key: PrivateKey) -> NoClockVerifier:
    return NoClockVerifier(signature_algorithm=LIB_ALGS[key.alg], key_resolver=RESOLVER)


def lib_id(plain: str) -> str:
    """Plain form -> the library's component id syntax."""
    name, _, flag = plain.partition(";")
    return f'"{name}";req' if flag else name


REQUEST_DERIVED = [
    "@method",
    "@target-uri",
    "@authority",
    "@scheme",
    "@request-target",
    "@path",
    "@query",
]
FIELD_NAMES = ["Accept", "X-Custom", "Mcp-Method", "Content-Type", "X-Empty", "Date", "A2A-Version"]
UNRESERVED = r"A-Za-z0-9._~!$&'()*+,;=:@\-"
VALUE_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just("\t")


@st.composite
def http_requests(draw: st.DrawFn) -> HttpRequest:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    scheme = draw(st.sampled_from(["https", "http", "HTTPS"]))
    host = draw(
        st.from_regex(
            r"[A-Za-z0-9]([A-Za-z0-9-]{0,6}[A-Za-z0-9])?(\.[A-Za-z]{2,4}){0,2}", fullmatch=True
        )
    )
    port = draw(st.sampled_from(["", ":", ":80", ":443", ":8443", ":0443", ":1"]))
    path = draw(st.from_regex(rf"(/([{UNRESERVED}]|%[0-9A-F]{{2}}){{0,6}}){{0,3}}", fullmatch=True))
    query = draw(
        st.one_of(
            st.just(""),
            st.from_regex(rf"\?([{UNRESERVED}/?]|%[0-9A-F]{{2}}){{0,10}}", fullmatch=True),
        )
    )
    headers = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(FIELD_NAMES))
        name = "".join(c.upper() if draw(st.booleans()) else c.lower() for c in name)
        headers.append((name, draw(st.text(VALUE_CHARS, max_size=16))))
    return HttpRequest(method, f"{scheme}://{host}{port}{path}{query}", headers)


@st.composite
def covered_components(draw: st.DrawFn, message: HttpRequest) -> list[str]:
    names = sorted({n.lower() for n, _ in message.headers})
    candidates = REQUEST_DERIVED + names
    path_empty = message.target_uri.split("://", 1)[1].find("/") == -1
    if message.method == "OPTIONS" and path_empty:
        # Divergence: RFC 9112 s3.2.4 asterisk-form gives "*"; the library says "/".
        candidates.remove("@request-target")
    chosen = draw(st.permutations(candidates))
    return list(chosen[: draw(st.integers(1, len(chosen)))])


@st.composite
def signing_cases(draw: st.DrawFn) -> tuple[HttpRequest, list[str], PrivateKey, dict[str, Any]]:
    message = draw(http_requests())
    components = draw(covered_components(message))
    key = draw(st.sampled_from([ED, EC]))
    token = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)
    options = {
        "created": draw(st.integers(0, 2_000_000_000)),
        "nonce": draw(st.one_of(st.none(), token)),
        "tag": draw(st.one_of(st.none(), token)),
        "expires": draw(st.one_of(st.none(), st.integers(1, 2_000_000_000))),
        "include_alg": draw(st.booleans()),
    }
    return message, components, key, options


def _lib_options(options: dict[str, Any]) -> dict[str, Any]:
    utc = datetime.UTC
    out = dict(options)
    out["created"] = datetime.datetime.fromtimestamp(options["created"], tz=utc)
    if options["expires"] is not None:
        out["expires"] = datetime.datetime.fromtimestamp(options["expires"], tz=utc)
    return out


@DETERMINISTIC
@given(signing_cases())
def test_differential_ours_signs_library_verifies(
    case: tuple[HttpRequest, list[str], PrivateKey, dict[str, Any]],
) -> None:
    message, components, key, options = case
    signed_message = signed(message, key, components, **options)
    results = lib_verifier(key).verify(LibRequest(signed_message))
    assert len(results) == 1
    assert results[0].label == "baton"
    covered = [c for c in results[0].covered_components if c != '"@signature-params"']
    assert covered == [f'"{c}"' for c in components]


@DETERMINISTIC
@given(signing_cases())
def test_differential_library_signs_ours_verifies(
    case: tuple[HttpRequest, list[str], PrivateKey, dict[str, Any]],
) -> None:
    message, components, key, options = case
    lib_message = LibRequest(message)
    lib_signer(key).sign(
        lib_message,
        key_id=key.kid,
        label="baton",
        covered_component_ids=components,
        **_lib_options(options),
    )
    ours = HttpRequest(message.method, message.target_uri, lib_message.headers.items())
    required = {"created", "keyid"} | ({"nonce"} if options["nonce"] else set())
    policy = SignaturePolicy(
        required_components=frozenset(components), required_params=frozenset(required)
    )
    result = httpsig.verify(ours, KEYS, policy, body=None)
    assert result.covered == tuple(components)
    assert (result.nonce, result.tag, result.created) == (
        options["nonce"],
        options["tag"],
        options["created"],
    )


@DETERMINISTIC
@given(signing_cases())
def test_differential_signature_base(
    case: tuple[HttpRequest, list[str], PrivateKey, dict[str, Any]],
) -> None:
    message, components, key, options = case
    prepared = lib_signer(key).prepare(
        LibRequest(message),
        key_id=key.kid,
        covered_component_ids=components,
        **_lib_options(options),
    )
    ours = httpsig.signature_base(message, components, prepared.signature_params)
    assert ours == prepared.signature_base


@st.composite
def response_cases(draw: st.DrawFn) -> tuple[HttpResponse, list[str], PrivateKey]:
    req = draw(http_requests())
    headers = [
        (n, draw(st.text(VALUE_CHARS, max_size=10)))
        for n in draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=3))
    ]
    message = HttpResponse(draw(st.integers(100, 599)), headers, req)
    request_fields = sorted({n.lower() for n, _ in req.headers})
    path_empty = req.target_uri.split("://", 1)[1].find("/") == -1
    derived = [
        d
        for d in REQUEST_DERIVED
        if not (d == "@request-target" and req.method == "OPTIONS" and path_empty)
    ]
    candidates = ["@status", *sorted({n.lower() for n, _ in headers})]
    candidates += [f"{c};req" for c in derived + request_fields]
    chosen = draw(st.permutations(candidates))
    return (
        message,
        list(chosen[: draw(st.integers(1, len(chosen)))]),
        draw(st.sampled_from([ED, EC])),
    )


@DETERMINISTIC
@given(response_cases())
def test_differential_responses(case: tuple[HttpResponse, list[str], PrivateKey]) -> None:
    message, components, key = case
    lib_ids = [lib_id(c) for c in components]
    created = datetime.datetime.fromtimestamp(1_700_000_000, tz=datetime.UTC)
    prepared = lib_signer(key).prepare(
        LibResponse(message),
        key_id=key.kid,
        created=created,
        nonce="n",
        covered_component_ids=lib_ids,
    )
    assert (
        httpsig.signature_base(message, components, prepared.signature_params)
        == prepared.signature_base
    )
    signed_message = signed(message, key, components)
    results = lib_verifier(key).verify(LibResponse(signed_message))
    assert len(results) == 1
    policy = SignaturePolicy(required_components=frozenset(components))
    assert httpsig.verify(signed_message, KEYS, policy, body=None).covered == tuple(components)
