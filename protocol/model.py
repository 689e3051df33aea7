"""Base model and field types for Baton's own artifacts.

Every artifact Baton signs or stores is a pydantic v2 model that is strict (no
type coercion: ``"1"`` is not ``1``), frozen, and forbids unknown members
(``extra="forbid"``): a field we do not know is an error, not something we
silently drop from a signed object. Sequences are tuples so a frozen model is
immutable all the way down.

Parsing goes through :meth:`BatonModel.parse`, which first runs the strict
JSON parser (duplicate members, depth, size; ``keys.strictjson``) and only then
pydantic's JSON validation. :meth:`BatonModel.canonical` gives the RFC 8785
bytes that signatures and hashes cover; ``None`` fields serialise as ``null``
so the canonical form of a model never depends on how it was built.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Final, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints, ValidationError

from keys import strictjson
from keys.errors import KeysError
from protocol.canonical import canonical_json
from protocol.errors import InvalidArtifact, InvalidIdentity, from_keys_error
from protocol.identity import parse_operator_id, parse_spiffe_id

__all__ = [
    "MAX_ARTIFACT_BYTES",
    "NONCE_PATTERN",
    "BatonModel",
    "Digest",
    "Identity",
    "JsonData",
    "JsonPointer",
    "Name",
    "Nonce",
    "OperatorIdentity",
    "ShortText",
    "Text",
    "WorkloadIdentity",
]

MAX_ARTIFACT_BYTES: Final = 8 << 20

Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
"""``sha256:<64 lowercase hex>``."""

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")]
"""A queue, reason code or other slug Baton puts in keys, paths and metrics."""

NONCE_PATTERN: Final = r"^[A-Za-z0-9._~+/=-]{16,128}$"
Nonce = Annotated[str, StringConstraints(pattern=NONCE_PATTERN)]
"""16-128 characters from a conservative alphabet: nonces become store keys."""
ShortText = Annotated[str, StringConstraints(max_length=256)]
Text = Annotated[str, StringConstraints(max_length=4000)]

_POINTER = re.compile(r"(/([^~/]|~[01])*)*\Z")


def _json_pointer(value: str) -> str:
    if len(value) > 512 or not _POINTER.match(value):
        raise ValueError("not an RFC 6901 JSON Pointer")
    return value


JsonPointer = Annotated[str, AfterValidator(_json_pointer)]
"""An RFC 6901 JSON Pointer (``/a/0/b``; ``~0`` is ``~``, ``~1`` is ``/``)."""

JsonData = Any
"""An arbitrary JSON value carried inside an artifact (a payload, arguments, a
response). Deliberately not pydantic's ``JsonValue``: that validates node by
node and costs ~50 us per 4 KiB. JSON-ness is guaranteed at both boundaries
instead: parsing goes through the strict JSON parser, and :meth:`canonical`
refuses anything that is not JSON (sets, bytes, NaN) before it can be signed."""


@functools.lru_cache(maxsize=4096)
def _workload(value: str) -> str:
    """A SPIFFE ID (cached: a 1,000-entry bundle names the same few identities
    thousands of times; a failure raises and is never cached)."""
    try:
        parse_spiffe_id(value)
    except InvalidIdentity as exc:  # pydantic wraps only ValueError
        raise ValueError(exc.detail) from exc
    return value


@functools.lru_cache(maxsize=4096)
def _operator(value: str) -> str:
    try:
        parse_operator_id(value)
    except InvalidIdentity as exc:
        raise ValueError(exc.detail) from exc
    return value


def _identity(value: str) -> str:
    if value.startswith("operator:"):
        return _operator(value)
    return _workload(value)


WorkloadIdentity = Annotated[str, AfterValidator(_workload)]
OperatorIdentity = Annotated[str, AfterValidator(_operator)]
Identity = Annotated[str, AfterValidator(_identity)]
"""A SPIFFE ID or ``operator:<subject>``."""


class BatonModel(BaseModel):
    """Strict, frozen, closed. See the module docstring."""

    model_config = ConfigDict(
        strict=True,
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    @classmethod
    def parse(cls, data: bytes | str, *, max_bytes: int = MAX_ARTIFACT_BYTES) -> Self:
        """Parse JSON bytes strictly into this model.

        Raises :class:`InvalidArtifact` (or the size/depth errors) on failure.
        """
        try:
            strictjson.loads_object(data, max_bytes=max_bytes)
        except KeysError as exc:
            raise from_keys_error(exc) from exc
        try:
            return cls.model_validate_json(data, strict=True)
        except ValidationError as exc:
            raise InvalidArtifact(f"{cls.__name__}: {_summary(exc)}") from exc

    @classmethod
    def build(cls, **fields: Any) -> Self:
        """Construct from Python values; a schema violation is :class:`InvalidArtifact`
        (callers building artifacts in code get a Baton error, not a pydantic one)."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise InvalidArtifact(f"{cls.__name__}: {_summary(exc)}") from exc

    @classmethod
    def from_value(cls, value: Any) -> Self:
        """Validate an already parsed JSON value (lists allowed where tuples are)."""
        try:
            return cls.model_validate_json(canonical_json(value), strict=True)
        except ValidationError as exc:
            raise InvalidArtifact(f"{cls.__name__}: {_summary(exc)}") from exc

    def to_json(self) -> dict[str, Any]:
        """JSON-compatible dict, aliases applied, ``None`` kept as ``null``."""
        return self.model_dump(mode="json", by_alias=True)

    def canonical(self) -> bytes:
        """RFC 8785 bytes of :meth:`to_json`."""
        return canonical_json(self.to_json())


def _summary(exc: ValidationError) -> str:
    """First few validation errors, locations only plus message (no input values)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:3]:
        location = ".".join(str(p) for p in error["loc"])
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)
