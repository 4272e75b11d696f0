"""PROXY headers sent to backends (SPEC 9.2; haproxy's proxy-protocol.txt
2.1, 2.2, 2.2.1-2.2.6), byte by byte, and the CRC32C they carry (2.2.3)."""

from __future__ import annotations

import struct
from ipaddress import ip_address

import pytest

from mailgate.protocol.proxy_protocol import (
    ProxyHeaderReader,
    ProxyParsed,
    TlsFacts,
    crc32c,
    encode_v1,
    encode_v2,
    format_ip,
    parse_ip,
)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
CRC_TLV_ZERO = b"\x03\x00\x04\x00\x00\x00\x00"


def signed(unsigned: bytes) -> bytes:
    """``unsigned`` ends with a zeroed CRC32C TLV value: fill it in."""
    return unsigned[:-4] + struct.pack("!I", crc32c(unsigned))


# --- CRC32C ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        (b"123456789", 0xE3069283),  # the CRC-32C check value
        (b"", 0x00000000),
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_vectors(data: bytes, crc: int) -> None:
    assert crc32c(data) == crc


# --- version 1 (2.1) ----------------------------------------------------------------


def test_v1_tcp4_as_nginx_sends_it() -> None:
    assert encode_v1(("192.0.2.7", 40000), ("127.0.0.1", 12115)) == (
        b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 12115\r\n"
    )


def test_v1_tcp6() -> None:
    assert encode_v1(("2001:DB8:0:0::7", 1), ("2001:db8::1:0:0:1", 993)) == (
        b"PROXY TCP6 2001:db8::7 2001:db8::1:0:0:1 1 993\r\n"
    )


def test_v1_two_mapped_addresses_stay_tcp6_like_nginx() -> None:
    assert encode_v1(("::ffff:192.0.2.7", 5), ("::ffff:127.0.0.1", 110)) == (
        b"PROXY TCP6 ::ffff:192.0.2.7 ::ffff:127.0.0.1 5 110\r\n"
    )


def test_v1_mixed_families_are_promoted_to_tcp6() -> None:
    assert encode_v1(("192.0.2.7", 5), ("2001:db8::1", 110)) == (
        b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 5 110\r\n"
    )
    assert encode_v1(("2001:db8::7", 5), ("127.0.0.1", 110)) == (
        b"PROXY TCP6 2001:db8::7 ::ffff:127.0.0.1 5 110\r\n"
    )


def test_v1_ipv4_with_a_mapped_address_is_tcp4() -> None:
    # realip gave an IPv4 client on a dual-stack [::] listener.
    assert encode_v1(("192.0.2.7", 5), ("::ffff:127.0.0.1", 110)) == (
        b"PROXY TCP4 192.0.2.7 127.0.0.1 5 110\r\n"
    )


@pytest.mark.parametrize("client", [None, ("unix:", 0), ("unix:/run/mailgate.sock", 0), ("", 0)])
def test_v1_unknown_when_the_client_is_not_ip(client: tuple[str, int] | None) -> None:
    assert encode_v1(client, ("127.0.0.1", 110)) == b"PROXY UNKNOWN\r\n"
    assert encode_v1(client, None) == b"PROXY UNKNOWN\r\n"


def test_v1_unix_listener_becomes_loopback() -> None:
    # A client address from a trusted PROXY header on a unix listener.
    assert encode_v1(("192.0.2.7", 5), None) == b"PROXY TCP4 192.0.2.7 127.0.0.1 5 0\r\n"
    assert encode_v1(("2001:db8::7", 5), ("unix:/run/x", 0)) == (
        b"PROXY TCP6 2001:db8::7 ::1 5 0\r\n"
    )


def test_v1_zone_is_dropped_and_ports_checked() -> None:
    assert encode_v1(("fe80::1%eth0", 5), ("fe80::2%eth0", 6)) == (
        b"PROXY TCP6 fe80::1 fe80::2 5 6\r\n"
    )
    with pytest.raises(ValueError):
        encode_v1(("192.0.2.7", 65536), ("127.0.0.1", 1))


