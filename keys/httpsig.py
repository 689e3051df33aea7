"""RFC 9421 HTTP Message Signatures and RFC 9530 ``Content-Digest``: a strict profile.

Why hand-written: the maintained ``http-message-signatures`` library spends
most of its ~300 us per operation in pure-Python structured-field code. This
module implements a narrow profile on top of :mod:`keys.sfv` and is
differential-tested against that library (test-only) and against the RFC 9421
Appendix B vectors. Everything outside the profile fails closed.

The profile:

* Algorithms (RFC 9421 s3.3): ``ed25519`` (s3.3.6) and ``ecdsa-p256-sha256``
  (s3.3.4, 64-byte ``r||s``), always the one pinned to the key found by
  ``keyid``; an ``alg`` parameter that names another algorithm raises
  :class:`AlgorithmMismatch` (s3.2 step 6.4, threat R13).
* Derived components (s2.2): ``@method``, ``@target-uri``, ``@authority``,
  ``@scheme``, ``@request-target``, ``@path``, ``@query``, ``@status``.
  ``@query-param`` and ``@signature-params`` as a covered component are
  refused. The only component parameter is ``req`` (s2.4), on response
  signatures.
* HTTP fields (s2.1): lowercase names; each field line's value stripped of
  SP/HTAB and the lines joined with ``", "``. A value with CR, LF, another
  control character (HTAB inside a value is legal HTTP and kept) or a
  non-ASCII character is refused, so the signature base is ASCII (s2.5 step 4).
  The ``sf``, ``key``, ``bs`` and ``tr`` parameters are refused.
* Signature parameters (s2.3): ``created`` and ``expires`` (non-negative
  Integers), ``nonce``, ``alg``, ``keyid`` and ``tag`` (Strings). Anything
  else, a repeated parameter or a wrong type is refused.
* Only the policy's label is verified; other labels must parse as RFC 8941
  Dictionary members but are otherwise ignored, never trusted (s7.2.5-6, R12).
* Size caps run before any parsing and before any cryptography (X08).

Freshness of ``created``/``expires`` is not checked here: :func:`verify`
never reads a clock (``protocol/`` does it with an injected ``now``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv6Address
from types import MappingProxyType
from typing import Final, NamedTuple

from keys import sfv
from keys.b64 import b64encode_std
from keys.errors import (
    AlgorithmMismatch,
    AlgorithmNotAllowed,
    BadSignature,
    CoverageInsufficient,
    DigestMismatch,
    MalformedInput,
    MalformedSignatureHeader,
    SignatureMissing,
    TooLarge,
    UnknownKeyId,
)
from keys.keyset import KeySet
from keys.material import PrivateKey, PublicKey

__all__ = [
    "DERIVED_COMPONENTS",
    "DIGEST_ALGORITHMS",
    "HttpRequest",
    "HttpResponse",
    "SignaturePolicy",
    "VerifiedSignature",
    "check_content_digest",
    "content_digest",
    "sign",
    "signature_base",
    "verify",
]

#: RFC 9421 s2.2 derived components this profile supports.
DERIVED_COMPONENTS: Final = frozenset(
    {
        "@method",
        "@target-uri",
        "@authority",
        "@scheme",
        "@request-target",
        "@path",
        "@query",
        "@status",
    }
)
#: RFC 9530 s5 algorithms we compute and check.
DIGEST_ALGORITHMS: Final = MappingProxyType({"sha-256": hashlib.sha256, "sha-512": hashlib.sha512})

#: RFC 9421 s2.3 signature parameters and their RFC 8941 types.
_PARAM_TYPES: Final[dict[str, type]] = {
    "created": int,
    "expires": int,
    "nonce": str,
    "alg": str,
    "keyid": str,
    "tag": str,
}
_MAX_DIGEST_MEMBERS: Final = 16
_MAX_SF_INT: Final = 999_999_999_999_999  # RFC 8941 s3.3.1
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}

# RFC 9110 s5.1 field-name (token), lowercased as RFC 9421 s2.1 requires.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
# RFC 9110 s9.1 method = token.
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Anything but HTAB and printable ASCII: CR, LF, other controls, DEL, non-ASCII.
_BAD_FIELD_CHAR = re.compile(r"[^\t\x20-\x7e]")
# RFC 3986 s3 absolute URI as RFC 9110 s4.2 http(s) target URIs use it: no
# userinfo (RFC 9110 s4.2.4), no fragment (s7.1); host is a reg-name or an
# IPv6 literal; path-abempty; query.
_PCHAR = r"A-Za-z0-9._~\-!$&'()*+,;=:@"
_PCT = r"%[0-9A-Fa-f]{2}"
# Possessive quantifiers: the classes are disjoint from the delimiters that
# follow them, so nothing needs to be given back and matching stays linear.
_URI = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*+)://"
    rf"(?P<host>\[[0-9A-Fa-f:.]++\]|(?:[A-Za-z0-9._~\-!$&'()*+,;=]++|{_PCT})++)"
    r"(?::(?P<port>[0-9]*+))?"
    rf"(?P<path>(?:/(?:[{_PCHAR}]++|{_PCT})*+)*+)"
    rf"(?:\?(?P<query>(?:[{_PCHAR}/?]++|{_PCT})*+))?"
)


# ------------------------------------------------------------------ public data types


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """Sans-IO view of a request as the verifier or signer sees it.

    ``target_uri`` is the absolute target URI (RFC 9110 s7.1), e.g.
    ``https://gw.example:8443/a2a/x?y=1``; ``headers`` are the field lines in
    order, names in any case.
    """

    method: str
    target_uri: str
    headers: Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """Sans-IO view of a response; ``request`` answers components with ``;req`` (s2.4)."""

    status: int
    headers: Sequence[tuple[str, str]]
    request: HttpRequest | None = None


@dataclass(frozen=True, slots=True)
class SignaturePolicy:
    """What a verifier demands of the signature under :attr:`label`.

    Component ids are in plain form: ``"@method"``, ``"content-digest"``,
    ``"mcp-method"``, and ``"@method;req"`` for a request component covered by
    a response signature (RFC 9421 s2.4).
    """

    label: str = "baton"
    required_components: frozenset[str] = frozenset({"@method", "@target-uri", "@authority"})
    required_params: frozenset[str] = frozenset({"created", "nonce", "keyid"})
    #: A non-empty body requires ``content-digest`` to be covered (RFC 9530, threat R11).
    require_digest_with_body: bool = True
    max_field_bytes: int = 8192
    max_labels: int = 8
    max_components: int = 32

    def __post_init__(self) -> None:
        """Reject a policy that could never be met or that names nothing we know."""
        try:
            sfv.serialize_key(self.label)
        except MalformedInput:
            raise ValueError(f"policy label {self.label!r} is not an RFC 8941 key") from None
        unknown = set(self.required_params) - set(_PARAM_TYPES)
        if unknown:
            raise ValueError(f"unknown signature parameters in policy: {sorted(unknown)}")
        for plain in self.required_components:
            name, sep, flag = plain.partition(";")
            valid_name = name in DERIVED_COMPONENTS or _FIELD_NAME.fullmatch(name) is not None
            if not valid_name or (sep and flag != "req"):
                raise ValueError(f"policy component {plain!r} is not a supported component id")
        if min(self.max_field_bytes, self.max_labels, self.max_components) < 1:
            raise ValueError("policy caps must be positive")


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    """The outcome of a successful :func:`verify`: what was signed, by which key."""

    label: str
    keyid: str
    key: PublicKey
    alg: str
    created: int | None
    expires: int | None
    nonce: str | None
    tag: str | None
    covered: tuple[str, ...]


# ------------------------------------------------------------------ Content-Digest


def content_digest(body: bytes, algorithm: str = "sha-256") -> str:
    """RFC 9530 s2 ``Content-Digest`` field value, e.g. ``sha-256=:...=:``.

    Only ``sha-256`` and ``sha-512`` (RFC 9530 s5, "standard"); anything else
    raises :class:`AlgorithmNotAllowed`.
    """
    hasher = DIGEST_ALGORITHMS.get(algorithm)
    if hasher is None:
        raise AlgorithmNotAllowed(f"digest algorithm {algorithm!r} is not sha-256 or sha-512")
    return f"{algorithm}=:{b64encode_std(hasher(body).digest())}:"


def check_content_digest(field_value: str, body: bytes) -> None:
    """Check an RFC 9530 s2 ``Content-Digest`` field value against ``body``.

    The value is an RFC 8941 Dictionary of Byte Sequences keyed by algorithm.
    Unknown algorithms are ignored (RFC 9530 s2); at least one of ``sha-256``
    and ``sha-512`` must be present and every one present must match, compared
    in constant time. Any failure, including a field that does not parse,
    raises :class:`DigestMismatch`.
    """
    try:
        members = sfv.parse_dictionary(field_value, max_members=_MAX_DIGEST_MEMBERS)
    except MalformedInput:
        raise DigestMismatch("Content-Digest does not parse") from None
    recognised = 0
    for algorithm, member in members.items():
        hasher = DIGEST_ALGORITHMS.get(algorithm)
        if hasher is None:
            continue
        if not isinstance(member, sfv.Item) or type(member.value) is not bytes:
            raise DigestMismatch(f"Content-Digest {algorithm} is not a byte sequence")
        if not hmac.compare_digest(member.value, hasher(body).digest()):
            raise DigestMismatch(f"Content-Digest {algorithm} does not match the body")
        recognised += 1
    if not recognised:
        raise DigestMismatch("Content-Digest has neither sha-256 nor sha-512")


# ------------------------------------------------------------------ components


class _Component(NamedTuple):
    """A validated component identifier (RFC 9421 s2)."""

    name: str
    req: bool
    plain: str  # "name" or "name;req"
    sf: str  # serialised component-identifier: '"name"' or '"name";req'


@lru_cache(maxsize=256)  # bounded: names come from the wire
def _component(name: str, req: bool, is_response: bool) -> _Component:
    """Validate one component identifier for a request or a response signature.

    RFC 9421 s2.1 (lowercase field names), s2.2 (derived names; request-only
    components need ``req`` in a response, ``@status`` is response-only) and
    s2.4 (``req`` only on responses).
    """
    if name.startswith("@"):
        if name not in DERIVED_COMPONENTS:
            raise MalformedSignatureHeader(f"unsupported derived component {name!r}")
        if name == "@status":
            if req or not is_response:
                raise MalformedSignatureHeader("@status is only for responses, without req")
        elif is_response and not req:
            raise MalformedSignatureHeader(f"{name} in a response signature needs ;req")
    elif not _FIELD_NAME.fullmatch(name):
        raise MalformedSignatureHeader("field component name is not a lowercase token")
    if req and not is_response:
        raise MalformedSignatureHeader("the req parameter is only valid on responses")
    suffix = ";req" if req else ""
    return _Component(name, req, name + suffix, '"' + name + '"' + suffix)


def _component_from_plain(plain: str, is_response: bool) -> _Component:
    """Plain form ``name`` or ``name;req`` -> component."""
    if type(plain) is not str:
        raise MalformedSignatureHeader("component ids must be strings")
    name, sep, flag = plain.partition(";")
    if sep and flag != "req":
        raise MalformedSignatureHeader("only the req component parameter is supported")
    return _component(name, bool(sep), is_response)


def _components_from_items(items: Sequence[sfv.Item], is_response: bool) -> list[_Component]:
    """RFC 9421 s2: covered components are sf-strings with (here) only ``;req``;
    s2.5 step 2.1: an identifier listed twice is an error."""
    components: list[_Component] = []
    seen: set[str] = set()
    for value, params in items:
        if type(value) is not str:
            raise MalformedSignatureHeader("component identifiers must be sf-strings")
        req = False
        if params:
            if params.keys() != {"req"} or params["req"] is not True:
                raise MalformedSignatureHeader("only the req component parameter is supported")
            req = True
        component = _component(value, req, is_response)
        if component.plain in seen:
            raise MalformedSignatureHeader(f"component {component.plain!r} covered twice")
        seen.add(component.plain)
        components.append(component)
    return components


def _check_components(plain_ids: Sequence[str], is_response: bool) -> list[_Component]:
    if isinstance(plain_ids, str):
        raise MalformedSignatureHeader("components must be a sequence of component ids")
    components = [_component_from_plain(plain, is_response) for plain in plain_ids]
    if len({c.plain for c in components}) != len(components):
        raise MalformedSignatureHeader("a component is listed twice")
    return components


def _check_params(params: sfv.Params) -> None:
    """RFC 9421 s2.3: the known parameters with their types; nothing else."""
    for name, value in params.items():
        expected = _PARAM_TYPES.get(name)
        if expected is None:
            raise MalformedSignatureHeader(f"unsupported signature parameter {name!r}")
        if type(value) is not expected:
            raise MalformedSignatureHeader(f"signature parameter {name!r} has the wrong type")
        if type(value) is int and value < 0:
            raise MalformedSignatureHeader(f"signature parameter {name!r} is negative")
        if type(value) is int and value > _MAX_SF_INT:
            raise MalformedSignatureHeader(f"signature parameter {name!r} is out of range")
        if type(value) is str and not (value.isascii() and value.isprintable()):
            raise MalformedSignatureHeader(f"signature parameter {name!r} is not printable ASCII")
        if name == "nonce" and not value:
            raise MalformedSignatureHeader("empty nonce")


def _params_line(components: Sequence[_Component], params: sfv.Params) -> str:
    """RFC 9421 s2.3: the ``@signature-params`` value, an RFC 8941 s4.1.1.1 Inner List.

    ``params`` must have passed :func:`_check_params`, so every key is one of
    ours, every value an Integer or a String, and serialisation cannot fail.
    """
    parts = ["(", " ".join(c.sf for c in components), ")"]
    for name, value in params.items():
        if type(value) is str:  # RFC 8941 s4.1.6; printable ASCII already checked
            text = value
            if '"' in text or "\\" in text:
                text = text.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f';{name}="{text}"')
        elif type(value) is int:
            parts.append(f";{name}={value}")  # RFC 8941 s4.1.4 Integer
        else:  # pragma: no cover - excluded by _check_params
            raise MalformedSignatureHeader(f"signature parameter {name!r} has the wrong type")
    return "".join(parts)


# ------------------------------------------------------------------ message view


class _Uri(NamedTuple):
    scheme: str
    host: str
    port: str | None
    path: str
    query: str | None

    @property
    def authority(self) -> str:
        """Authority as given (RFC 3986 s3.2): ``host[:port]``."""
        return self.host if self.port is None else f"{self.host}:{self.port}"


def _parse_uri(target_uri: str) -> _Uri:
    """Split an absolute http(s) target URI (RFC 9110 s4.2, s7.1; RFC 3986 s3)."""
    m = _URI.fullmatch(target_uri)
    if m is None:
        raise MalformedSignatureHeader("target URI is not an absolute http(s) URI")
    scheme, host = m.group("scheme", "host")
    if scheme.lower() not in _DEFAULT_PORTS:
        raise MalformedSignatureHeader("target URI scheme is not http or https")
    if host.startswith("["):
        try:
            IPv6Address(host[1:-1])
        except ValueError:
            raise MalformedSignatureHeader("target URI has an invalid IPv6 literal") from None
    return _Uri(scheme, host, m.group("port"), m.group("path"), m.group("query"))


class _View:
    """One message as the signature base sees it; parses fields and URI lazily."""

    __slots__ = ("_fields", "_request_view", "_uri", "headers", "is_response", "request", "status")

    def __init__(self, message: HttpRequest | HttpResponse) -> None:
        self.headers = message.headers
        self._fields: dict[str, list[str]] | None = None
        self._uri: _Uri | None = None
        self._request_view: _View | None = None
        self.request: HttpRequest | None
        self.status: int | None
        if isinstance(message, HttpResponse):
            self.is_response = True
            self.request = message.request
            self.status = message.status
        else:
            self.is_response = False
            self.request = message
            self.status = None

    def fields(self) -> dict[str, list[str]]:
        """Field lines by lowercase name, each stripped of SP/HTAB (RFC 9421 s2.1 step 2).

        Lines whose name is not ASCII are skipped: they are not HTTP field
        names and no covered component can name them.
        """
        if self._fields is None:
            fields: dict[str, list[str]] = {}
            for name, value in self.headers:
                if name.isascii():
                    key = name.lower()
                    lines = fields.get(key)
                    if lines is None:
                        fields[key] = [value.strip(" \t")]
                    else:
                        lines.append(value.strip(" \t"))
            self._fields = fields
        return self._fields

    def field_value(self, name: str) -> str | None:
        """RFC 9421 s2.1 step 4 / RFC 9110 s5.3: the lines joined with ``", "``."""
        lines = self.fields().get(name)
        return None if lines is None else ", ".join(lines)

    def request_view(self) -> _View:
        """The related request (RFC 9421 s2.4), for components with ``;req``."""
        if self._request_view is None:
            if self.request is None:
                raise MalformedSignatureHeader("req component but no related request")
            self._request_view = _View(self.request)
        return self._request_view

    def uri(self) -> _Uri:
        if self._uri is None:
            if self.request is None:  # pragma: no cover - guarded by _component()
                raise MalformedSignatureHeader("request component on a response")
            self._uri = _parse_uri(self.request.target_uri)
        return self._uri


def _method(view: _View) -> str:
    if view.request is None:  # pragma: no cover - guarded by _component()
        raise MalformedSignatureHeader("@method needs a request")
    method = view.request.method
    if type(method) is not str or not _METHOD.fullmatch(method):
        raise MalformedSignatureHeader("request method is not an RFC 9110 token")
    return method


def _derived_value(view: _View, name: str) -> str:
    """RFC 9421 s2.2 derived component values."""
    if name == "@status":  # s2.2.9: three-digit status code
        status = view.status
        if type(status) is not int or not 100 <= status <= 999:
            raise MalformedSignatureHeader("response status is not a three-digit integer")
        return str(status)
    if name == "@method":  # s2.2.1: as given, case-sensitive
        return _method(view)
    uri = view.uri()
    if name == "@authority":  # s2.2.3, RFC 9110 s4.2.3: lowercase host, no default port
        port = uri.port
        if not port or port.lstrip("0") == _DEFAULT_PORTS[uri.scheme.lower()]:
            return uri.host.lower()
        return f"{uri.host.lower()}:{port}"
    if name == "@path":  # s2.2.6: empty path is "/"
        return uri.path or "/"
    if name == "@query":  # s2.2.7: "?" and the query, "?" alone when absent
        return "?" + (uri.query or "")
    if name == "@scheme":  # s2.2.4: lowercase
        return uri.scheme.lower()
    query = "" if uri.query is None else "?" + uri.query
    method = _method(view)
    if name == "@target-uri":  # s2.2.2: RFC 9110 s7.1 target URI (no path -> "/")
        path = uri.path if method == "OPTIONS" else uri.path or "/"
        return f"{uri.scheme}://{uri.authority}{path}{query}"
    # s2.2.5 @request-target: the HTTP/1.1 request-target (RFC 9112 s3.2)
    if method == "CONNECT":
        return uri.authority
    if method == "OPTIONS" and not uri.path and uri.query is None:
        return "*"
    return (uri.path or "/") + query


def _field_value(view: _View, name: str) -> str:
    """RFC 9421 s2.1 HTTP field value; absent fields and unsafe characters fail."""
    value = view.field_value(name)
    if value is None:
        raise MalformedSignatureHeader(f"covered field {name!r} is absent")
    if _BAD_FIELD_CHAR.search(value):
        raise MalformedSignatureHeader(f"covered field {name!r} has control or non-ASCII text")
    return value


def _build_base(view: _View, components: Sequence[_Component], params_line: str) -> bytes:
    """RFC 9421 s2.5 Creating the Signature Base."""
    lines: list[str] = []
    for component in components:
        source = view.request_view() if component.req else view
        if component.name[0] == "@":
            value = _derived_value(source, component.name)
        else:
            value = _field_value(source, component.name)
        lines.append(f"{component.sf}: {value}\n")
    lines.append('"@signature-params": ')
    lines.append(params_line)
    base = "".join(lines)
    if not base.isascii():  # pragma: no cover - every value was checked above
        raise MalformedSignatureHeader("signature base is not ASCII")
    return base.encode("ascii")


# ------------------------------------------------------------------ public operations


def signature_base(
    message: HttpRequest | HttpResponse, components: Sequence[str], params_value: str
) -> bytes:
    """The RFC 9421 s2.5 signature base of ``message``.

    ``params_value`` is the Inner List with parameters as it appears after
    ``label=`` in ``Signature-Input``; it is parsed and re-serialised
    canonically (RFC 9421 s2.3, RFC 8941 s4.1) for the ``@signature-params``
    line. ``components`` (plain form) must list exactly the components of
    ``params_value``, in order; a mismatch raises
    :class:`MalformedSignatureHeader`.
    """
    view = _View(message)
    wanted = _check_components(components, view.is_response)
    try:
        inner = sfv.parse_inner_list(params_value)
    except MalformedInput as exc:
        raise MalformedSignatureHeader(f"signature parameters: {exc.detail}") from None
    listed = _components_from_items(inner.items, view.is_response)
    if [c.plain for c in wanted] != [c.plain for c in listed]:
        raise MalformedSignatureHeader("components differ from the signature parameters")
    _check_params(inner.params)
    return _build_base(view, listed, _params_line(listed, inner.params))


def sign(
    message: HttpRequest | HttpResponse,
    key: PrivateKey,
    *,
    components: Sequence[str],
    created: int,
    nonce: str | None,
    keyid: str | None = None,
    label: str = "baton",
    expires: int | None = None,
    tag: str | None = None,
    include_alg: bool = True,
) -> tuple[str, str]:
    """Sign ``message`` (RFC 9421 s3.1); return ``(Signature-Input, Signature)`` values.

    Both values hold only ``label`` (RFC 9421 s4.1, s4.2). Parameters appear
    in the order ``created``, ``expires``, ``keyid`` (default ``key.kid``),
    ``nonce``, ``alg`` (the key's RFC 9421 name, s6.2), ``tag``. The caller adds
    ``Content-Digest`` (see :func:`content_digest`) before signing if it
    covers it. An encryption key raises :class:`~keys.errors.InvalidKey`.
    """
    alg = key.public.httpsig_alg
    view = _View(message)
    covered = _check_components(components, view.is_response)
    params: sfv.Params = {"created": created}
    if expires is not None:
        params["expires"] = expires
    params["keyid"] = key.kid if keyid is None else keyid
    if nonce is not None:
        params["nonce"] = nonce
    if include_alg:
        params["alg"] = alg
    if tag is not None:
        params["tag"] = tag
    _check_params(params)
    try:
        label = sfv.serialize_key(label)
    except MalformedInput:
        raise MalformedSignatureHeader("signature label is not an RFC 8941 key") from None
    params_line = _params_line(covered, params)
    signature = key.sign(_build_base(view, covered, params_line))
    return f"{label}={params_line}", f"{label}=:{b64encode_std(signature)}:"


def _signature_fields(view: _View, policy: SignaturePolicy) -> tuple[str, str]:
    """Both fields, size-capped before either is parsed (threat X08)."""
    sig_input = view.field_value("signature-input")
    signature = view.field_value("signature")
    for value in (sig_input, signature):
        if value is not None and len(value) > policy.max_field_bytes:
            raise TooLarge(f"signature field over {policy.max_field_bytes} bytes")
    if sig_input is None or signature is None:
        raise SignatureMissing("Signature-Input or Signature field absent")
    return sig_input, signature


def _select(sig_input: str, signature: str, policy: SignaturePolicy) -> tuple[sfv.InnerList, bytes]:
    """RFC 9421 s3.2 steps 1-3: parse both Dictionaries, pick the policy's label.

    Other labels must parse (RFC 8941) but are never examined further (s7.2.6).
    """
    try:
        inputs = sfv.parse_dictionary(
            sig_input,
            max_length=policy.max_field_bytes,
            max_members=policy.max_labels,
            max_inner_items=policy.max_components,
        )
        signatures = sfv.parse_dictionary(
            signature, max_length=policy.max_field_bytes, max_members=policy.max_labels
        )
    except TooLarge:
        raise
    except MalformedInput as exc:
        raise MalformedSignatureHeader(exc.detail) from None
    member = inputs.get(policy.label)
    value = signatures.get(policy.label)
    if member is None or value is None:
        raise SignatureMissing(f"no signature labelled {policy.label!r}")
    if not isinstance(member, sfv.InnerList):
        raise MalformedSignatureHeader("Signature-Input member is not an inner list")
    if not isinstance(value, sfv.Item) or type(value.value) is not bytes or value.params:
        raise MalformedSignatureHeader("Signature member is not a bare byte sequence")
    return member, value.value


def _require_params(params: sfv.Params, policy: SignaturePolicy) -> None:
    """RFC 9421 s2.3 types, then the policy's required parameters (s3.2 step 5)."""
    _check_params(params)
    missing = policy.required_params.difference(params)
    if missing:
        raise CoverageInsufficient(f"missing signature parameters {sorted(missing)}")


def _require_coverage(covered: tuple[str, ...], policy: SignaturePolicy, body: bytes) -> None:
    """Policy coverage checks (RFC 9421 s3.2 step 5, s7.2.1; threats R10, R11).

    An empty component list is refused whatever the policy says (R10).
    """
    if not covered:
        raise CoverageInsufficient("the signature covers no components")
    missing = policy.required_components.difference(covered)
    if missing:
        raise CoverageInsufficient(f"components not covered: {sorted(missing)}")
    if body and policy.require_digest_with_body and "content-digest" not in covered:
        raise CoverageInsufficient("a body is present but content-digest is not covered")


def _signing_key(keys: KeySet, params: sfv.Params) -> PublicKey:
    """RFC 9421 s3.2 step 6: key from ``keyid``; algorithm pinned to it (s3.2 step 6.4)."""
    key = keys.get(params.get("keyid"))
    if key.use != "sig":
        raise UnknownKeyId("keyid names an encryption key")
    claimed = params.get("alg")
    if claimed is not None and claimed != key.httpsig_alg:
        raise AlgorithmMismatch("alg parameter is not the key's algorithm")
    return key


def verify(
    message: HttpRequest | HttpResponse,
    keys: KeySet,
    policy: SignaturePolicy,
    *,
    body: bytes | None,
) -> VerifiedSignature:
    """Verify the signature labelled ``policy.label`` (RFC 9421 s3.2) and the body digest.

    Order: size caps -> parse both fields -> select the label -> parameters
    (known, typed, required present) -> coverage (and ``content-digest`` when
    ``body`` is non-empty) -> key by ``keyid`` -> ``alg`` pinned to the key ->
    signature base (s2.5) -> signature -> ``Content-Digest`` (RFC 9530) when it
    is covered or the body is non-empty. ``body=None`` means the message has
    no content, like ``b""``. No clock is read.

    Raises only :mod:`keys.errors` classes: :class:`TooLarge`,
    :class:`MalformedSignatureHeader`, :class:`SignatureMissing`,
    :class:`CoverageInsufficient`, :class:`UnknownKeyId`,
    :class:`AlgorithmMismatch`, :class:`BadSignature`, :class:`DigestMismatch`.
    """
    content = b"" if body is None else body
    view = _View(message)
    sig_input, signature = _signature_fields(view, policy)
    member, raw_signature = _select(sig_input, signature, policy)
    params = member.params
    _require_params(params, policy)
    components = _components_from_items(member.items, view.is_response)
    covered = tuple(c.plain for c in components)
    _require_coverage(covered, policy, content)
    key = _signing_key(keys, params)
    base = _build_base(view, components, _params_line(components, params))
    if not key.verify(raw_signature, base):
        raise BadSignature("HTTP message signature does not verify")
    if content or "content-digest" in covered:
        digest = view.field_value("content-digest")
        if digest is None:
            raise DigestMismatch("body present but no Content-Digest field")
        check_content_digest(digest, content)
    created, expires = params.get("created"), params.get("expires")
    nonce, tag = params.get("nonce"), params.get("tag")
    return VerifiedSignature(
        label=policy.label,
        keyid=key.kid,
        key=key,
        alg=key.httpsig_alg,
        created=created if type(created) is int else None,
        expires=expires if type(expires) is int else None,
        nonce=nonce if type(nonce) is str else None,
        tag=tag if type(tag) is str else None,
        covered=covered,
    )
