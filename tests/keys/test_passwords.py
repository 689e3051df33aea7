"""scrypt password hashes (RFC 7914) in PHC string format, for local operator accounts."""

from __future__ import annotations

import base64
import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys.errors import InvalidKey, MalformedInput
from keys.passwords import (
    DEFAULT_PARAMS,
    MAX_PASSWORD_BYTES,
    PasswordHash,
    ScryptParams,
    derive,
    generate_password,
    hash_password,
    verify_password,
)

#: The cheapest parameters Baton accepts (16 MiB): keeps the tests fast.
FLOOR = ScryptParams(ln=14, r=8, p=1)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


# RFC 7914 s12. The fourth vector (N = 2^20, 1 GiB) is left out: too much memory for CI.
RFC7914_VECTORS = [
    (
        b"",
        b"",
        ScryptParams(ln=4, r=1, p=1),
        "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442"
        "fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906",
    ),
    (
        b"password",
        b"NaCl",
        ScryptParams(ln=10, r=8, p=16),
        "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
        "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640",
    ),
    (
        b"pleaseletmein",
        b"SodiumChloride",
        ScryptParams(ln=14, r=8, p=1),
        "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"
        "d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887",
    ),
]
VECTOR3 = RFC7914_VECTORS[2]
#: RFC 7914 s12 vector 3 as a stored hash (its parameters are exactly Baton's floor).
#: Stored hashes are 32 bytes: the first 32 bytes of the 64-byte answer (scrypt ends in
#: PBKDF2, whose output is T_1 || T_2 || ..., RFC 8018 s5.2, so dkLen=32 is the prefix).
VECTOR3_DIGEST = bytes.fromhex(VECTOR3[3])[:32]
VECTOR3_PHC = f"$scrypt$ln=14,r=8,p=1${_b64(VECTOR3[1])}${_b64(VECTOR3_DIGEST)}"


@pytest.mark.parametrize(("password", "salt", "params", "expected"), RFC7914_VECTORS)
def test_rfc7914_known_answers(
    password: bytes, salt: bytes, params: ScryptParams, expected: str
) -> None:
    assert derive(password, salt, params, 64).hex() == expected


def test_rfc7914_vector_as_a_stored_hash() -> None:
    assert verify_password("pleaseletmein", VECTOR3_PHC)
    assert not verify_password("pleaseletmeiN", VECTOR3_PHC)
    assert PasswordHash.decode(VECTOR3_PHC).encode() == VECTOR3_PHC


def test_default_hash_format_and_round_trip() -> None:
    encoded = hash_password("correct horse battery staple")
    match = re.fullmatch(
        r"\$scrypt\$ln=17,r=8,p=1\$([A-Za-z0-9+/]{22})\$([A-Za-z0-9+/]{43})", encoded
    )
    assert match is not None, encoded
    assert PasswordHash.decode(encoded).params == DEFAULT_PARAMS
    assert DEFAULT_PARAMS.memory == 128 << 20
    assert verify_password("correct horse battery staple", encoded)


def test_salt_is_fresh_for_every_hash() -> None:
    first, second = (hash_password("same", params=FLOOR) for _ in range(2))
    assert first != second
    assert PasswordHash.decode(first).salt != PasswordHash.decode(second).salt
    assert verify_password("same", first)
    assert verify_password("same", second)


@pytest.mark.parametrize("wrong", ["Same", "same ", " same", "sam", "samé", "x" * 100])
def test_wrong_password(wrong: str) -> None:
    assert not verify_password(wrong, hash_password("same", params=FLOOR))


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)  # what keys.passwords calls
    assert verify_password("pleaseletmein", VECTOR3_PHC)
    assert calls == [(VECTOR3_DIGEST, VECTOR3_DIGEST)]


def test_unicode_is_nfc_normalised() -> None:
    encoded = hash_password("caf\u00e9", params=FLOOR)
    assert verify_password("cafe\u0301", encoded)
    assert not verify_password("cafe", encoded)


def test_passwords_that_are_never_accepted() -> None:
    encoded = hash_password("x" * MAX_PASSWORD_BYTES, params=FLOOR)
    assert verify_password("x" * MAX_PASSWORD_BYTES, encoded)
    for bad in ("", "x" * (MAX_PASSWORD_BYTES + 1), "\ud800"):
        assert not verify_password(bad, encoded)
        with pytest.raises(MalformedInput):
            hash_password(bad, params=FLOOR)