def test_ipv6_socket_addresses_have_four_items() -> None:
    assert encode_v1(("2001:db8::7", 5, 0, 0), ("2001:db8::1", 110, 0, 0)) == (
        b"PROXY TCP6 2001:db8::7 2001:db8::1 5 110\r\n"
    )
    assert encode_v2(("2001:db8::7", 5, 0, 0), ("2001:db8::1", 110, 0, 0)) == encode_v2(
        ("2001:db8::7", 5), ("2001:db8::1", 110)
    )


# --- version 2 (2.2) ----------------------------------------------------------------


def test_v2_ipv4_has_a_19_byte_payload() -> None:
    header = encode_v2(("192.0.2.7", 40000), ("127.0.0.1", 12115))
    expected = signed(
        SIG + b"\x21\x11\x00\x13"
        + bytes([192, 0, 2, 7, 127, 0, 0, 1])
        + struct.pack("!HH", 40000, 12115)
        + CRC_TLV_ZERO
    )
    assert header == expected
    assert len(header) == 16 + 19


def test_v2_ipv6() -> None:
    header = encode_v2(("2001:db8::7", 40000), ("2001:db8::1", 993))
    expected = signed(
        SIG + b"\x21\x21\x00\x2b"
        + ip_address("2001:db8::7").packed + ip_address("2001:db8::1").packed
        + struct.pack("!HH", 40000, 993)
        + CRC_TLV_ZERO
    )
    assert header == expected
    assert len(header) == 16 + 36 + 7


def test_v2_mixed_families_are_promoted_to_ipv6() -> None:
    header = encode_v2(("192.0.2.7", 1), ("2001:db8::1", 2))
    assert header[13] == 0x21
    assert header[16:32] == ip_address("::ffff:192.0.2.7").packed
    assert header[32:48] == ip_address("2001:db8::1").packed
    assert header == encode_v2(("::ffff:192.0.2.7", 1), ("2001:db8::1", 2))


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("::ffff:192.0.2.7", "::ffff:127.0.0.1"),
        ("192.0.2.7", "::ffff:127.0.0.1"),
        ("::ffff:192.0.2.7", "127.0.0.1"),
    ],
)
def test_v2_mapped_addresses_are_demoted_to_ipv4(src: str, dst: str) -> None:
    assert encode_v2((src, 1), (dst, 2)) == encode_v2(("192.0.2.7", 1), ("127.0.0.1", 2))


def test_v2_unspec_when_the_client_is_not_ip() -> None:
    expected = signed(SIG + b"\x21\x00\x00\x07" + CRC_TLV_ZERO)
    assert encode_v2(None, None) == expected
    assert encode_v2(("unix:", 0), ("127.0.0.1", 110)) == expected


def test_v2_unix_listener_becomes_loopback() -> None:
    header = encode_v2(("192.0.2.7", 5), None)
    assert header == encode_v2(("192.0.2.7", 5), ("127.0.0.1", 0))
    header6 = encode_v2(("2001:db8::7", 5), ("unix:/run/x", 0))
    assert header6 == encode_v2(("2001:db8::7", 5), ("::1", 0))


def test_v2_tls_tlvs() -> None:
    tls = TlsFacts(
        sni="mail.example.com", alpn="imap", version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384", cn="alice", sig_alg="RSA-SHA256",
        key_alg="RSA2048", verified=True, client_cert=True,
    )
    ssl_value = (
        b"\x07" + b"\x00\x00\x00\x00"  # SSL | CERT_CONN | CERT_SESS, verified
        + b"\x21\x00\x07TLSv1.3"
        + b"\x22\x00\x05alice"
        + b"\x23\x00\x16TLS_AES_256_GCM_SHA384"
        + b"\x24\x00\x0aRSA-SHA256"
        + b"\x25\x00\x07RSA2048"
    )
    tlvs = (
        b"\x01\x00\x04imap"
        + b"\x02\x00\x10mail.example.com"
        + b"\x20" + struct.pack("!H", len(ssl_value)) + ssl_value
    )
    addresses = bytes([192, 0, 2, 7, 127, 0, 0, 1]) + struct.pack("!HH", 40000, 993)
    length = len(addresses) + len(tlvs) + 7
    expected = signed(
        SIG + b"\x21\x11" + struct.pack("!H", length) + addresses + tlvs + CRC_TLV_ZERO
    )
    assert encode_v2(("192.0.2.7", 40000), ("127.0.0.1", 993), tls) == expected


