"""protocol/webhooks.py: SSRF-safe push-notification URLs (A2A §13.2; threats P09, P10)."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ConfigurationError, UnsafeWebhook
from protocol.webhooks import (
    MAX_URL_LENGTH,
    WebhookTarget,
    check_allow_list,
    check_resolved_address,
    check_webhook_url,
    is_public_address,
    non_public_reason,
)
from tests.protocol._support import DETERMINISTIC

ALLOWED = frozenset({"hooks.example.com", "*.example.org", "8.8.8.8", "[2606:4700::1111]"})


def _refused(url: str, *, allowed: frozenset[str] = ALLOWED, allow_http: bool = False) -> str:
    """The detail of the UnsafeWebhook raised for ``url``."""
    with pytest.raises(UnsafeWebhook) as info:
        check_webhook_url(url, allowed_hosts=allowed, allow_http=allow_http)
    assert info.value.code == "unsafe_webhook"
    assert info.value.http_status == 400
    return info.value.detail


# --------------------------------------------------------------------------- accepted


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://hooks.example.com/a2a/push?task=1",
            WebhookTarget(
                "https://hooks.example.com/a2a/push?task=1", "hooks.example.com", 443, None
            ),
        ),
        (
            "HTTPS://HOOKS.Example.COM.:8443",
            WebhookTarget("https://hooks.example.com:8443/", "hooks.example.com", 8443, None),
        ),
        (
            "https://hooks.example.com:443?x=1",
            WebhookTarget("https://hooks.example.com/?x=1", "hooks.example.com", 443, None),
        ),
        (
            "https://a.example.org/",
            WebhookTarget("https://a.example.org/", "a.example.org", 443, None),
        ),
        (
            "https://deep.er.example.org/h",
            WebhookTarget("https://deep.er.example.org/h", "deep.er.example.org", 443, None),
        ),
        (
            "https://ex%61mple.example.org/",
            WebhookTarget("https://example.example.org/", "example.example.org", 443, None),
        ),
        (
            "https://8.8.8.8/p",
            WebhookTarget("https://8.8.8.8/p", "8.8.8.8", 443, IPv4Address("8.8.8.8")),
        ),
        (
            "https://134744072/p",  # 8.8.8.8 as one decimal number
            WebhookTarget("https://8.8.8.8/p", "8.8.8.8", 443, IPv4Address("8.8.8.8")),
        ),
        (
            "https://[::ffff:808:808]:8443/",
            WebhookTarget("https://8.8.8.8:8443/", "8.8.8.8", 8443, IPv4Address("8.8.8.8")),
        ),
        (
            "https://[2606:4700:0:0::1111]/",
            WebhookTarget(
                "https://[2606:4700::1111]/", "2606:4700::1111", 443, IPv6Address("2606:4700::1111")
            ),
        ),
    ],
)
def test_accepted_urls_are_normalised(url: str, expected: WebhookTarget) -> None:
    assert check_webhook_url(url, allowed_hosts=ALLOWED) == expected
    assert check_webhook_url(expected.url, allowed_hosts=ALLOWED) == expected  # idempotent


def test_http_only_when_allowed() -> None:
    assert "scheme 'http' not allowed" in _refused("http://hooks.example.com/")
    target = check_webhook_url("http://hooks.example.com/", allowed_hosts=ALLOWED, allow_http=True)
    assert (target.url, target.port) == ("http://hooks.example.com/", 80)


# --------------------------------------------------------------------------- allow-list


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/",  # a pattern matches subdomains only
        "https://evilexample.org/",
        "https://example.org.evil.net/",
        "https://hooks.example.com.evil.net/",
        "https://sub.hooks.example.com/",  # exact entries do not cover subdomains
        "https://evil.com?@hooks.example.com/",  # the authority ends at '?'
        "https://evil.com/@hooks.example.com",
        "https://8.8.4.4/",
        "https://[2606:4700::1001]/",
    ],
)
def test_hosts_outside_the_allow_list_are_refused(url: str) -> None:
    assert "not in the webhook allow-list" in _refused(url)


def test_empty_allow_list_allows_nothing() -> None:
    assert "not in the webhook allow-list" in _refused(
        "https://hooks.example.com/", allowed=frozenset()
    )


def test_wildcards_never_match_ip_literals() -> None:
    allowed = frozenset({"*.example.org"})
    assert "not in the webhook allow-list" in _refused("https://8.8.8.8/", allowed=allowed)


@pytest.mark.parametrize(
    "entry",
    ["", "*", "*.", "*.com", "*.8.8.8.8", "a.com:443", "::1", "exa mple.com", "localhost", "é.com"],
)
def test_malformed_allow_list_entries_are_configuration_errors(entry: str) -> None:
    with pytest.raises(ConfigurationError):
        check_allow_list([entry])
    with pytest.raises(ConfigurationError):
        check_webhook_url("https://hooks.example.com/", allowed_hosts=[entry])


def test_allow_list_given_as_one_string_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="one string"):
        check_allow_list("hooks.example.com")


def test_well_formed_allow_list_passes() -> None:
    check_allow_list(ALLOWED)
    check_allow_list(["HOOKS.example.com.", "[2001:db8::1]", "203.0.113.7"])


def test_allow_listed_private_address_is_still_refused() -> None:
    allowed = frozenset({"127.0.0.1", "10.0.0.5", "[::1]"})
    assert "loopback" in _refused("https://127.0.0.1/", allowed=allowed)
    assert "private" in _refused("https://10.0.0.5/", allowed=allowed)
    assert "loopback" in _refused("https://[::1]/", allowed=allowed)


# --------------------------------------------------------------------------- obfuscation


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",  # decimal
        "0177.0.0.1",  # octal
        "0177.0000.0000.0001",
        "017700000001",
        "0x7f.1",  # hex, short form
        "0x7F000001",
        "0X7f.0x0.0X0.0x1",
        "127.1",  # short forms
        "127.0.1",
        "127.0.0.1.",  # trailing dot
        "%31%32%37.0.0.1",  # percent-encoded
        "%31%32%37%2e%30%2e%30%2e%31",
        "[::ffff:127.0.0.1]",  # IPv4-mapped
        "[::ffff:7f00:1]",
        "[::FFFF:7F00:0001]",
        "[0:0:0:0:0:ffff:127.0.0.1]",
        "[2002:7f00:1::]",  # 6to4 embedding 127.0.0.1
        "[64:ff9b::7f00:1]",  # NAT64 embedding 127.0.0.1
        "[64:ff9b::127.0.0.1]",
    ],
)
def test_obfuscated_loopback_is_recognised(host: str) -> None:
    detail = _refused(f"https://{host}/hook", allowed=frozenset({"127.0.0.1"}))
    assert "127.0.0.1" in detail
    assert "loopback" in detail


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("169.254.169.254", "metadata"),
        ("2852039166", "metadata"),  # 169.254.169.254 in decimal
        ("0xa9.0xfe.0xa9.0xfe", "metadata"),
        ("0251.0376.0251.0376", "metadata"),
        ("[::ffff:a9fe:a9fe]", "metadata"),
        ("10.1", "private"),  # 10.0.0.1
        ("0xa000001", "private"),
        ("0", "unspecified"),
        ("0x", "unspecified"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - a URL host, nothing binds
        ("[::]", "unspecified"),
        ("[::1]", "loopback"),
        ("[::127.0.0.1]", "IPv4-compatible"),
        ("[::7f00:1]", "IPv4-compatible"),
        ("[2002:a00:1::1]", "embeds 10.0.0.1: private"),
        ("[64:ff9b::192.168.1.1]", "embeds 192.168.1.1: private"),
        ("[fe80::1]", "link-local"),
        ("[FE80::1]", "link-local"),
        ("[fc00::1]", "unique local"),
        ("[fd12:3456::1]", "unique local"),
        ("[fec0::1]", "site-local"),
        ("[ff02::1]", "multicast"),
        ("[2001:db8::1]", "documentation"),
        ("[2001::1]", "IETF protocol assignments"),  # Teredo
        ("[::ffff:0:7f00:1]", "IPv4-translated"),
    ],
)
def test_obfuscated_non_public_hosts(host: str, reason: str) -> None:
    assert reason in _refused(f"https://{host}/", allowed=frozenset({"*.example.org"}))


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("[fe80::1%25eth0]", "zone id"),
        ("[fe80::1%eth0]", "zone id"),
        ("::1", "bracketed"),
        ("[::1", "unterminated"),
        ("[::g]", "not an IPv6 address"),
        ("[127.0.0.1]", "not an IPv6 address"),
        ("1.2.3.4.5", "more than four"),
        ("256.1.1.1", "out of range"),
        ("1.2.3.256", "out of range"),
        ("1.16777216", "out of range"),
        ("0x100000000", "out of range"),
        ("1.2.3.08", "not an IPv4 number"),
        ("1..3", "not an IPv4 number"),
        ("1.2.3.4..", "not a valid DNS name"),
        ("%zz.example.org", "percent-encoding"),
        ("%C3%A9.example.org", "non-ASCII"),
        ("a%2fb.example.org", "not a valid DNS name"),
        ("a%40b.example.org", "not a valid DNS name"),
        ("-a.example.org", "not a valid DNS name"),
        ("a_b.example.org", "not a valid DNS name"),
        ("a..example.org", "not a valid DNS name"),
        ("example.org..", "not a valid DNS name"),
        ("x" * 64 + ".example.org", "not a valid DNS name"),
        ("localhost", "special-use"),
        ("LOCALHOST.", "special-use"),
        ("api.localhost", "special-use"),
    ],
)
def test_malformed_hosts(host: str, reason: str) -> None:
    assert reason in _refused(f"https://{host}/", allowed=frozenset({"*.example.org"}))


# --------------------------------------------------------------------------- URL structure


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://user:pw@hooks.example.com/", "userinfo"),
        ("https://hooks.example.com@evil.com/", "userinfo"),
        ("https://@hooks.example.com/", "userinfo"),
        ("https://hooks.example.com/#frag", "fragment"),
        ("https://evil.com#@hooks.example.com", "fragment"),
        ("https://hooks.example.com\\@evil.com/", "backslash"),
        ("https:\\\\hooks.example.com/", "backslash"),
        ("https://hooks.example.com /", "whitespace"),
        ("https://hooks.example.com/\t", "whitespace"),
        ("https://hooks.example.com/\n", "whitespace"),
        (" https://hooks.example.com/", "whitespace"),
        ("https://h\u043e\u043eks.example.com/", "non-ASCII"),  # Cyrillic o
        ("https://\uff11\uff12\uff17.0.0.1/", "non-ASCII"),  # full-width digits
        ("ftp://hooks.example.com/", "scheme 'ftp'"),
        ("javascript:alert(1)", "scheme 'javascript'"),
        ("//hooks.example.com/", "no scheme"),
        ("hooks.example.com", "no scheme"),
        ("https:/hooks.example.com/", "'//'"),
        ("https:hooks.example.com/", "'//'"),
        ("https:///hooks.example.com/", "empty host"),
        ("https://?x", "empty host"),
        ("https://hooks.example.com:0/", "port '0'"),
        ("https://hooks.example.com:65536/", "port '65536'"),
        ("https://hooks.example.com:0443/", "port '0443'"),
        ("https://hooks.example.com:+443/", "port '+443'"),
        ("https://hooks.example.com:/", "port ''"),
        ("https://hooks.example.com:443:443/", "must be bracketed"),
        ("https://[2606:4700::1111]:/", "port ''"),
        ("https://hooks.example.com/a b", "whitespace"),
        ("https://hooks.example.com/%zz", "path or query"),
        ("https://hooks.example.com/<script>", "path or query"),
        ("https://hooks.example.com/" + "a" * MAX_URL_LENGTH, "exceeds"),
    ],
)
def test_malformed_urls(url: str, reason: str) -> None:
    assert reason in _refused(url)


def test_detail_never_carries_the_path_or_query() -> None:
    detail = _refused("https://127.0.0.1/hook?token=s3cret", allowed=frozenset({"127.0.0.1"}))
    assert "s3cret" not in detail
    assert "hook" not in detail


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.0",
        "10.255.255.255",
        "172.16.0.0",
        "172.31.255.255",
        "192.168.0.1",
        "127.255.255.254",
        "169.254.0.1",
        "100.64.0.0",
        "100.127.255.255",
        "0.1.2.3",
        "192.0.0.8",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.255",
        "198.18.0.1",
        "198.19.255.255",
        "192.88.99.1",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::8.8.8.8",
        "::ffff:10.0.0.1",
        "64:ff9b::10.0.0.1",
        "64:ff9b:1::1",
        "100::1",
        "2001:2::1",
        "2001:10::1",
        "2001:db8::",
        "3fff::1",
        "4000::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "fc00::1",
        "ff0e::1",
    ],
)
def test_not_public(address: str) -> None:
    ip = ip_address(address)
    assert not is_public_address(ip)
    assert non_public_reason(ip)
    with pytest.raises(UnsafeWebhook, match="is not public"):
        check_resolved_address(address)


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "9.255.255.255",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "126.255.255.255",
        "128.0.0.0",
        "169.253.255.255",
        "169.255.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.167.255.255",
        "192.169.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.255",
        "2606:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",
        "2002:808:808::1",
        "64:ff9b::8.8.8.8",
    ],
)
def test_public(address: str) -> None:
    assert is_public_address(ip_address(address))
    check_resolved_address(address)


def test_metadata_endpoint_is_named() -> None:
    assert "metadata" in (non_public_reason(IPv4Address("169.254.169.254")) or "")


@pytest.mark.parametrize("text", ["fe80::1%eth0", "0177.0.0.1", "127.1", "2130706433", "", "x"])
def test_resolved_address_must_be_canonical_text(text: str) -> None:
    with pytest.raises(UnsafeWebhook):
        check_resolved_address(text)


# --------------------------------------------------------------------------- properties


def _part(number: int, base: str) -> str:
    return {
        "dec": str(number),
        "hex": f"0x{number:x}",
        "HEX": f"0X{number:X}",
        "oct": f"0{number:o}",
    }[base]


_BASES = st.sampled_from(["dec", "hex", "HEX", "oct"])


@st.composite
def ipv4_spellings(draw: st.DrawFn) -> tuple[int, str]:
    """An IPv4 address as an int, and one of the textual forms a browser or
    ``inet_aton`` reads as that address."""
    value = draw(st.integers(min_value=0, max_value=2**32 - 1))
    octets = value.to_bytes(4, "big")
    forms: list[Callable[[], str]] = [
        lambda: ".".join(str(octet) for octet in octets),
        lambda: _part(value, draw(_BASES)),
        lambda: ".".join(_part(octet, draw(_BASES)) for octet in octets),
        lambda: f"{_part(octets[0], draw(_BASES))}.{_part(value & 0xFFFFFF, draw(_BASES))}",
        lambda: ".".join(
            [
                _part(octets[0], draw(_BASES)),
                _part(octets[1], draw(_BASES)),
                _part(value & 0xFFFF, draw(_BASES)),
            ]
        ),
        lambda: ".".join(str(octet) for octet in octets) + ".",
        lambda: "".join(f"%{ord(c):02X}" for c in ".".join(str(octet) for octet in octets)),
        lambda: f"[::ffff:{IPv4Address(value)}]",
        lambda: f"[::FFFF:{value >> 16:X}:{value & 0xFFFF:x}]",
        lambda: f"[0:0:0:0:0:ffff:{value >> 16:04x}:{value & 0xFFFF:04x}]",
    ]
    return value, draw(st.sampled_from(forms))()


@DETERMINISTIC
@given(ipv4_spellings())
def test_every_ipv4_spelling_classifies_as_its_address(case: tuple[int, str]) -> None:
    value, host = case
    ip = ip_address(value)
    url = f"https://{host}/hook"
    if is_public_address(ip):
        target = check_webhook_url(url, allowed_hosts={str(ip)})
        assert target.ip == ip
        assert target.host == str(ip)
        assert target.url == f"https://{ip}/hook"
    else:
        detail = _refused(url, allowed=frozenset({str(ip)}))
        assert f"is {ip}: " in detail


@DETERMINISTIC
@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_ipv4_is_at_least_as_strict_as_the_standard_library(value: int) -> None:
    ip = IPv4Address(value)
    if not ip.is_global or ip.is_multicast or ip.is_reserved:
        assert not is_public_address(ip)


@DETERMINISTIC
@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_ipv6_literals_classify_as_their_address(value: int) -> None:
    ip = IPv6Address(value)
    if ip.ipv4_mapped is not None:
        return  # covered by the IPv4 property
    for spelling in (ip.compressed, ip.exploded.upper()):
        url = f"https://[{spelling}]/"
        if is_public_address(ip):
            assert check_webhook_url(url, allowed_hosts={f"[{ip}]"}).ip == ip
        else:
            assert str(ip) in _refused(url, allowed=frozenset({f"[{ip}]"}))


_EMBEDDING = tuple(IPv6Network(n) for n in ("::ffff:0:0/96", "2002::/16", "64:ff9b::/96"))


@DETERMINISTIC
@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_ipv6_is_at_least_as_strict_as_the_standard_library(value: int) -> None:
    """Outside the ranges judged by their embedded IPv4 address."""
    ip = IPv6Address(value)
    if any(ip in network for network in _EMBEDDING):
        return
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_site_local:
        assert not is_public_address(ip)


# ------------------------------------------------------------ operator-trusted networks
def test_trusted_networks_admit_internal_receivers_and_nothing_else() -> None:
    from ipaddress import ip_network

    from protocol.errors import UnsafeWebhook
    from protocol.webhooks import check_resolved_address, check_webhook_url

    trusted = (ip_network("10.1.0.0/16"),)
    target = check_webhook_url(
        "https://10.1.2.3:8443/hook", allowed_hosts=["10.1.2.3"], trusted_networks=trusted
    )
    assert (target.host, target.port) == ("10.1.2.3", 8443)
    check_resolved_address("10.1.9.9", trusted_networks=trusted)
    for outside in ("10.2.0.1", "127.0.0.1", "169.254.169.254"):
        try:
            check_resolved_address(outside, trusted_networks=trusted)
        except UnsafeWebhook:
            continue
        raise AssertionError(f"{outside} passed outside the trusted network")
    # Trusted is not allow-listed: the host must still be on the list.
    try:
        check_webhook_url(
            "https://10.1.2.4/hook", allowed_hosts=["10.1.2.3"], trusted_networks=trusted
        )
    except UnsafeWebhook:
        pass
    else:
        raise AssertionError("a trusted but unlisted host passed")