# ---------------------------------------------------------------- tampering
def _flip_first_bit(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


def test_tampered_hash_salt_or_parameters_do_not_verify() -> None:
    stored = PasswordHash.decode(VECTOR3_PHC)
    tampered = [
        PasswordHash(stored.params, stored.salt, _flip_first_bit(stored.digest)),
        PasswordHash(stored.params, stored.salt, stored.digest[:-1] + b"\x00"),
        PasswordHash(stored.params, _flip_first_bit(stored.salt), stored.digest),
        PasswordHash(ScryptParams(ln=15, r=8, p=1), stored.salt, stored.digest),
        PasswordHash(ScryptParams(ln=14, r=8, p=2), stored.salt, stored.digest),
    ]
    for variant in tampered:
        assert not verify_password("pleaseletmein", variant.encode()), variant


def test_a_truncated_or_extended_hash_is_refused() -> None:
    """A prefix of the right hash is the right hash of a shorter length: not accepted."""
    stored = PasswordHash.decode(VECTOR3_PHC)
    full = bytes.fromhex(VECTOR3[3])
    for digest in (stored.digest[:16], stored.digest[:31], full, stored.digest + b"\x00"):
        with pytest.raises(InvalidKey):
            verify_password(
                "pleaseletmein", PasswordHash(stored.params, stored.salt, digest).encode()
            )


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "pleaseletmein",
        VECTOR3_PHC.replace("$scrypt$", "$scrypt2$"),
        VECTOR3_PHC.replace("$scrypt$", "$argon2id$"),
        VECTOR3_PHC.replace("ln=14", "ln=014"),
        VECTOR3_PHC.replace("ln=14", "N=16384"),
        VECTOR3_PHC.replace("ln=14,r=8,p=1", "r=8,ln=14,p=1"),
        VECTOR3_PHC.replace("p=1", "p=1,v=1"),
        VECTOR3_PHC.replace("p=1", "p=0"),
        VECTOR3_PHC + "=",
        VECTOR3_PHC + "\n",
        " " + VECTOR3_PHC,
        VECTOR3_PHC + "$",
        VECTOR3_PHC.rsplit("$", 1)[0],
        VECTOR3_PHC.replace("+", "-"),  # base64url is not PHC's alphabet
        VECTOR3_PHC[:-1] + "h",  # non-zero unused bits: not the canonical encoding
        VECTOR3_PHC[:-1] + "\u0445",
        VECTOR3_PHC + "A" * 600,
    ],
)
def test_malformed_hash_is_refused(encoded: str) -> None:
    assert encoded != VECTOR3_PHC
    with pytest.raises(InvalidKey):
        verify_password("pleaseletmein", encoded)


def test_salt_and_hash_lengths_are_bounded() -> None:
    stored = PasswordHash.decode(VECTOR3_PHC)
    for salt, digest in ((b"s" * 7, stored.digest), (b"s" * 65, stored.digest),
                         (stored.salt, b"h" * 31), (stored.salt, b"h" * 33)):  # fmt: skip
        with pytest.raises(InvalidKey):
            PasswordHash.decode(PasswordHash(stored.params, salt, digest).encode())


@given(st.text(max_size=300))
def test_decode_never_raises_anything_but_invalid_key(text: str) -> None:
    try:
        parsed = PasswordHash.decode(text)
    except InvalidKey:
        return
    assert parsed.encode() == text


@given(
    st.sampled_from([ScryptParams(14, 8, 1), ScryptParams(17, 8, 1), ScryptParams(16, 8, 2)]),
    st.binary(min_size=8, max_size=64),
    st.binary(min_size=32, max_size=32),
)
def test_encode_decode_round_trip(params: ScryptParams, salt: bytes, digest: bytes) -> None:
    encoded = PasswordHash(params, salt, digest).encode()
    assert "=" not in "".join(encoded.split("$")[-2:])
    assert PasswordHash.decode(encoded) == PasswordHash(params, salt, digest)


# ---------------------------------------------------------------- bounds
@pytest.mark.parametrize(
    "params",
    [
        ScryptParams(ln=13, r=8, p=1),  # 8 MiB: under the floor
        ScryptParams(ln=16, r=1, p=16),  # 8 MiB even with much parallelism
        ScryptParams(ln=19, r=8, p=1),  # 512 MiB: over the memory cap
        ScryptParams(ln=14, r=8, p=17),  # over the parallelism cap
        ScryptParams(ln=17, r=8, p=9),  # 128 MiB x 9: over the work cap
    ],
)
def test_parameters_outside_bounds_are_refused(params: ScryptParams) -> None:
    with pytest.raises(InvalidKey):
        params.check_bounds()
    with pytest.raises(InvalidKey):
        hash_password("pw", params=params)
    encoded = PasswordHash(params, b"s" * 16, b"h" * 32).encode()
    with pytest.raises(InvalidKey):
        verify_password("pw", encoded)


@pytest.mark.parametrize(
    "params",
    [
        ScryptParams(14, 8, 1),
        ScryptParams(18, 8, 1),
        ScryptParams(17, 8, 8),
        ScryptParams(14, 8, 16),
    ],
)
def test_parameters_at_the_bounds_are_accepted(params: ScryptParams) -> None:
    assert params.check_bounds() is params


@pytest.mark.parametrize(("ln", "r", "p"), [(0, 8, 1), (64, 8, 1), (14, 0, 1), (14, 8, 0),
                                            (14, 1 << 15, 1 << 15)])  # fmt: skip
def test_structurally_invalid_parameters(ln: int, r: int, p: int) -> None:
    with pytest.raises(InvalidKey):
        ScryptParams(ln, r, p)


def test_derive_length_is_bounded() -> None:
    for length in (0, 1025):
        with pytest.raises(InvalidKey):
            derive(b"pw", b"salt", FLOOR, length)


def test_generated_passwords() -> None:
    generated = {generate_password() for _ in range(50)}
    assert len(generated) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{24}", password) for password in generated)
