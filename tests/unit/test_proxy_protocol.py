"""PROXY protocol headers read from clients (SPEC 3.1; haproxy's
proxy-protocol.txt 2.1 and 2.2).

Every header is fed whole, byte by byte and cut in two at every offset: the
result must not change (nginx wants it in one read, SPEC 12 item 16;
mailgate does not).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from mailgate.protocol.proxy_protocol import (
    V1_MAX_HEADER,
    ProxyError,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyParsed,
    ProxyResult,
    TlsFacts,
    crc32c,
    encode_v2,
)
from mailgate.protocol.proxy_protocol_v2 import SIGNATURE

REST = b"CAPA\r\n"


def chunkings(data: bytes) -> Iterator[list[bytes]]:
    """Whole, byte by byte, and cut in two at every offset."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


def feed(chunks: list[bytes], **options: int) -> ProxyResult | None:
    reader = ProxyHeaderReader(**options)
    for index, chunk in enumerate(chunks):
        result = reader.feed(chunk)
        if result is not None:
            # Whatever was not fed yet is the caller's business, like ``rest``.
            if isinstance(result, ProxyParsed):
                return ProxyParsed(result.header, result.rest + b"".join(chunks[index + 1 :]))
            return result
    return None


def read(data: bytes, **options: int) -> ProxyResult | None:
    """The result of ``data``, identical under every chunking."""
    results = {repr(feed(chunks, **options)) for chunks in chunkings(data)}
    assert len(results) == 1, results
    return feed([data], **options)


def parsed(data: bytes, **options: int) -> ProxyParsed:
    result = read(data, **options)
    assert isinstance(result, ProxyParsed), result
    return result


def error(data: bytes, **options: int) -> str:
    result = read(data, **options)
    assert isinstance(result, ProxyError), result
    assert result.level == "error"
    return result.message


# --- version 1 (2.1) --------------------------------------------------------------


def test_v1_tcp4_and_the_bytes_after_it() -> None:
    line = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 12115\r\n"
    result = parsed(line + REST)
    assert result.header == ProxyHeader(
        1, "PROXY", "TCP4", "192.0.2.7", 40000, "127.0.0.1", 12115, (), len(line)
    )
    assert result.rest == REST
    assert result.header.has_addresses
    assert result.header.addresses == ("192.0.2.7", 40000, "127.0.0.1", 12115)


def test_v1_tcp6_keeps_the_addresses_as_written() -> None:
    line = b"PROXY TCP6 2001:DB8::7 ::ffff:127.0.0.1 65535 0\r\n"
    header = parsed(line).header
    assert (header.family, header.src_addr, header.dst_addr) == (
        "TCP6", "2001:DB8::7", "::ffff:127.0.0.1",
    )
    assert (header.src_port, header.dst_port, header.consumed) == (65535, 0, len(line))


def test_v1_longest_tcp6_line() -> None:
    address = b":".join([b"ffff"] * 8)
    line = b"PROXY TCP6 " + address + b" " + address + b" 65535 65535\r\n"
    assert len(line) == 104  # 2.1
    assert parsed(line).header.consumed == 104


def test_v1_ports_with_leading_zeros_are_accepted_like_nginx() -> None:
    assert parsed(b"PROXY TCP4 1.2.3.4 5.6.7.8 0080 00\r\n").header.src_port == 80


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n",
        b"PROXY UNKNOWN anything \x00 at all\n even a bare LF\r\n",
        b"PROXY UNKNOWNX\r\n",
    ],
)
def test_v1_unknown_is_skipped_up_to_crlf_recording_nothing(line: bytes) -> None:
    result = parsed(line + REST)
    assert result.header == ProxyHeader(1, "PROXY", "UNKNOWN", consumed=len(line))
    assert not result.header.has_addresses and result.header.addresses is None
    assert result.rest == REST


