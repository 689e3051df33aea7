"""SSRF-safe push-notification webhook URLs (A2A v1.0 §4.3, §13.2; threats P09, P10).

An agent gives the gateway a webhook URL; the gateway later POSTs task
updates to it. Two checks stand between that URL and an internal service:

1. :func:`check_webhook_url`, when the push configuration is set: the URL must
   parse under a small strict grammar, name an allow-listed host, and, if the
   host is an IP literal, a public one;
2. :func:`check_resolved_address`, at connect time, on *every* address the
   host resolves to (DNS can answer differently from one lookup to the next:
   rebinding). The gateway connects to the address it checked, never
   re-resolves, and follows no redirects.

URL grammar (a strict subset of RFC 3986 s3 and of the WHATWG URL standard,
on which both agree, so the host checked here is the host any client connects
to): ``scheme "://" host [":" port] [path-and-query]``. ASCII only, at most
:data:`MAX_URL_LENGTH` characters; no whitespace, controls, backslashes,
userinfo (``@``) or fragment (``#``); scheme ``https`` (``http`` only when
allowed), case-insensitive; port ``1..65535`` without leading zeros.

The host is parsed the way browsers (WHATWG "host parsing") and libc's
``inet_aton`` do, so obfuscated spellings of an address are recognised for
what they are: percent-decoding first (``%31%32%37.0.0.1``), lowercasing, one
trailing dot dropped, and a host whose last label is numeric is an IPv4
address in any of the legacy forms: decimal ``2130706433``, octal
``0177.0.0.1``, hex ``0x7f.1``, and the 1-3 part short forms (``127.1``).
IPv6 literals are bracketed; zone ids (``%25eth0``, RFC 6874) are refused;
IPv4-mapped addresses (``::ffff:127.0.0.1``, ``::ffff:7f00:1``) are the IPv4
address they carry. Non-ASCII hosts are refused (allow-list IDNs in their
``xn--`` form).

Public means globally routable unicast (RFC 6890 and the IANA special-purpose
registries): everything in :data:`IPV4_NOT_PUBLIC` and :data:`IPV6_NOT_PUBLIC`
is refused; an IPv6 address outside global unicast ``2000::/3`` is refused;
6to4 (``2002::/16``) and NAT64 (``64:ff9b::/96``, RFC 6052) addresses are
judged by the IPv4 address they embed.

Every refusal raises :class:`UnsafeWebhook` whose detail names the host (never
the path or query, which may carry a token) and the precise reason.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final

from protocol.errors import ConfigurationError, UnsafeWebhook

__all__ = [
    "IPV4_NOT_PUBLIC",
    "IPV6_NOT_PUBLIC",
    "MAX_URL_LENGTH",
    "WebhookTarget",
    "check_allow_list",
    "check_resolved_address",
    "check_webhook_url",
    "is_public_address",
    "non_public_reason",
]

MAX_URL_LENGTH: Final = 2048
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

#: IPv4 ranges that are not public, most specific first (RFC 6890, RFC 6598,
#: RFC 5737, RFC 2544, RFC 5771, RFC 1112, RFC 919).
IPV4_NOT_PUBLIC: Final[tuple[tuple[IPv4Network, str], ...]] = tuple(
    (IPv4Network(network), label)
    for network, label in (
        ("0.0.0.0/32", "unspecified"),
        ("0.0.0.0/8", "'this network' (RFC 6890)"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("100.64.0.0/10", "shared address space / CGNAT (RFC 6598)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.169.254/32", "link-local cloud metadata endpoint"),
        ("169.254.0.0/16", "link-local (RFC 3927)"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
        ("192.0.2.0/24", "documentation TEST-NET-1 (RFC 5737)"),
        ("192.88.99.0/24", "6to4 relay anycast, deprecated (RFC 7526)"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("198.18.0.0/15", "benchmarking (RFC 2544)"),
        ("198.51.100.0/24", "documentation TEST-NET-2 (RFC 5737)"),
        ("203.0.113.0/24", "documentation TEST-NET-3 (RFC 5737)"),
        ("224.0.0.0/4", "multicast (RFC 5771)"),
        ("255.255.255.255/32", "limited broadcast (RFC 919)"),
        ("240.0.0.0/4", "reserved (RFC 1112)"),
    )
)

#: IPv6 ranges that are not public, most specific first (RFC 4291, RFC 6890,
#: RFC 4193, RFC 3879, RFC 3849, RFC 9637, RFC 8215). Anything outside
#: ``2000::/3`` is refused as well; see :func:`non_public_reason`.
IPV6_NOT_PUBLIC: Final[tuple[tuple[IPv6Network, str], ...]] = tuple(
    (IPv6Network(network), label)
    for network, label in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible, deprecated (RFC 4291 s2.5.5.1)"),
        ("::ffff:0:0:0/96", "IPv4-translated (RFC 2765)"),
        ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
        ("100::/64", "discard-only (RFC 6666)"),
        ("2001:db8::/32", "documentation (RFC 3849)"),
        ("2001::/23", "IETF protocol assignments: Teredo, benchmarking, ORCHID (RFC 6890)"),
        ("3fff::/20", "documentation (RFC 9637)"),
        ("fc00::/7", "unique local (RFC 4193)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local, deprecated (RFC 3879)"),
        ("ff00::/8", "multicast"),
    )
)
_GLOBAL_UNICAST: Final = IPv6Network("2000::/3")
_SIX_TO_FOUR: Final = IPv6Network("2002::/16")
_NAT64: Final = IPv6Network("64:ff9b::/96")
_MAPPED: Final = IPv6Network("::ffff:0:0/96")


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A webhook URL that passed :func:`check_webhook_url`.

    ``url`` is the normalised URL (lowercase scheme and host, IPv4 in dotted
    form, default port omitted, path and query as given): send to this one, not
    the original. ``host`` is the normalised host name or the address in its
    canonical text (IPv6 without brackets); ``ip`` is that address for an IP
    literal and ``None`` for a name, which the gateway resolves and checks with
    :func:`check_resolved_address` before connecting.
    """

    url: str
    host: str
    port: int
    ip: IPv4Address | IPv6Address | None