def test_v2_tls_without_client_certificate() -> None:
    tls = TlsFacts(version="TLSv1.2", cipher="ECDHE-RSA-AES128-GCM-SHA256", cn="ignored")
    header = encode_v2(("192.0.2.7", 1), ("127.0.0.1", 2), tls)
    ssl_value = (
        b"\x01" + b"\x00\x00\x00\x01"  # SSL only; no verified certificate
        + b"\x21\x00\x07TLSv1.2"
        + b"\x23\x00\x1bECDHE-RSA-AES128-GCM-SHA256"
    )
    tlvs = b"\x20" + struct.pack("!H", len(ssl_value)) + ssl_value
    assert header[28:-7] == tlvs
    assert header[-7:-4] == b"\x03\x00\x04"


def test_v2_unverified_client_certificate() -> None:
    tls = TlsFacts(version="TLSv1.3", client_cert=True, verified=False, cn="bob")
    header = encode_v2(("192.0.2.7", 1), ("127.0.0.1", 2), tls)
    assert header[28:36] == b"\x20\x00\x15\x07\x00\x00\x00\x01"
    assert header[36:-7] == b"\x21\x00\x07TLSv1.3\x22\x00\x03bob"


def test_v2_crc_covers_the_whole_header() -> None:
    header = encode_v2(("192.0.2.7", 40000), ("127.0.0.1", 12115), TlsFacts(version="TLSv1.3"))
    value = int.from_bytes(header[-4:], "big")
    assert crc32c(header[:-4] + bytes(4)) == value
    assert header[-7:-4] == b"\x03\x00\x04"


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (("192.0.2.7", 40000), ("127.0.0.1", 12115)),
        (("2001:db8::7", 1), ("2001:db8::1", 65535)),
        (("192.0.2.7", 0), ("2001:db8::1", 2)),
    ],
)
def test_what_is_sent_reads_back(src: tuple[str, int], dst: tuple[str, int]) -> None:
    for data in (encode_v1(src, dst), encode_v2(src, dst, TlsFacts(version="TLSv1.3"))):
        result = ProxyHeaderReader().feed(data + b"rest")
        assert isinstance(result, ProxyParsed), result
        header = result.header
        assert header.src_port == src[1] and header.dst_port == dst[1]
        assert (same_ip(header.src_addr, src[0]), same_ip(header.dst_addr, dst[0])) == (True, True)
        assert result.rest == b"rest"


def same_ip(printed: str | None, sent: str) -> bool:
    """Whether ``printed`` is ``sent``, up to IPv4 mapping."""
    ip, expected = parse_ip(printed or ""), ip_address(sent)
    unmapped = [
        getattr(address, "ipv4_mapped", None) or address for address in (ip, expected)
    ]
    return unmapped[0] == unmapped[1]


# --- addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::", "::"),
        ("::1", "::1"),
        ("::2", "::2"),
        ("1::", "1::"),
        ("2001:DB8::7", "2001:db8::7"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("::ffff:192.0.2.7", "::ffff:192.0.2.7"),
        ("::ffff:c000:207", "::ffff:192.0.2.7"),
        ("::192.0.2.7", "::192.0.2.7"),
        ("::102", "::0.0.1.2"),  # nginx's ngx_inet6_ntop quirk
        ("::101", "::101"),
        ("::fffe:192.0.2.7", "::fffe:c000:207"),
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
        ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
    ],
)
def test_format_ip_like_nginx(text: str, printed: str) -> None:
    ip = parse_ip(text)
    assert ip is not None
    assert format_ip(ip) == printed


@pytest.mark.parametrize(
    "text", ["", "host", "1.2.3", "01.2.3.4", "fe80::1%eth0", "[::1]", "::1/128"]
)
def test_parse_ip_takes_literals_only(text: str) -> None:
    assert parse_ip(text) is None