def test_v1_unknown_without_crlf_in_107_bytes_is_broken() -> None:
    data = b"PROXY UNKNOWN " + b"x" * 100
    assert error(data) == f'broken header: "{data[:V1_MAX_HEADER].decode()}"'


def test_v1_unknown_waits_for_its_crlf() -> None:
    assert read(b"PROXY UNKNOWN 1.2.3.4") is None


@pytest.mark.parametrize(
    ("data", "logged"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET / HTTP/1.1"),
        (b"EHLO example.com\r\n", "EHLO example.com"),
        (b"PROXY\r\n", "PROXY"),
        (b"PROXY \r\n", "PROXY "),
        (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "proxy TCP4 1.2.3.4 5.6.7.8 1 2"),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2"),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2"),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2"),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 "),
        (b"PROXY TCP4 host 5.6.7.8 1 2\r\n", "PROXY TCP4 host 5.6.7.8 1 2"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1a 2"),
        # mailgate checks the addresses are literals of the announced family
        (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3 5.6.7.8 1 2"),
        (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.256 5.6.7.8 1 2"),
        (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "PROXY TCP4 ::1 5.6.7.8 1 2"),
        (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "PROXY TCP4 1.2.3.4 ::1 1 2"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "PROXY TCP6 1.2.3.4 ::1 1 2"),
        (b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n", "PROXY TCP6 ::1 1.2.3.4 1 2"),
        (b"PROXY TCP6 1::2::3 ::1 1 2\r\n", "PROXY TCP6 1::2::3 ::1 1 2"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "PROXY TCP6 fe80::1%eth0 ::1 1 2"),
        # the line must end in CR LF (2.1: no lone CR or LF)
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2"),
        (b"PROXY TCP4 1.2.3.4\r\n5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4"),
        (b"\r\n\r\nX", ""),  # not the v2 signature either
        (b"\n", ""),
    ],
)
def test_v1_broken_headers(data: bytes, logged: str) -> None:
    assert error(data) == f'broken header: "{logged}"'


def test_v1_broken_header_waits_for_the_end_of_the_line() -> None:
    # A line found broken is logged whole, however it was cut into reads.
    assert read(b"HELO example") is None
    assert read(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r") is None


def test_v1_without_line_end_in_107_bytes_is_broken() -> None:
    data = b"PROXY TCP4 " + b"1" * 200
    assert error(data) == f'broken header: "{data[:V1_MAX_HEADER].decode()}"'
    assert read(data[: V1_MAX_HEADER - 1]) is None


def test_v1_crlf_must_end_within_107_bytes() -> None:
    data = b"PROXY UNKNOWN " + b"x" * (V1_MAX_HEADER - 16) + b"\r\n"
    assert len(data) == V1_MAX_HEADER
    assert parsed(data).header.consumed == V1_MAX_HEADER
    longer = b"PROXY UNKNOWN " + b"x" * (V1_MAX_HEADER - 15) + b"\r\n"
    assert error(longer).startswith('broken header: "PROXY UNKNOWN xxx')


def test_broken_header_bytes_are_escaped_onto_one_line() -> None:
    hello = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"A" * 100
    assert error(hello) == (
        'broken header: "\\x16\\x03\\x01\\x00\\xA5\\x01\\x00\\x00\\xA1\\x03\\x03'
        + "A" * (V1_MAX_HEADER - 11)
        + '"'
    )
    assert error(b"PROXY \x7f\xff\t\"\\\r\n") == 'broken header: "PROXY \\x7F\\xFF\\x09"\\"'


def test_incomplete_prefixes_wait() -> None:
    for data in (b"P", b"PROXY", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2", b"PROXY UNKNOWN", b"\r\n"):
        assert read(data) is None


def test_reader_is_done_after_a_result() -> None:
    reader = ProxyHeaderReader()
    assert reader.feed(b"") is None
    assert isinstance(reader.feed(b"PROXY UNKNOWN\r\n"), ProxyParsed)
    with pytest.raises(RuntimeError):
        reader.feed(b"more")


# --- version 2 (2.2) --------------------------------------------------------------


def v2_header(
    version_command: int, family: int, body: bytes, *, length: int | None = None
) -> bytes:
    size = len(body) if length is None else length
    return SIGNATURE + struct.pack("!BBH", version_command, family, size) + body


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    return bytes(map(int, src.split("."))) + bytes(map(int, dst.split("."))) + struct.pack(
        "!HH", sport, dport
    )


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def with_crc(header: bytes) -> bytes:
    """``header`` ends with a zeroed CRC32C TLV value: fill it in (2.2.3)."""
    return header[:-4] + struct.pack("!I", crc32c(header))


def test_v2_ipv4_without_tlvs() -> None:
    data = v2_header(0x21, 0x11, inet("192.0.2.7", "127.0.0.1", 40000, 12115))
    result = parsed(data + REST)
    assert result.header == ProxyHeader(
        2, "PROXY", "TCP4", "192.0.2.7", 40000, "127.0.0.1", 12115, (), 28
    )
    assert result.rest == REST


def test_v2_ipv6_addresses_are_printed_like_nginx() -> None:
    src = bytes.fromhex("20010db8000000000000000000000007")
    dst = bytes.fromhex("00000000000000000000ffff7f000001")
    data = v2_header(0x21, 0x21, src + dst + struct.pack("!HH", 1, 2))
    header = parsed(data).header
    assert (header.family, header.src_addr, header.dst_addr) == (
        "TCP6", "2001:db8::7", "::ffff:127.0.0.1",
    )
    assert header.consumed == 16 + 36


def test_v2_tlvs_are_kept_and_the_crc_checked() -> None:
    tls = TlsFacts(sni="mail.example.com", alpn="imap", version="TLSv1.3",
                   cipher="TLS_AES_256_GCM_SHA384")
    data = encode_v2(("192.0.2.7", 40000), ("127.0.0.1", 993), tls)
    result = parsed(data + REST)
    assert result.rest == REST
    header = result.header
    assert [kind for kind, _ in header.tlvs] == [0x01, 0x02, 0x20, 0x03]
    assert header.tlv(0x02) == b"mail.example.com"
    assert header.tlv(0x01) == b"imap"
    assert header.tlv(0x04) is None


def test_v2_extra_tlvs_after_the_addresses() -> None:
    body = inet("10.0.0.1", "10.0.0.2", 1, 2) + tlv(0x04, b"\x00" * 3) + tlv(0xE0, b"custom")
    header = parsed(v2_header(0x21, 0x11, body)).header
    assert header.tlvs == ((0x04, b"\x00\x00\x00"), (0xE0, b"custom"))


def test_v2_truncated_tlv_ends_the_list_like_nginx() -> None:
    body = inet("10.0.0.1", "10.0.0.2", 1, 2) + tlv(0x05, b"id") + b"\x04\x00\x09ab"
    header = parsed(v2_header(0x21, 0x11, body)).header
    assert header.tlvs == ((0x05, b"id"),)
    assert header.consumed == 16 + len(body)


def test_v2_crc_mismatch_is_rejected() -> None:
    good = with_crc(v2_header(0x21, 0x11, inet("10.0.0.1", "10.0.0.2", 1, 2) + tlv(3, bytes(4))))
    assert parsed(good).header.src_addr == "10.0.0.1"
    bad = good[:-1] + bytes([good[-1] ^ 1])
    assert error(bad) == "broken PROXY protocol v2 header: CRC32C mismatch"
    odd = v2_header(0x21, 0x11, inet("10.0.0.1", "10.0.0.2", 1, 2) + tlv(3, bytes(3)))
    assert error(odd) == "broken PROXY protocol v2 header: CRC32C TLV is not 4 bytes"


@pytest.mark.parametrize(
    ("version_command", "family", "command", "name"),
    [
        (0x20, 0x11, "LOCAL", "TCP4"),  # health checks (2.2)
        (0x20, 0x00, "LOCAL", "UNSPEC"),
        (0x22, 0x11, "UNKNOWN", "TCP4"),  # unassigned: nginx accepts it
        (0x2F, 0x21, "UNKNOWN", "TCP6"),
        (0x21, 0x12, "PROXY", "UDP4"),
        (0x21, 0x22, "PROXY", "UDP6"),
        (0x21, 0x31, "PROXY", "UNIX"),
        (0x21, 0x32, "PROXY", "UNIX"),
        (0x21, 0x00, "PROXY", "UNSPEC"),
        (0x21, 0x10, "PROXY", "UNSPEC"),
        (0x21, 0x41, "PROXY", "UNSPEC"),
        (0x21, 0x13, "PROXY", "UNSPEC"),
    ],
)
def test_v2_accepted_without_addresses(
    version_command: int, family: int, command: str, name: str
) -> None:
    body = inet("10.0.0.1", "10.0.0.2", 1, 2) + tlv(0x02, b"ignored")
    data = v2_header(version_command, family, body)
    result = parsed(data + REST)
    assert result.header == ProxyHeader(2, command, name, consumed=len(data))
    assert result.header.addresses is None
    assert result.rest == REST


def test_v2_local_with_no_address_block() -> None:
    data = v2_header(0x20, 0x00, b"")
    assert parsed(data).header == ProxyHeader(2, "LOCAL", "UNSPEC", consumed=16)


@pytest.mark.parametrize("version", [0, 1, 3, 15])
def test_v2_unknown_version(version: int) -> None:
    data = v2_header(version << 4 | 1, 0x11, inet("10.0.0.1", "10.0.0.2", 1, 2))
    assert error(data) == f"unknown PROXY protocol version: {version}"
    assert error(data[:13]) == f"unknown PROXY protocol version: {version}"


def test_v2_header_too_large() -> None:
    assert error(v2_header(0x21, 0x11, b"", length=4096 - 16 + 1)) == "header is too large"
    assert error(v2_header(0x21, 0x11, b"", length=0xFFFF)) == "header is too large"
    # The whole 4096 bytes nginx reads at once are accepted.
    body = inet("10.0.0.1", "10.0.0.2", 1, 2) + tlv(0x04, bytes(4096 - 16 - 12 - 3))
    assert parsed(v2_header(0x21, 0x11, body)).header.consumed == 4096


def test_v2_limit_can_be_raised() -> None:
    body = inet("10.0.0.1", "10.0.0.2", 1, 2) + tlv(0x04, bytes(5000))
    data = v2_header(0x21, 0x11, body)
    assert isinstance(feed([data]), ProxyError)
    result = feed([data], max_v2_header=16 + 0xFFFF)
    assert isinstance(result, ProxyParsed) and result.header.consumed == len(data)
    with pytest.raises(ValueError):
        ProxyHeaderReader(max_v2_header=16 + 0x10000)


@pytest.mark.parametrize(("family", "size"), [(0x11, 11), (0x21, 35), (0x21, 12)])
def test_v2_address_block_too_short(family: int, size: int) -> None:
    data = v2_header(0x21, family, bytes(size))
    assert error(data) == "broken PROXY protocol v2 header: address block too short"


def test_v2_waits_for_the_whole_header() -> None:
    data = v2_header(0x21, 0x11, inet("10.0.0.1", "10.0.0.2", 1, 2))
    for size in range(1, len(data)):
        assert feed([data[:size]]) is None, size


@pytest.mark.parametrize("cut", range(1, 12))
def test_v2_signature_mismatch_is_a_broken_header(cut: int) -> None:
    data = SIGNATURE[:cut] + b"X" + SIGNATURE[cut + 1 :] + b"\x21\x11\x00\x00"
    # The signature starts with CR: nothing before the line end to quote.
    assert error(data) == 'broken header: ""'
