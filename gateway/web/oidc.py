"""OpenID Connect login for the operator web inbox (ADR 0015, "Sign in with OIDC").

The authorization-code flow with PKCE (OIDC Core 1.0 s3.1, RFC 6749 s4.1,
RFC 7636), as a confidential client (``client_secret_basic``, RFC 6749
s2.3.1). :meth:`OidcLogin.start` answers ``GET /inbox/oidc/start`` with a 302
to the issuer; :meth:`OidcLogin.finish` checks ``GET /inbox/oidc/callback``
and returns the operator's name (the web app then opens the session).

Invariants, in the order they are enforced:

* **Issuer.** ``https`` only, TLS 1.2 or later, certificates checked against
  the system store plus ``inbox.oidc.ca_file``; host names checked. The
  discovery document (``<issuer>/.well-known/openid-configuration``, fetched
  once and cached) must name exactly the configured issuer (OIDC Discovery
  1.0 s4.3), https endpoints, the ``code`` response type, ``S256`` when it
  lists PKCE methods and ``client_secret_basic`` when it lists client
  authentication methods. Redirects are never followed; every answer is size
  capped and parsed by :mod:`keys.strictjson`.
* **State cookie.** ``start`` draws ``state``, ``nonce`` (256 bits each) and
  a PKCE verifier (RFC 7636 s4.1, 64 unreserved characters) and keeps them,
  with the redirect URI and the issue time, in ``__Host-baton-oidc``:
  ``Secure; HttpOnly; SameSite=Lax; Path=/; Max-Age=600``. Lax, not Strict:
  the cookie must come back on the issuer's top-level redirect to the
  callback (RFC 6265bis s8.8.2). The cookie is sealed with AES-256-GCM
  (:class:`keys.atrest.StoreCipher`) under a key derived by HKDF-SHA256
  (RFC 5869) from the client secret, with the issuer and client id in
  ``info``: every worker of a fleet reads the same secret file, so a login
  started on one worker finishes on any other (a random per-process key
  would not), and a cookie sealed for one issuer or client opens for no
  other. Rotating the client secret only invalidates logins in flight.
* **Callback.** The cookie must open and be at most 10 minutes old;
  ``state`` must equal the sealed one (constant-time comparison, RFC 6749
  s10.12); an ``iss`` parameter must equal the issuer, and is required when
  the issuer advertises it (RFC 9207 s2.4, mix-up defence); an ``error``
  answer ends the login. A state is accepted once per process (remembered
  for the cookie's lifetime); across workers the issuer's own rule that an
  authorization code is single-use (RFC 6749 s4.1.2, s10.5) refuses the
  replay at the token endpoint. :func:`clear_state_cookie` lets the caller
  drop the cookie from its answer.
* **Token request.** ``grant_type=authorization_code`` with the code, the
  same ``redirect_uri`` and the PKCE verifier, authenticated with HTTP Basic
  (RFC 6749 s2.3.1: both parts form-encoded first). The answer must be 200
  with ``token_type`` Bearer and an ``id_token`` (OIDC Core s3.1.3.3).
* **ID token** (OIDC Core s3.1.3.7): verified by :func:`keys.bearer.verify_bearer_at`
  against the issuer's JWKS (``jwks_uri``, cached, fetched again once when a
  token names an unknown ``kid``, at most once a minute): header allow-list,
  ``alg`` pinned to the key, only ``RS256``, ``ES256`` and ``EdDSA`` and only
  those the discovery document lists (never ``none`` or ``HS*``); ``iss``
  exact; ``aud`` exactly our client id (step 3 lets a client refuse
  audiences it does not trust, and we trust none, so the ``azp`` check of
  steps 4-5 reduces to: an ``azp``, when present, is our client id);
  ``exp``/``iat`` (required) against the injected clock with a 60 s skew;
  ``nonce`` equal to ours (step 11, constant time).
* **Operator.** The configured claim (default ``sub``; a string) is looked up
  in ``operators_by_subject``. With ``claim = "email"`` the token must also
  say ``email_verified: true``. An unknown subject is :class:`OidcLoginFailed`
  (401, generic message; the subject is in the diagnostics only).

Every failure raises a :class:`protocol.errors.BatonError`: ``oidc_failed``
for the login itself, ``stale`` and ``replay_detected`` for the state cookie,
the shared JWT codes (``bad_signature``, ``bad_audience``, ``expired``...)
for the ID token, ``upstream_error`` (502) when the issuer cannot be reached
or answers something unusable, ``malformed_input`` (400) for a ``Host``
that is not host[:port], ``invalid_config`` for a bad secret or CA file.
Details never contain the client secret, the code, the verifier or a token.

Choices and why:

* **authlib, through keys/.** The OAuth 2 messages (the authorization
  request, the PKCE verifier and S256 challenge, the token request body) are
  built by authlib's sans-IO helpers in :mod:`keys.oauth`: DESIGN.md
  "Layers" and ``tests/test_layering.py`` allow crypto and JOSE libraries
  (authlib is one) in ``keys/`` only. The two HTTP requests are made with
  aiohttp, already the gateway's client, so no HTTP client is added; the
  state cookie is sealed with :class:`~keys.atrest.StoreCipher`, and the ID
  token goes through :mod:`keys.bearer`, which already verifies JWTs from
  external issuers (RSA included) with PyJWT and does every claim check
  itself with an injectable clock (authlib's own ID-token checks sit on its
  deprecated ``authlib.jose``).
* **Fetched JWKS.** :mod:`keys.bearer` is strict about a pinned key set; an
  issuer's published set also carries keys we cannot use. Each JWK is taken
  on its own: keys for encryption, without ``kid``, with an algorithm
  outside the policy or that :meth:`~keys.bearer.IssuerKey.from_jwk` refuses
  (private members, small RSA...) are skipped, and unknown metadata members
  (Entra's ``issuer``) are dropped. An RSA key without ``alg`` is pinned to
  RS256: our policy allows no other RSA algorithm, so the header cannot pick
  a padding (RFC 8725 s3.1). No usable key at all is an error.
* **Redirect URI.** ``https://<Host>/inbox/oidc/callback``. The OIDC section
  this class is given names no public address of the operator listener, so
  the host is the request's ``Host``, after a strict host[:port] syntax
  check. That is safe because the issuer must match the redirect URI
  exactly against the client's registration (OIDC Core s3.1.2.1, RFC 9700
  s4.1.3): a forged ``Host`` gets an error page at the issuer, never a code.
  On the operator listener the web app has already refused (421) any
  ``Host`` that names none of its origins (``gateway/web/webapp.py``, P06),
  so the URI is always one of those. The URI is sealed into the cookie; the
  callback must arrive on the same host, and the token request repeats it
  (RFC 6749 s4.1.3).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import ssl
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web

from gateway.config import OidcConfig
from keys import strictjson
from keys.atrest import StoreCipher
from keys.b64 import b64encode_std, b64url_decode, b64url_encode
from keys.bearer import BearerIssuer, IssuerKey, verify_bearer_at
from keys.errors import InvalidEnvelope, InvalidKey, KeysError, UnknownKeyId
from keys.files import read_private_file
from keys.oauth import authorization_url, derive_secret_key, new_verifier, token_request_body
from protocol.errors import (
    BadGateway,
    ConfigurationError,
    MalformedInput,
    MalformedJws,
    OidcLoginFailed,
    ReplayDetected,
    Stale,
    from_keys_error,
)

__all__ = [
    "CALLBACK_PATH",
    "ID_TOKEN_ALGS",
    "STATE_COOKIE",
    "STATE_TTL_S",
    "OidcLogin",
    "check_id_token",
    "clear_state_cookie",
    "issuer_keys",
]

STATE_COOKIE: Final = "__Host-baton-oidc"
STATE_TTL_S: Final = 600
CALLBACK_PATH: Final = "/inbox/oidc/callback"
#: Our policy for ID-token signatures; the issuer's advertised list narrows it.
ID_TOKEN_ALGS: Final = frozenset({"RS256", "ES256", "EdDSA"})

_SKEW_S: Final = 60
_ID_TOKEN_MAX_LIFETIME_S: Final = 86400
_ID_TOKEN_MAX_BYTES: Final = 16384
_JWKS_REFRESH_S: Final = 60.0
_HTTP_TIMEOUT_S: Final = 10.0
_MAX_DOCUMENT_BYTES: Final = 256 * 1024
_MAX_COOKIE_BYTES: Final = 2048
_MAX_PARAM: Final = 2048
_MAX_USED_STATES: Final = 65536
_MAX_JWKS_KEYS: Final = 64
_SECRET_INFO: Final = b"baton inbox oidc state cookie v1"
_COOKIE_AAD: Final = STATE_COOKIE.encode("ascii")
_WELL_KNOWN: Final = "/.well-known/openid-configuration"

_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST: Final = re.compile(
    rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]{{2,45}}\])(?::[0-9]{{1,5}})?"
)
_PRINTABLE: Final = re.compile(r"[\x20-\x7e]*")
#: Members a JWK may keep on its way to :meth:`IssuerKey.from_jwk`; private
#: ones are kept so that a published private key is refused, not trimmed.
_JWK_MEMBERS: Final = frozenset(
    {"kty", "kid", "alg", "use", "key_ops", "crv", "x", "y", "n", "e"}
    | {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
)


def _short(value: object, limit: int = 120) -> str:
    """A log-safe rendering of an issuer-supplied value."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in text[:limit])
    return repr(text)