# --------------------------------------------------------------------------- addresses


def non_public_reason(ip: IPv4Address | IPv6Address) -> str | None:
    """Why ``ip`` is not a public unicast address, or ``None`` when it is."""
    if isinstance(ip, IPv4Address):
        return next((label for network, label in IPV4_NOT_PUBLIC if ip in network), None)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        reason = non_public_reason(embedded)
        return None if reason is None else f"embeds {embedded}: {reason}"
    for network, label in IPV6_NOT_PUBLIC:
        if ip in network:
            return label
    if ip not in _GLOBAL_UNICAST:
        return "reserved (outside global unicast 2000::/3)"
    return None


def _embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv4-mapped, 6to4 or NAT64 address stands for."""
    if ip in _MAPPED or ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR:
        return IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)
    return None


def is_public_address(ip: IPv4Address | IPv6Address) -> bool:
    """True for a globally routable unicast address (module docstring)."""
    return non_public_reason(ip) is None


def _trusted(address: IPAddress, trusted_networks: Collection[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in trusted_networks)


def check_resolved_address(ip: str, *, trusted_networks: Collection[IPNetwork] = ()) -> None:
    """At connect time: raise :class:`UnsafeWebhook` unless the resolved address
    ``ip`` (canonical text, as a resolver returns it) is public, or inside one of
    the ``trusted_networks`` the operator configured (an internal webhook
    receiver). A scoped address (``fe80::1%eth0``) is refused outright."""
    if "%" in ip:
        raise UnsafeWebhook(f"resolved address {ip!r} carries a zone id")
    try:
        address: IPAddress = IPv6Address(ip) if ":" in ip else IPv4Address(ip)
    except AddressValueError as exc:
        raise UnsafeWebhook(f"resolved address {ip!r} does not parse") from exc
    if _trusted(address, trusted_networks):
        return
    reason = non_public_reason(address)
    if reason is not None:
        raise UnsafeWebhook(f"resolved address {address} is not public: {reason}")


# --------------------------------------------------------------------------- hosts

_URL_CHARS: Final = re.compile(r"[!-~]*\Z")  # printable ASCII, no space
_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_PORT: Final = re.compile(r"[1-9][0-9]{0,4}\Z")
_PCT: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_PCT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PATH: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*\Z")
_LABEL: Final = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_IPV6_CHARS: Final = re.compile(r"[0-9a-f:.]+\Z")
_DECIMAL: Final = re.compile(r"[0-9]+\Z")
_HEX_NUMBER: Final = re.compile(r"0x[0-9a-f]*\Z")
_OCTAL: Final = re.compile(r"0[0-7]*\Z")
_MAX_HOST: Final = 253
_SPECIAL_NAMES: Final = ("localhost",)  # RFC 6761 s6.3: always loopback


def _percent_decode_host(raw: str) -> str:
    """WHATWG host parsing step: percent-decode, then only ASCII may remain."""
    if _BAD_PCT.search(raw):
        raise UnsafeWebhook(f"host {raw!r}: malformed percent-encoding")
    decoded = _PCT.sub(lambda match: chr(int(match.group(1), 16)), raw)
    if not decoded.isascii():
        raise UnsafeWebhook(f"host {raw!r}: non-ASCII (use the xn-- form)")
    return decoded


def _ipv4_number(part: str) -> int | None:
    """One part of a legacy IPv4 host (WHATWG "IPv4 number parser", inet_aton):
    ``0x`` hex, leading-``0`` octal, or decimal; ``None`` when it is none."""
    if _HEX_NUMBER.match(part):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if _OCTAL.match(part) else None
    return int(part) if _DECIMAL.match(part) else None


def _ends_in_number(host: str) -> bool:
    """WHATWG "ends in a number checker": the last label decides IPv4-ness."""
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()
    last = labels[-1]
    return bool(_DECIMAL.match(last) or _HEX_NUMBER.match(last))


def _parse_ipv4(host: str) -> IPv4Address:
    """WHATWG "IPv4 parser": 1-4 parts, the last one fills the remaining bytes."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if len(parts) > 4:
        raise UnsafeWebhook(f"host {host!r}: more than four IPv4 parts")
    numbers = []
    for part in parts:
        number = _ipv4_number(part)
        if number is None:
            raise UnsafeWebhook(f"host {host!r}: {part!r} is not an IPv4 number")
        numbers.append(number)
    *leading, last = numbers
    if any(number > 255 for number in leading) or last >= 256 ** (5 - len(numbers)):
        raise UnsafeWebhook(f"host {host!r}: IPv4 part out of range")
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return IPv4Address(value)


