"""Shared plumbing for the external-vector conformance tests in ``tests/vectors/``.

The vectors live outside the project (see ``tests/conftest.py``). Test cases
are parametrised at collection time, so when the folder is absent each module
collects one placeholder case, ``vectors-missing``; every test also requests
the ``vectors_dir`` fixture, which then skips it with the fixture's message
(or fails it under ``BATON_REQUIRE_VECTORS=1``).

Vocabulary used by every module (see the module docstrings for the policy):

* **accepted**: valid, inside our profile, verified/decrypted with the
  expected result;
* **refused**: valid upstream but outside our profile; a ``keys.errors``
  error was raised;
* **rejected**: invalid (after ``KNOWN_ISSUES.json``; Wycheproof
  "acceptable" counts as invalid); a ``keys.errors`` error was raised;
* **invalid accepted**: the one outcome that must never happen.

Any exception that is not a :class:`keys.errors.KeysError` propagates: a crash
fails the test that met it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import pytest

from keys.errors import KeysError
from keys.material import ENCRYPTION_ALG, PrivateKey
from tests.conftest import vectors_root

Expected = Literal["valid", "invalid", "skip"]

#: RFC 8037 A.1 Ed25519 public key (RFC text). Used as the in-profile
#: *stand-in* verification key wherever a vector's own key is outside our profile.
RFC8037_ED25519: Mapping[str, str] = {
    "kty": "OKP",
    "crv": "Ed25519",
    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
}

#: A P-256 ``ECDH-ES+A256KW`` key generated for this test run (never committed):
#: the JWE stand-in recipient. No outcome depends on its value.
STANDIN_P256_ENC: Mapping[str, str] = PrivateKey.generate(ENCRYPTION_ALG).to_private_jwk()

MISSING = pytest.param(None, id="vectors-missing")


def vectors_path(*parts: str) -> Path | None:
    root = vectors_root()
    return None if root is None else root.joinpath(*parts)


@cache
def load(name: str) -> Any:
    """A vector file (trusted test data, so the standard-library parser is fine)."""
    path = vectors_path(name)
    assert path is not None, "vectors folder missing"
    return json.loads(path.read_text(encoding="utf-8"))


def public_part(jwk: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in jwk.items() if name != "d"}


def without_kid(jwk: Mapping[str, Any]) -> dict[str, Any]:
    """Private-key import pins ``kid`` to the RFC 7638 thumbprint; vector kids are
    free text, so they are dropped before :meth:`PrivateKey.from_jwk`."""
    return {name: value for name, value in jwk.items() if name != "kid"}


# --------------------------------------------------------------------------- Wycheproof


@cache
def known_issues(name: str) -> dict[int, tuple[Expected, str]]:
    """``KNOWN_ISSUES.json`` overrides for one Wycheproof file: tcId -> (use, reason)."""
    overrides: dict[int, tuple[Expected, str]] = {}
    for entry in load("KNOWN_ISSUES.json").get(name, []):
        use = entry["use"]
        if use == "skip":
            overrides[entry["tcId"]] = ("skip", entry["reason"])
        elif use.startswith(
            "invalid"
        ):  # "invalid", "invalid-under-alg-pinning", "invalid (policy)"
            overrides[entry["tcId"]] = ("invalid", entry["reason"])
        else:  # pragma: no cover - only the three forms above exist
            raise AssertionError(f"unknown KNOWN_ISSUES use {use!r}")
    return overrides


def expected_result(name: str, tc_id: int, upstream: str) -> Expected:
    if tc_id in known_issues(name):
        return known_issues(name)[tc_id][0]
    if upstream == "valid":
        return "valid"
    assert upstream in ("invalid", "acceptable"), upstream
    return "invalid"  # "acceptable" must not be accepted either


@dataclass(frozen=True)
class WycheproofCase:
    file: str
    group: Mapping[str, Any]
    test: Mapping[str, Any]

    @property
    def tc_id(self) -> int:
        return int(self.test["tcId"])

    @property
    def expected(self) -> Expected:
        return expected_result(self.file, self.tc_id, self.test["result"])

    @property
    def label(self) -> str:
        return f"tc{self.tc_id} ({self.test.get('comment', '')})"


@cache
def wycheproof_cases(name: str) -> dict[int, WycheproofCase]:
    doc = load(name)
    cases: dict[int, WycheproofCase] = {}
    for group in doc["testGroups"]:
        for test in group["tests"]:
            case = WycheproofCase(name, group, test)
            assert case.tc_id not in cases, f"duplicate tcId {case.tc_id} in {name}"
            cases[case.tc_id] = case
    return cases


def wycheproof_params(name: str) -> list[Any]:
    """``pytest.param(tcId, id="tcN")`` for every case of ``name``."""
    if vectors_root() is None:
        return [MISSING]
    return [pytest.param(tc_id, id=f"tc{tc_id}") for tc_id in wycheproof_cases(name)]


def check_manifest(name: str) -> None:
    """The file holds exactly the cases ``MANIFEST.json`` recorded (no truncation)."""
    entry = next(f for f in load("MANIFEST.json")["files"] if f["file"] == name)
    upstream = Counter(case.test["result"] for case in wycheproof_cases(name).values())
    assert sum(upstream.values()) == entry["cases"], name
    assert dict(upstream) == entry["results"], name


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Outcome:
    """What our code did with one input: a value, or a ``keys.errors`` error and
    the stage that raised it (``"import"`` of the key, or the operation)."""

    value: Any = None
    error: KeysError | None = None
    stage: str = ""

    @property
    def accepted(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        if self.error is None:
            return "accepted"
        return f"{type(self.error).__name__} at {self.stage}: {self.error.detail}"


def attempt(stage: str, action: Callable[[], Any]) -> Outcome:
    """Run ``action``; a ``KeysError`` becomes a refusing :class:`Outcome`."""
    try:
        return Outcome(value=action())
    except KeysError as exc:
        return Outcome(error=exc, stage=stage)


@dataclass
class Tally:
    """Counts for the one-line summary each module prints."""

    name: str
    accepted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    invalid_accepted: list[str] = field(default_factory=list)
    outside_profile_accepted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return (
            len(self.accepted)
            + len(self.refused)
            + len(self.rejected)
            + len(self.invalid_accepted)
            + len(self.outside_profile_accepted)
            + len(self.skipped)
        )

    def add(self, label: str, expected: Expected, in_profile: bool, outcome: Outcome) -> None:
        if expected == "skip":
            self.skipped.append(label)
        elif expected == "invalid":
            (self.invalid_accepted if outcome.accepted else self.rejected).append(label)
        elif not outcome.accepted:
            self.refused.append(label)
        elif in_profile:
            self.accepted.append(label)
        else:
            self.outside_profile_accepted.append(label)

    def line(self) -> str:
        text = (
            f"{self.name}: {self.total} cases: {len(self.accepted)} accepted"
            f" / {len(self.refused)} refused (valid, outside profile)"
            f" / {len(self.rejected)} rejected (invalid)"
            f" / {len(self.invalid_accepted)} invalid accepted"
        )
        if self.outside_profile_accepted:
            text += f" / {len(self.outside_profile_accepted)} VALID OUTSIDE PROFILE ACCEPTED"
        if self.skipped:
            text += f" / {len(self.skipped)} skipped (KNOWN_ISSUES)"
        return text


def error_histogram(outcomes: Iterator[Outcome]) -> str:
    counts = Counter("accepted" if o.error is None else type(o.error).__name__ for o in outcomes)
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