def _https_url(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or len(value) > _MAX_PARAM:
        raise BadGateway(f"issuer metadata: {name} missing or not a string")
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or parts.fragment:
        raise BadGateway(f"issuer metadata: {name} {_short(value)} is not an https URL")
    return value


def _string_list(document: Mapping[str, Any], name: str) -> frozenset[str] | None:
    if name not in document:
        return None
    value = document[name]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadGateway(f"issuer metadata: {name} is not an array of strings")
    return frozenset(value)


@dataclass(frozen=True, slots=True)
class _Metadata:
    """What we use of the issuer's discovery document (OIDC Discovery s3)."""

    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algs: frozenset[str]
    iss_parameter: bool

    @classmethod
    def parse(cls, document: Mapping[str, Any], issuer: str) -> _Metadata:
        found = document.get("issuer")
        if not isinstance(found, str) or found != issuer:
            raise BadGateway(
                f"issuer metadata names issuer {_short(found)}, not the configured {issuer!r} "
                "(OIDC Discovery s4.3)"
            )
        response_types = _string_list(document, "response_types_supported")
        if response_types is not None and "code" not in response_types:
            raise BadGateway("issuer does not support response_type=code")
        methods = _string_list(document, "code_challenge_methods_supported")
        if methods is not None and "S256" not in methods:
            raise BadGateway("issuer does not support PKCE S256 (RFC 7636)")
        auth_methods = _string_list(document, "token_endpoint_auth_methods_supported")
        if auth_methods is not None and "client_secret_basic" not in auth_methods:
            raise BadGateway("issuer does not support client_secret_basic")
        advertised = _string_list(document, "id_token_signing_alg_values_supported")
        if advertised is None:
            raise BadGateway("issuer metadata: id_token_signing_alg_values_supported missing")
        algs = frozenset(advertised & ID_TOKEN_ALGS)
        if not algs:
            raise BadGateway(
                f"issuer signs ID tokens with {sorted(advertised)}, none of {sorted(ID_TOKEN_ALGS)}"
            )
        iss_parameter = document.get("authorization_response_iss_parameter_supported", False)
        if not isinstance(iss_parameter, bool):
            raise BadGateway("issuer metadata: authorization_response_iss_parameter_supported")
        return cls(
            authorization_endpoint=_https_url(document, "authorization_endpoint"),
            token_endpoint=_https_url(document, "token_endpoint"),
            jwks_uri=_https_url(document, "jwks_uri"),
            algs=algs,
            iss_parameter=iss_parameter,
        )


@dataclass(frozen=True, slots=True)
class _State:
    """The sealed contents of the state cookie."""

    state: str
    nonce: str
    verifier: str
    redirect_uri: str
    issued_at: int

    def dump(self) -> bytes:
        return json.dumps(
            {
                "v": 1,
                "state": self.state,
                "nonce": self.nonce,
                "verifier": self.verifier,
                "redirect_uri": self.redirect_uri,
                "iat": self.issued_at,
            },
            separators=(",", ":"),
        ).encode("ascii")

    @classmethod
    def load(cls, raw: bytes) -> _State:
        try:
            data = strictjson.loads_object(raw, max_bytes=_MAX_COOKIE_BYTES, max_depth=2)
        except KeysError as exc:
            raise OidcLoginFailed(f"state cookie: {exc.detail}") from exc
        names = ("state", "nonce", "verifier", "redirect_uri")
        if (
            set(data) != {"v", "iat", *names}
            or data["v"] != 1
            or not all(isinstance(data[name], str) and data[name] for name in names)
            or not isinstance(data["iat"], int)
            or isinstance(data["iat"], bool)
        ):
            raise OidcLoginFailed("state cookie has the wrong members")
        return cls(
            state=data["state"],
            nonce=data["nonce"],
            verifier=data["verifier"],
            redirect_uri=data["redirect_uri"],
            issued_at=data["iat"],
        )


def clear_state_cookie(response: web.StreamResponse) -> None:
    """Expire the state cookie on ``response`` (the callback's answer)."""
    response.del_cookie(STATE_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")


def _clean_jwk(jwk: Mapping[str, Any]) -> dict[str, Any]:
    cleaned = {name: value for name, value in jwk.items() if name in _JWK_MEMBERS}
    if cleaned.get("kty") == "RSA" and "alg" not in cleaned:
        cleaned["alg"] = "RS256"  # the only RSA algorithm our policy allows
    return cleaned


def issuer_keys(jwks: object, algs: frozenset[str]) -> dict[str, IssuerKey]:
    """The usable signing keys of an issuer's published JWKS (RFC 7517 s5).

    Keys for another use, without a ``kid``, pinned to an algorithm not in
    ``algs``, or refused by :meth:`IssuerKey.from_jwk` are skipped; a
    repeated ``kid`` or no usable key at all is :class:`BadGateway`.
    """
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list):
        raise BadGateway("issuer JWKS is not an object with a 'keys' array")
    found: dict[str, IssuerKey] = {}
    for jwk in jwks["keys"]:
        if not isinstance(jwk, Mapping) or jwk.get("use", "sig") != "sig" or "kid" not in jwk:
            continue
        try:
            key = IssuerKey.from_jwk(_clean_jwk(jwk))
        except InvalidKey:
            continue
        if key.alg not in algs:
            continue
        if key.kid in found:
            raise BadGateway(f"issuer JWKS repeats kid {_short(key.kid)}")
        found[key.kid] = key
        if len(found) == _MAX_JWKS_KEYS:
            break
    if not found:
        raise BadGateway(f"issuer JWKS has no usable {sorted(algs)} signing key")
    return found


def check_id_token(
    token: str,
    *,
    issuer: BearerIssuer,
    nonce: str,
    now: float,
) -> Mapping[str, Any]:
    """Verify an ID token (OIDC Core s3.1.3.7) and return its claims.

    ``issuer`` carries the issuer, our client id as audience, the keys and
    the skew (see :class:`OidcLogin`). Raises :class:`keys.errors.UnknownKeyId`
    untranslated (the caller may fetch the JWKS again); every other failure
    is a :class:`BatonError`.
    """
    try:
        verified = verify_bearer_at(token, issuer, now=now)
    except UnknownKeyId:
        raise
    except KeysError as exc:
        raise from_keys_error(exc) from exc
    claims = verified.claims
    if "iat" not in claims:
        raise MalformedJws("ID token has no iat (OIDC Core s2)")
    if "azp" in claims and claims["azp"] != issuer.audience:
        raise OidcLoginFailed("ID token azp is not our client id")
    found = claims.get("nonce")
    if not isinstance(found, str) or not hmac.compare_digest(
        found.encode("utf-8"), nonce.encode("utf-8")
    ):
        raise OidcLoginFailed("ID token nonce is missing or not ours")
    return claims


def _issuer_context(ca_file: Path | None) -> ssl.SSLContext:
    """TLS 1.2+ with the system store, plus ``ca_file`` when configured."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"inbox.oidc.ca_file {ca_file}: {exc}") from exc
    return context


def _param(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise OidcLoginFailed(f"callback repeats {name}")
    if not values:
        return None
    value = values[0]
    if len(value) > _MAX_PARAM or not _PRINTABLE.fullmatch(value):
        raise OidcLoginFailed(f"callback {name} is too long or not printable ASCII")
    return value


class OidcLogin:
    """One configured issuer and client; shared by every request of a worker."""

    def __init__(
        self,
        config: OidcConfig,
        *,
        operators_by_subject: Mapping[str, str],
        config_dir: Path,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._issuer = config.issuer
        self._client_id = config.client_id
        self._subjects: Mapping[str, str] = MappingProxyType(dict(operators_by_subject))
        self._clock = clock
        self._secret = self._read_secret(config_dir / config.client_secret_file)
        info = b"\x00".join(
            (_SECRET_INFO, self._issuer.encode("utf-8"), self._client_id.encode("utf-8"))
        )
        self._cipher = StoreCipher(derive_secret_key(self._secret.encode("utf-8"), info))
        ca_file = None
        if config.ca_file:
            ca_file = Path(config.ca_file)
            ca_file = ca_file if ca_file.is_absolute() else config_dir / ca_file
        self._ssl = _issuer_context(ca_file)
        self._http: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self._metadata: _Metadata | None = None
        self._keys: BearerIssuer | None = None
        self._keys_fetched_at = float("-inf")
        self._used: OrderedDict[bytes, float] = OrderedDict()

    def __repr__(self) -> str:
        return f"OidcLogin(issuer={self._issuer!r}, client_id={self._client_id!r})"

    @staticmethod
    def _read_secret(path: Path) -> str:
        try:
            raw = read_private_file(path)
        except KeysError as exc:
            raise ConfigurationError(f"inbox.oidc.client_secret_file: {exc.detail}") from exc
        except OSError as exc:
            raise ConfigurationError(
                f"inbox.oidc.client_secret_file {path}: {exc.strerror}"
            ) from exc
        try:
            secret = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ConfigurationError(f"{path}: client secret is not UTF-8") from None
        if not secret or not _PRINTABLE.fullmatch(secret):
            raise ConfigurationError(f"{path}: client secret is empty or not printable ASCII")
        return secret

    # ------------------------------------------------------------------ HTTP

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:  # created inside the running loop
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=16),
                timeout=aiohttp.ClientTimeout(total=_HTTP_TIMEOUT_S),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._http

    async def _fetch(
        self, method: str, url: str, **kwargs: Any
    ) -> tuple[int, dict[str, Any] | None]:
        """(status, JSON object or None) of one request to the issuer; never redirects."""
        try:
            async with self._session().request(
                method, url, allow_redirects=False, **kwargs
            ) as response:
                body = bytearray()
                async for chunk in response.content.iter_chunked(16384):
                    body += chunk
                    if len(body) > _MAX_DOCUMENT_BYTES:
                        raise BadGateway(f"issuer answer from {url} over {_MAX_DOCUMENT_BYTES} B")
                status = response.status
        except TimeoutError as exc:
            raise BadGateway(f"issuer: no answer from {url} in {_HTTP_TIMEOUT_S} s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise BadGateway(f"issuer: {method} {url} failed: {type(exc).__name__}") from exc
        try:
            return status, strictjson.loads_object(bytes(body), max_bytes=_MAX_DOCUMENT_BYTES)
        except KeysError:
            return status, None

    async def _get_document(self, url: str, what: str) -> dict[str, Any]:
        status, document = await self._fetch("GET", url, headers={"Accept": "application/json"})
        if status != 200 or document is None:
            raise BadGateway(
                f"issuer {what} at {url}: status {status}, JSON object {bool(document)}"
            )
        return document

    async def _discover(self) -> _Metadata:
        """The cached discovery document (OIDC Discovery s4)."""
        if self._metadata is None:
            async with self._lock:
                if self._metadata is None:
                    url = self._issuer.rstrip("/") + _WELL_KNOWN
                    document = await self._get_document(url, "discovery")
                    self._metadata = _Metadata.parse(document, self._issuer)
        return self._metadata

    async def _issuer_keys(self, metadata: _Metadata, *, refresh: bool) -> BearerIssuer:
        """The issuer's keys; ``refresh`` fetches them again unless that was done recently."""
        async with self._lock:
            due = refresh and self._clock() - self._keys_fetched_at >= _JWKS_REFRESH_S
            if self._keys is None or due:
                jwks = await self._get_document(metadata.jwks_uri, "JWKS")
                self._keys = BearerIssuer(
                    issuer=self._issuer,
                    audience=self._client_id,
                    keys=issuer_keys(jwks, metadata.algs),
                    leeway_s=_SKEW_S,
                    max_lifetime_s=_ID_TOKEN_MAX_LIFETIME_S,
                    allowed_typ=frozenset({"JWT"}),
                    max_token_bytes=_ID_TOKEN_MAX_BYTES,
                )
                self._keys_fetched_at = self._clock()
            return self._keys

    async def close(self) -> None:
        """Close the connection pool to the issuer."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ------------------------------------------------------------------ start

    @staticmethod
    def _redirect_uri(request: web.Request) -> str:
        host = request.headers.get("Host", "")
        if not _HOST.fullmatch(host):
            raise MalformedInput(f"Host {_short(host)} is not host[:port]")
        return f"https://{host.lower()}{CALLBACK_PATH}"

    async def start(self, request: web.Request) -> web.StreamResponse:
        """``GET /inbox/oidc/start``: 302 to the issuer with a fresh state cookie."""
        metadata = await self._discover()
        state = _State(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=new_verifier(),
            redirect_uri=self._redirect_uri(request),
            issued_at=int(self._clock()),
        )
        location = authorization_url(
            metadata.authorization_endpoint,
            client_id=self._client_id,
            redirect_uri=state.redirect_uri,
            scopes=self._config.scopes,
            state=state.state,
            nonce=state.nonce,
            verifier=state.verifier,
        )
        response = web.Response(
            status=302, headers={"Location": location, "Cache-Control": "no-store"}
        )
        sealed = b64url_encode(self._cipher.seal(state.dump(), aad=_COOKIE_AAD))
        response.set_cookie(
            STATE_COOKIE,
            sealed,
            max_age=STATE_TTL_S,
            path="/",
            secure=True,
            httponly=True,
            samesite="Lax",
        )
        return response

    # ------------------------------------------------------------------ finish

    def _open_cookie(self, request: web.Request) -> _State:
        value = request.cookies.get(STATE_COOKIE)
        if not value:
            raise OidcLoginFailed("no state cookie (login not started here, or expired)")
        if len(value) > _MAX_COOKIE_BYTES:
            raise OidcLoginFailed("state cookie too long")
        try:
            raw = self._cipher.open(b64url_decode(value), aad=_COOKIE_AAD)
        except (InvalidEnvelope, KeysError) as exc:
            raise OidcLoginFailed("state cookie does not open") from exc
        return _State.load(raw)

    def _consume(self, state: _State, now: float) -> None:
        """Accept each state once in this process while its cookie could be valid."""
        while self._used and next(iter(self._used.values())) <= now:
            self._used.popitem(last=False)
        digest = hashlib.sha256(state.state.encode("ascii")).digest()
        if digest in self._used:
            raise ReplayDetected("OIDC callback state used before")
        self._used[digest] = state.issued_at + STATE_TTL_S + _SKEW_S
        if len(self._used) > _MAX_USED_STATES:
            self._used.popitem(last=False)

    def _check_callback(self, request: web.Request, metadata: _Metadata) -> tuple[_State, str]:
        """Steps before the token request; returns the sealed state and the code."""
        sealed = self._open_cookie(request)
        now = self._clock()
        age = now - sealed.issued_at
        if not -_SKEW_S <= age <= STATE_TTL_S:
            raise Stale(f"OIDC state cookie is {age:.0f} s old (limit {STATE_TTL_S} s)")
        error = _param(request, "error")
        if error is not None:
            raise OidcLoginFailed(f"issuer answered error {_short(error)}")
        state = _param(request, "state")
        if state is None or not hmac.compare_digest(
            state.encode("ascii"), sealed.state.encode("ascii")
        ):
            raise OidcLoginFailed("callback state does not match the state cookie")
        iss = _param(request, "iss")
        if iss is None and metadata.iss_parameter:
            raise OidcLoginFailed("callback has no iss though the issuer sends it (RFC 9207)")
        if iss is not None and iss != self._issuer:
            raise OidcLoginFailed(f"callback iss {_short(iss)} is not our issuer (RFC 9207)")
        if self._redirect_uri(request) != sealed.redirect_uri:
            raise OidcLoginFailed("callback reached another host than the login started on")
        code = _param(request, "code")
        if not code:
            raise OidcLoginFailed("callback has no code")
        self._consume(sealed, now)
        return sealed, code

    def _basic_auth(self) -> str:
        """RFC 6749 s2.3.1: form-encode id and secret, then HTTP Basic (RFC 7617)."""
        pair = f"{quote(self._client_id, safe='')}:{quote(self._secret, safe='')}"
        return "Basic " + b64encode_std(pair.encode("ascii"))

    async def _redeem(self, metadata: _Metadata, sealed: _State, code: str) -> str:
        """The token request (RFC 6749 s4.1.3, RFC 7636 s4.5); returns the ID token."""
        status, answer = await self._fetch(
            "POST",
            metadata.token_endpoint,
            data=token_request_body(
                code, redirect_uri=sealed.redirect_uri, verifier=sealed.verifier
            ),
            headers={
                "Authorization": self._basic_auth(),
                "Accept": "application/json",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        if status != 200:
            error = answer.get("error") if answer is not None else None
            if 400 <= status < 500:
                raise OidcLoginFailed(f"token endpoint refused: {status} {_short(error)}")
            raise BadGateway(f"token endpoint answered {status} {_short(error)}")
        if answer is None:
            raise BadGateway("token endpoint answer is not a JSON object")
        token_type = answer.get("token_type")
        id_token = answer.get("id_token")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise BadGateway(f"token endpoint token_type {_short(token_type)} is not Bearer")
        if not isinstance(id_token, str):
            raise BadGateway("token endpoint answer has no id_token")
        return id_token

    async def _verify(self, metadata: _Metadata, id_token: str, nonce: str) -> Mapping[str, Any]:
        keys = await self._issuer_keys(metadata, refresh=False)
        try:
            return check_id_token(id_token, issuer=keys, nonce=nonce, now=self._clock())
        except UnknownKeyId:
            pass
        keys = await self._issuer_keys(metadata, refresh=True)  # the issuer may have rotated
        try:
            return check_id_token(id_token, issuer=keys, nonce=nonce, now=self._clock())
        except UnknownKeyId as exc:
            raise from_keys_error(exc) from exc

    def _operator(self, claims: Mapping[str, Any]) -> str:
        claim = self._config.claim
        subject = claims.get(claim)
        if not isinstance(subject, str) or not subject:
            raise OidcLoginFailed(f"ID token claim {claim!r} is missing or not a string")
        if claim == "email" and claims.get("email_verified") is not True:
            raise OidcLoginFailed("ID token email is not verified (email_verified)")
        operator = self._subjects.get(subject)
        if operator is None:
            raise OidcLoginFailed(f"{claim} {_short(subject)} is no operator's oidc_subject")
        return operator

    async def finish(self, request: web.Request) -> str:
        """``GET /inbox/oidc/callback``: the operator name the issuer vouched for."""
        metadata = await self._discover()
        sealed, code = self._check_callback(request, metadata)
        id_token = await self._redeem(metadata, sealed, code)
        claims = await self._verify(metadata, id_token, sealed.nonce)
        return self._operator(claims)