def _parse_ipv6(literal: str) -> IPAddress:
    """A bracketed IPv6 literal (without brackets); IPv4-mapped becomes IPv4."""
    if "%" in literal:
        raise UnsafeWebhook(f"host [{literal}]: IPv6 zone ids are not allowed")
    lowered = literal.lower()
    if not _IPV6_CHARS.match(lowered):
        raise UnsafeWebhook(f"host [{literal}]: not an IPv6 address")
    try:
        address = IPv6Address(lowered)
    except AddressValueError as exc:
        raise UnsafeWebhook(f"host [{literal}]: not an IPv6 address") from exc
    return address.ipv4_mapped or address


def _parse_name_or_ipv4(raw: str) -> str | IPv4Address:
    """A non-bracketed host: a DNS name (normalised) or an IPv4 address."""
    host = _percent_decode_host(raw).lower()
    if not host:
        raise UnsafeWebhook("URL has an empty host")
    if _ends_in_number(host):
        return _parse_ipv4(host)
    name = host.removesuffix(".")
    if len(name) > _MAX_HOST or not all(_LABEL.match(label) for label in name.split(".")):
        raise UnsafeWebhook(f"host {raw!r} is not a valid DNS name")
    if any(name == special or name.endswith("." + special) for special in _SPECIAL_NAMES):
        raise UnsafeWebhook(f"host {name!r} is a special-use name that resolves to loopback")
    return name


def _parse_host(raw: str) -> str | IPAddress:
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise UnsafeWebhook(f"host {raw!r}: unterminated IPv6 literal")
        return _parse_ipv6(raw[1:-1])
    if ":" in raw or "[" in raw or "]" in raw:
        raise UnsafeWebhook(f"host {raw!r}: an IPv6 address must be bracketed")
    return _parse_name_or_ipv4(raw)


# --------------------------------------------------------------------------- allow-list


@dataclass(frozen=True, slots=True)
class _AllowList:
    names: frozenset[str]
    suffixes: tuple[str, ...]  # ".example.com" for "*.example.com"
    addresses: frozenset[IPAddress]

    def allows(self, host: str | IPAddress) -> bool:
        if not isinstance(host, str):
            return host in self.addresses
        return host in self.names or host.endswith(self.suffixes)


def _allow_list(entries: Collection[str]) -> _AllowList:
    names: set[str] = set()
    suffixes: list[str] = []
    addresses: set[IPAddress] = set()
    if isinstance(entries, str):
        raise ConfigurationError("webhook allow-list is one string, not a collection of hosts")
    for entry in entries:
        if not entry or not entry.isascii() or "%" in entry:
            raise ConfigurationError(f"webhook allow-list entry {entry!r} is not a host")
        pattern = entry.startswith("*.")
        try:
            host = _parse_host(entry[2:] if pattern else entry)
        except UnsafeWebhook as exc:
            raise ConfigurationError(f"webhook allow-list entry {entry!r}: {exc.detail}") from exc
        if not isinstance(host, str):
            if pattern:
                raise ConfigurationError(f"webhook allow-list entry {entry!r}: '*.' before an IP")
            addresses.add(host)
        elif pattern:
            if "." not in host:
                raise ConfigurationError(
                    f"webhook allow-list entry {entry!r} would allow a whole top-level domain"
                )
            suffixes.append("." + host)
        else:
            names.add(host)
    return _AllowList(frozenset(names), tuple(suffixes), frozenset(addresses))


