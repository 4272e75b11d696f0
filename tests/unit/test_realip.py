"""set_real_ip_from (SPEC 2.5) and the client address it yields (SPEC 3.1)."""

from __future__ import annotations

import pytest

from mailgate.protocol.proxy_protocol import ProxyHeader
from mailgate.realip import TrustedProxies, real_client

V1 = ProxyHeader(1, "PROXY", "TCP4", "192.0.2.7", 40000, "127.0.0.1", 12115, consumed=44)
V1_IPV6 = ProxyHeader(1, "PROXY", "TCP6", "2001:DB8:0::7", 5, "::1", 110, consumed=40)
UNKNOWN = ProxyHeader(1, "PROXY", "UNKNOWN", consumed=15)
LOCAL = ProxyHeader(2, "LOCAL", "UNSPEC", consumed=16)


def trusted(*values: str) -> TrustedProxies:
    return TrustedProxies.from_directive_values(values)


# --- entries ---------------------------------------------------------------------


def test_entries_of_every_kind() -> None:
    proxies = trusted("10.0.0.1", "10.1.0.0/16", "2001:db8::/32", "::1", "unix:")
    assert [str(network) for network in proxies.networks] == [
        "10.0.0.1/32", "10.1.0.0/16", "2001:db8::/32", "::1/128",
    ]
    assert proxies.unix
    assert proxies.warnings == ()
    assert proxies


def test_nothing_configured_is_false() -> None:
    assert not trusted()
    assert not TrustedProxies()
    assert trusted("unix:")


@pytest.mark.parametrize(
    ("value", "network"),
    [
        ("10.0.0.1/8", "10.0.0.0/8"),
        ("192.0.2.77/24", "192.0.2.0/24"),
        ("1.2.3.4/0", "0.0.0.0/0"),
        ("2001:db8::1/32", "2001:db8::/32"),
        ("::1/0", "::/0"),
    ],
)
def test_host_bits_are_cleared_with_a_warning(value: str, network: str) -> None:
    proxies = trusted(value)
    assert [str(n) for n in proxies.networks] == [network]
    assert proxies.warnings == (f"low address bits of {value} are meaningless",)


def test_nginx_address_syntax() -> None:
    # ngx_inet_addr reads leading zeros as decimal; a zero-length mask is all.
    proxies = trusted("010.000.0.1", "0.0.0.0/0", "10.0.0.0/08", "::ffff:10.0.0.1")
    assert [str(n) for n in proxies.networks] == [
        "10.0.0.1/32", "0.0.0.0/0", "10.0.0.0/8", "::ffff:a00:1/128",
    ]
    assert proxies.warnings == ()


def test_duplicates_are_kept_once() -> None:
    assert len(trusted("10.0.0.1", "10.0.0.1/32").networks) == 1


@pytest.mark.parametrize(
    "value",
    [
        "mail.example.com",
        "localhost",
        "",
        "unix",
        "unix:/run/proxy.sock",
        "10.0.0.1/33",
        "::1/129",
        "10.0.0.1/",
        "10.0.0.1/-1",
        "10.0.0.1/ 8",
        "10.0.0.1/8/8",
        "10.0.0.256",
        "10.0.0",
        "10.0.0.1.2",
        "fe80::1%eth0",
        "[::1]",
        "10.0.0.1:25",
    ],
)
def test_invalid_entries(value: str) -> None:
    with pytest.raises(ValueError, match="set_real_ip_from") as raised:
        trusted("10.0.0.1", value)
    assert f'"{value}"' in str(raised.value)


# --- matching ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("10.0.0.1", True),
        ("10.0.0.2", False),
        ("192.168.7.7", True),
        ("192.169.0.1", False),
        ("2001:db8::1", True),
        ("2001:db8:ffff::1", True),
        ("2001:db9::1", False),
        ("::ffff:10.0.0.1", True),  # IPv4-mapped: compared as IPv4
        ("::ffff:192.168.0.1", True),
        ("::ffff:10.0.0.2", False),
        ("fe80::1%eth0", False),
        ("not an address", False),
        ("", False),
        (None, False),
        ("unix:", False),
    ],
)
def test_trusts(peer: str | None, expected: bool) -> None:
    proxies = trusted("10.0.0.1", "192.168.0.0/16", "2001:db8::/32")
    assert proxies.trusts(peer) is expected


def test_zone_of_a_link_local_peer_is_ignored() -> None:
    assert trusted("fe80::/10").trusts("fe80::1%eth0")


def test_unix_peers_need_unix() -> None:
    assert trusted("unix:").trusts(None)
    assert trusted("unix:").trusts("unix:")
    assert not trusted("unix:").trusts("127.0.0.1")
    assert not trusted("0.0.0.0/0", "::/0").trusts(None)


def test_families_do_not_mix() -> None:
    assert not trusted("::/0").trusts("10.0.0.1")
    assert not trusted("0.0.0.0/0").trusts("2001:db8::1")
    # Like nginx's ngx_cidr_match, a mapped peer only matches IPv4 entries.
    assert not trusted("::ffff:0:0/96").trusts("::ffff:10.0.0.1")
    assert trusted("0.0.0.0/0").trusts("::ffff:10.0.0.1")


# --- the client address ---------------------------------------------------------


def test_trusted_peer_gives_the_header_source() -> None:
    assert real_client("10.0.0.1", 5555, V1, trusted("10.0.0.0/8")) == ("192.0.2.7", 40000)


def test_source_is_printed_like_nginx() -> None:
    assert real_client("10.0.0.1", 5555, V1_IPV6, trusted("10.0.0.1")) == ("2001:db8::7", 5)


def test_unix_peer() -> None:
    assert real_client(None, 0, V1, trusted("unix:")) == ("192.0.2.7", 40000)
    assert real_client(None, 0, V1, trusted("10.0.0.1")) == (None, 0)


@pytest.mark.parametrize(
    ("header", "proxies"),
    [
        (V1, None),  # set_real_ip_from not configured
        (V1, TrustedProxies()),
        (None, trusted("10.0.0.0/8")),  # no PROXY header
        (UNKNOWN, trusted("10.0.0.0/8")),  # no addresses in it
        (LOCAL, trusted("10.0.0.0/8")),
        (V1, trusted("10.0.0.2", "unix:")),  # peer not trusted
        (
            ProxyHeader(1, "PROXY", "TCP4", "not-an-ip", 1, "127.0.0.1", 2),
            trusted("10.0.0.0/8"),
        ),
    ],
)
def test_client_unchanged(header: ProxyHeader | None, proxies: TrustedProxies | None) -> None:
    assert real_client("10.0.0.1", 5555, header, proxies) == ("10.0.0.1", 5555)
