"""Sign an agent's requests to the Baton gateway from the SDKs' own HTTP clients.

The official SDKs talk HTTP through clients the application may supply:
``mcp`` 2.3 through ``httpx2.AsyncClient`` and ``a2a-sdk`` 1.3 through
``httpx.AsyncClient``. Both clients accept a plain callable as ``auth=``
(``httpx._client.Client._build_auth`` / ``httpx2._client`` wrap it in
``FunctionAuth``, which calls it once per ``send`` with the request and sends
what it returns). :class:`RequestSigner` is such a callable, so signing is two
lines and this module imports neither library::

    signer = RequestSigner(agent_signing_key)
    client = httpx2.AsyncClient(auth=signer)   # or httpx.AsyncClient(auth=signer)

Loading the key is I/O and stays with the caller: ``keys.files.load_private_jwks``
reads a 0600 JWKS file (refusing world-readable ones) and ``.active`` is the
signing key; ``gateway.devdata.DataFolder(root).load_agent(td, name).signing.active``
does the same for a folder made by ``baton init``.

What each request gets (DESIGN.md "Message integrity and replay"):

* ``Content-Digest`` (RFC 9530 s2, ``sha-256``) when it has a body;
* an RFC 9421 signature labelled ``baton`` (s3.1, s4) over ``@method``,
  ``@target-uri``, ``@authority`` (s2.2.1-3), ``content-digest`` when there is
  a body, and each ``cover`` header present on the request (the routing
  headers the gateway requires: ``mcp-method``, ``mcp-name``, ``a2a-version``);
* parameters ``created`` (the injected clock), ``keyid``, a fresh ``nonce``
  (``token(16)``, 128 random bits) and ``alg`` pinned to the key (s2.3).

Invariants:

* The target URI signed is the one on the wire: ``scheme://`` + the ``Host``
  field the client sends (lowercased, as the gateway lowercases it) + the
  request target exactly as sent (``url.raw_path``: path and query,
  percent-encoded as sent). The gateway rebuilds ``https://{Host}{raw path}``
  (gateway/proxy.py ``_verify_signature``), so the client must reach it over
  ``https``.
* A body is signed only when its bytes are known. Both clients read a
  ``content=``/``json=``/``data=`` body eagerly; a streaming body that nobody
  read raises :class:`~protocol.errors.InvalidRequest` rather than sign a
  digest of the wrong bytes. Read it first (``await request.aread()``) or pass
  bytes.
* Re-signing replaces ``Content-Digest``, ``Signature-Input`` and ``Signature``
  (a redirect the SDK follows itself is sent through ``auth`` again and gets a
  fresh nonce). Redirects followed by the client (``follow_redirects=True``)
  are not re-signed by httpx and will be refused: the gateway never redirects.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol, TypeVar

from keys.errors import KeysError
from keys.httpsig import HttpRequest, content_digest, sign
from keys.material import PrivateKey
from protocol.errors import InvalidRequest, from_keys_error

__all__ = [
    "BASE_COMPONENTS",
    "DEFAULT_COVER",
    "SIGNATURE_LABEL",
    "RequestSigner",
    "SignableRequest",
]

#: Routing headers the gateway requires to be covered when present (gateway/proxy.py).
DEFAULT_COVER: Final = ("mcp-method", "mcp-name", "a2a-version")
#: The RFC 9421 label the gateway verifies (keys.httpsig.SignaturePolicy default).
SIGNATURE_LABEL: Final = "baton"
#: The components every signature covers, in this order (RFC 9421 s2.2).
BASE_COMPONENTS: Final = ("@method", "@target-uri", "@authority")

# RFC 9110 s5.1 field-name (token), lowercase as RFC 9421 s2.1 requires.
_FIELD_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
#: Fields the signer itself writes: covering or copying them is meaningless.
_OWN_FIELDS: Final = frozenset({"content-digest", "signature", "signature-input"})


class _Url(Protocol):
    """The part of ``httpx.URL`` / ``httpx2.URL`` the signer reads."""

    @property
    def scheme(self) -> str: ...

    @property
    def netloc(self) -> bytes: ...

    @property
    def raw_path(self) -> bytes: ...


class _Headers(Protocol):
    """The part of ``httpx.Headers`` / ``httpx2.Headers`` the signer uses."""

    def multi_items(self) -> list[tuple[str, str]]: ...

    def __setitem__(self, key: str, value: str) -> None: ...

    def __delitem__(self, key: str) -> None: ...

    def __contains__(self, key: object) -> bool: ...


class SignableRequest(Protocol):
    """Structural type of ``httpx.Request`` and ``httpx2.Request`` (no import of either)."""

    @property
    def method(self) -> str: ...

    @property
    def url(self) -> _Url: ...

    @property
    def headers(self) -> _Headers: ...

    @property
    def content(self) -> bytes: ...


RequestT = TypeVar("RequestT", bound=SignableRequest)


def _validated_cover(cover: Sequence[str]) -> tuple[str, ...]:
    """Lowercase RFC 9110 field names, each once, none of the signer's own fields."""
    if isinstance(cover, str):
        raise ValueError("cover must be a sequence of header names, not one string")
    names: tuple[object, ...] = tuple(cover)
    for name in names:
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"cover header {name!r} is not a lowercase field name")
        if name in _OWN_FIELDS:
            raise ValueError(f"cover header {name!r} is written by the signer itself")
    if len(set(names)) != len(names):
        raise ValueError("cover lists a header twice")
    return tuple(str(name) for name in names)