def check_allow_list(allowed_hosts: Collection[str]) -> None:
    """Validate an allow-list at start-up (:class:`ConfigurationError` naming the bad
    entry). Entries: an exact host (``hooks.example.com``), a pattern
    ``*.example.com`` (strict subdomains at any depth, not ``example.com`` itself),
    or an IP literal (``203.0.113.7``, ``[2001:db8::7]``), which must still be public
    when a URL names it. An empty list allows nothing."""
    _allow_list(allowed_hosts)


# --------------------------------------------------------------------------- URLs


def _split_scheme(url: str, allow_http: bool) -> tuple[str, str]:
    match = _SCHEME.match(url)
    if match is None:
        raise UnsafeWebhook("URL has no scheme")
    scheme = match.group(1).lower()
    allowed = ("https", "http") if allow_http else ("https",)
    if scheme not in allowed:
        raise UnsafeWebhook(f"scheme {scheme!r} not allowed (allowed: {', '.join(allowed)})")
    rest = url[match.end() :]
    if not rest.startswith("//"):
        raise UnsafeWebhook("expected '//' after the scheme")
    return scheme, rest[2:]


def _split_port(authority: str, scheme: str) -> tuple[str, int]:
    """``host[:port]``; the port, when given, is 1..65535 without leading zeros."""
    host, sep, port_text = (
        authority.rpartition(":") if _has_port(authority) else (authority, "", "")
    )
    if not sep:
        return authority, _DEFAULT_PORTS[scheme]
    if not _PORT.match(port_text) or int(port_text) > 65535:
        raise UnsafeWebhook(f"port {port_text!r} is not in 1..65535")
    return host, int(port_text)


def _has_port(authority: str) -> bool:
    if authority.startswith("["):
        return authority.find("]:") != -1
    return ":" in authority


def _check_characters(url: str) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeWebhook(f"URL of {len(url)} characters exceeds {MAX_URL_LENGTH}")
    if not _URL_CHARS.match(url):
        raise UnsafeWebhook("URL holds whitespace, control or non-ASCII characters")
    if "\\" in url:
        raise UnsafeWebhook("URL holds a backslash")
    if "#" in url:
        raise UnsafeWebhook("URL has a fragment")


def _url_host(host: str | IPAddress) -> str:
    if isinstance(host, IPv6Address):
        return f"[{host}]"
    return str(host)


def check_webhook_url(
    url: str,
    *,
    allowed_hosts: Collection[str],
    allow_http: bool = False,
    trusted_networks: Collection[IPNetwork] = (),
) -> WebhookTarget:
    """Check a push-notification URL (A2A §13.2) under the rules of the module
    docstring and return where to send. Raises :class:`UnsafeWebhook` (and
    :class:`ConfigurationError` for a malformed ``allowed_hosts``). An IP
    literal inside ``trusted_networks`` (operator configuration, empty by
    default) need not be public; it must still be allow-listed."""
    allow_list = _allow_list(allowed_hosts)
    _check_characters(url)
    scheme, rest = _split_scheme(url, allow_http)
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i != -1), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if "@" in authority:
        raise UnsafeWebhook("URL carries userinfo")
    raw_host, port = _split_port(authority, scheme)
    host = _parse_host(raw_host)
    if not _PATH.match(path) or _BAD_PCT.search(path):
        raise UnsafeWebhook(f"host {raw_host!r}: path or query holds characters not allowed")
    if not isinstance(host, str) and not _trusted(host, trusted_networks):
        reason = non_public_reason(host)
        if reason is not None:
            raise UnsafeWebhook(f"host {raw_host!r} is {host}: {reason}")
    if not allow_list.allows(host):
        raise UnsafeWebhook(f"host {_url_host(host)!r} is not in the webhook allow-list")
    port_part = "" if port == _DEFAULT_PORTS[scheme] else f":{port}"
    normalised_path = path if path.startswith("/") else "/" + path
    return WebhookTarget(
        url=f"{scheme}://{_url_host(host)}{port_part}{normalised_path}",
        host=str(host),
        port=port,
        ip=None if isinstance(host, str) else host,
    )