def _body_of(request: SignableRequest) -> bytes:
    """The request's bytes; refuse a streaming body that was never read."""
    try:
        return request.content
    except RuntimeError as exc:  # httpx(2).RequestNotRead is a RuntimeError
        raise InvalidRequest(
            "cannot sign a streaming request body that has not been read: call "
            "`await request.aread()` first or send the body as bytes"
        ) from exc


def _target_uri(request: SignableRequest, fields: Sequence[tuple[str, str]]) -> str:
    """``scheme://`` + the ``Host`` sent + the request target sent (RFC 9110 s7.1, s7.2)."""
    hosts = [value for name, value in fields if name.lower() == "host"]
    if len(hosts) > 1:
        raise InvalidRequest("request carries more than one Host field")
    try:
        authority = hosts[0] if hosts else request.url.netloc.decode("ascii")
        target = request.url.raw_path.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("request URL is not ASCII as sent") from exc
    return f"{request.url.scheme}://{authority.strip().lower()}{target}"


class RequestSigner:
    """An ``auth=`` callable for ``httpx.AsyncClient`` and ``httpx2.AsyncClient``.

    Calling it on a request adds ``Content-Digest`` (with a body),
    ``Signature-Input`` and ``Signature`` (RFC 9421 s4.1-4.2, label ``baton``)
    and returns the same request object. It is stateless apart from the key,
    so one instance may serve many clients and concurrent requests.

    Raises :class:`~protocol.errors.InvalidRequest` for a request it cannot
    sign faithfully (unread streaming body, non-ASCII target, two ``Host``
    fields) and the translated :class:`~protocol.errors.BatonError` for one the
    RFC 9421 profile refuses (e.g. a covered header holding non-ASCII text, a
    target URI outside RFC 3986 such as a raw ``[`` in the query).
    """

    __slots__ = ("_clock", "_cover", "_key", "_token")

    def __init__(
        self,
        key: PrivateKey,
        *,
        clock: Callable[[], float] = time.time,
        token: Callable[[int], str] = secrets.token_urlsafe,
        cover: Sequence[str] = DEFAULT_COVER,
    ) -> None:
        if key.use != "sig":
            raise ValueError("RequestSigner needs a signing key, not an encryption key")
        self._key = key
        self._clock = clock
        self._token = token
        self._cover = _validated_cover(cover)

    @property
    def keyid(self) -> str:
        """The ``keyid`` every signature names (the key's RFC 7638 thumbprint)."""
        return self._key.kid

    def components(self, fields: Sequence[tuple[str, str]], *, has_body: bool) -> tuple[str, ...]:
        """The covered components for a request with ``fields``, in signing order:
        the base three, ``content-digest`` with a body, then the ``cover``
        headers that are present."""
        present = {name.lower() for name, _ in fields}
        extra = tuple(name for name in self._cover if name in present)
        digest = ("content-digest",) if has_body else ()
        return (*BASE_COMPONENTS, *digest, *extra)

    def __call__(self, request: RequestT) -> RequestT:
        """Sign ``request`` in place and return it (the ``FunctionAuth`` contract)."""
        body = _body_of(request)
        for name in _OWN_FIELDS:
            if name in request.headers:
                del request.headers[name]
        if body:
            request.headers["content-digest"] = content_digest(body)
        fields = request.headers.multi_items()
        components = self.components(fields, has_body=bool(body))
        message = HttpRequest(request.method, _target_uri(request, fields), fields)
        try:
            signature_input, signature = sign(
                message,
                self._key,
                components=components,
                created=int(self._clock()),
                nonce=self._token(16),
                label=SIGNATURE_LABEL,
            )
        except KeysError as exc:
            raise from_keys_error(exc) from exc
        request.headers["signature-input"] = signature_input
        request.headers["signature"] = signature
        return request

    def __repr__(self) -> str:
        return f"RequestSigner(keyid={self._key.kid!r}, cover={self._cover!r})"
