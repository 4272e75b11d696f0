"""PROXY protocol version 2: the binary header, both directions.

haproxy's doc/proxy-protocol.txt section 2.2 (and 2.2.1-2.2.6 for the TLVs);
SPEC 3.1 (reading, as nginx does) and SPEC 9.2 (writing, as nginx does).
This module works on ``ipaddress`` objects and bytes; the public API, with
addresses as strings, is ``mailgate.protocol.proxy_protocol``.

Header layout (2.2)::

    12 bytes  signature \\r\\n\\r\\n\\0\\r\\nQUIT\\n
     1 byte   version (high nibble, always 2) and command (low nibble)
     1 byte   address family (high nibble) and transport (low nibble)
     2 bytes  length of what follows, network order
     n bytes  addresses and ports, then TLVs (type, 2-byte length, value)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final

__all__ = [
    "MAX_HEADER",
    "SIGNATURE",
    "HeaderError",
    "TlsFacts",
    "V2Block",
    "crc32c",
    "decode",
    "encode",
]

IPAddress = IPv4Address | IPv6Address
Endpoint = tuple[IPAddress, int]

# --- wire constants (2.2) -----------------------------------------------------

SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
HEADER_SIZE: Final = 16  # signature, version/command, family/transport, length
VERSION: Final = 2
# nginx peeks at most 4096 bytes and needs the whole v2 header in them
# (SPEC 3.1); the length field itself allows 16 + 65535.
MAX_HEADER: Final = 4096
MAX_PAYLOAD: Final = 0xFFFF

CMD_LOCAL: Final = 0x0
CMD_PROXY: Final = 0x1
VERSION_COMMAND_PROXY: Final = (VERSION << 4) | CMD_PROXY  # 0x21

# Family (high nibble) and transport (low nibble), as one byte (2.2).
FAM_UNSPEC: Final = 0x00
FAM_TCP4: Final = 0x11
FAM_UDP4: Final = 0x12
FAM_TCP6: Final = 0x21
FAM_UDP6: Final = 0x22
FAM_UNIX_STREAM: Final = 0x31
FAM_UNIX_DGRAM: Final = 0x32
FAMILY_NAMES: Final = {
    FAM_TCP4: "TCP4",
    FAM_UDP4: "UDP4",
    FAM_TCP6: "TCP6",
    FAM_UDP6: "UDP6",
    FAM_UNIX_STREAM: "UNIX",
    FAM_UNIX_DGRAM: "UNIX",
}
# Address block sizes: 2 * 4 + 2 * 2 and 2 * 16 + 2 * 2 bytes (2.2).
_INET_BLOCK: Final = struct.Struct("!4s4sHH")
_INET6_BLOCK: Final = struct.Struct("!16s16sHH")

# TLV types (2.2) and the SSL TLV's client flags (2.2.6).
PP2_TYPE_ALPN: Final = 0x01
PP2_TYPE_AUTHORITY: Final = 0x02
PP2_TYPE_CRC32C: Final = 0x03
PP2_TYPE_NOOP: Final = 0x04
PP2_TYPE_UNIQUE_ID: Final = 0x05
PP2_TYPE_SSL: Final = 0x20
PP2_SUBTYPE_SSL_VERSION: Final = 0x21
PP2_SUBTYPE_SSL_CN: Final = 0x22
PP2_SUBTYPE_SSL_CIPHER: Final = 0x23
PP2_SUBTYPE_SSL_SIG_ALG: Final = 0x24
PP2_SUBTYPE_SSL_KEY_ALG: Final = 0x25
PP2_TYPE_NETNS: Final = 0x30
PP2_CLIENT_SSL: Final = 0x01
PP2_CLIENT_CERT_CONN: Final = 0x02
PP2_CLIENT_CERT_SESS: Final = 0x04

_TLV_HEAD: Final = struct.Struct("!BH")
_CRC_TLV_SIZE: Final = _TLV_HEAD.size + 4
# nginx substitutes a loopback address, port 0, for an endpoint that is not
# an IP socket (a unix listener) when the other one is.
_LOOPBACK4: Final = IPv4Address("127.0.0.1")
_LOOPBACK6: Final = IPv6Address("::1")


class HeaderError(ValueError):
    """The bytes are not an acceptable PROXY header; ``str(error)`` is the
    error log message (SPEC 3.1, SPEC 10.2)."""


# --- CRC32C (2.2.3; RFC 4960 appendix B) ----------------------------------------

_CRC32C_POLY: Final = 0x82F63B78  # Castagnoli, bit-reversed


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE: Final = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of ``data``: ``crc32c(b"123456789") == 0xE3069283``."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --- reading ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class V2Block:
    """A complete v2 header. ``src``/``dst`` are set only for the PROXY
    command over TCP4/TCP6; ``length`` is the whole header, 16 bytes included."""

    command: int
    family: int
    length: int
    src: Endpoint | None = None
    dst: Endpoint | None = None
    tlvs: tuple[tuple[int, bytes], ...] = ()


def decode(buf: bytes, max_header: int = MAX_HEADER) -> V2Block | None:
    """The v2 header at the start of ``buf``, which begins with the whole
    signature; None while more bytes are needed. Raises ``HeaderError``."""
    if len(buf) <= len(SIGNATURE):
        return None
    version = buf[12] >> 4
    if version != VERSION:
        raise HeaderError(f"unknown PROXY protocol version: {version}")
    if len(buf) < HEADER_SIZE:
        return None
    length = HEADER_SIZE + int.from_bytes(buf[14:16], "big")
    if length > max_header:
        raise HeaderError("header is too large")
    if len(buf) < length:
        return None
    command, family = buf[12] & 0x0F, buf[13]
    # Like nginx: LOCAL (and unassigned commands), non-STREAM transports and
    # families other than INET/INET6 are accepted and record nothing.
    if command != CMD_PROXY or family not in (FAM_TCP4, FAM_TCP6):
        return V2Block(command, family, length)
    header = buf[:length]
    src, dst, tlv_start = _addresses(family, header)
    tlvs = tuple(_verified_tlvs(header, tlv_start))
    return V2Block(command, family, length, src, dst, tlvs)


def _addresses(family: int, header: bytes) -> tuple[Endpoint, Endpoint, int]:
    block = _INET_BLOCK if family == FAM_TCP4 else _INET6_BLOCK
    if len(header) < HEADER_SIZE + block.size:
        raise HeaderError("broken PROXY protocol v2 header: address block too short")
    src, dst, sport, dport = block.unpack_from(header, HEADER_SIZE)
    kind = IPv4Address if family == FAM_TCP4 else IPv6Address
    return (kind(src), sport), (kind(dst), dport), HEADER_SIZE + block.size


def _tlv_spans(header: bytes, start: int) -> Iterator[tuple[int, int, int]]:
    """(type, value start, value end) of each TLV (2.2). A truncated last
    TLV ends the list, as nginx keeps the raw bytes and stops there too."""
    offset = start
    while offset + _TLV_HEAD.size <= len(header):
        kind, size = _TLV_HEAD.unpack_from(header, offset)
        value = offset + _TLV_HEAD.size
        if value + size > len(header):
            return
        yield kind, value, value + size
        offset = value + size


def _verified_tlvs(header: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    """The TLVs, after checking a CRC32C TLV if there is one (2.2.3: the
    receiver zeroes the field, computes the CRC of the whole header and must
    reject the connection on a mismatch; nginx does not check)."""
    spans = list(_tlv_spans(header, start))
    for kind, begin, end in spans:
        if kind == PP2_TYPE_CRC32C:
            _check_crc32c(header, begin, end)
    for kind, begin, end in spans:
        yield kind, header[begin:end]


def _check_crc32c(header: bytes, begin: int, end: int) -> None:
    if end - begin != 4:
        raise HeaderError("broken PROXY protocol v2 header: CRC32C TLV is not 4 bytes")
    zeroed = header[:begin] + bytes(4) + header[end:]
    if crc32c(zeroed) != int.from_bytes(header[begin:end], "big"):
        raise HeaderError("broken PROXY protocol v2 header: CRC32C mismatch")


# --- writing ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsFacts:
    """What the backend is told about the client's TLS connection (2.2.1,
    2.2.2, 2.2.6). Empty strings and None are left out of the header.

    ``sni`` is the server name the client asked for; ``alpn`` the protocol
    negotiated; ``version`` and ``cipher`` as the TLS library names them
    (``TLSv1.3``, ``TLS_AES_256_GCM_SHA384``); ``cn`` the client
    certificate's common name; ``sig_alg`` and ``key_alg`` the certificate's
    signature and key algorithms; ``client_cert`` says the client presented a
    certificate on this connection and ``verified`` that it was verified.
    """

    sni: str | None = None
    alpn: str | None = None
    version: str | None = None
    cipher: str | None = None
    cn: str | None = None
    sig_alg: str | None = None
    key_alg: str | None = None
    verified: bool = False
    client_cert: bool = False


def encode(src: Endpoint | None, dst: Endpoint | None, tls: TlsFacts | None) -> bytes:
    """The v2 header for a proxied TCP connection from ``src`` to ``dst``
    (None: not an IP socket), as nginx sends it (SPEC 9.2): PROXY command,
    addresses and ports, the TLS TLVs, and a CRC32C TLV last."""
    family, addresses = _address_block(src, dst)
    tlvs = _tls_tlvs(tls) if tls is not None else b""
    length = len(addresses) + len(tlvs) + _CRC_TLV_SIZE
    if length > MAX_PAYLOAD:
        raise ValueError(f"PROXY protocol v2 header too long ({length} bytes after 16)")
    head = SIGNATURE + struct.pack("!BBH", VERSION_COMMAND_PROXY, family, length)
    unsigned = head + addresses + tlvs + _tlv(PP2_TYPE_CRC32C, bytes(4))
    # 2.2.3: the CRC covers the whole header with its own value zeroed.
    return unsigned[:-4] + struct.pack("!I", crc32c(unsigned))


def _address_block(src: Endpoint | None, dst: Endpoint | None) -> tuple[int, bytes]:
    """Family byte and address block (2.2). An unknown client gives UNSPEC
    with no addresses. An unknown local end (a unix listener) becomes the
    loopback address, port 0, as nginx does. IPv4 stays IPv4; mixed families
    are promoted to IPv6 with IPv4-mapped addresses; two IPv4-mapped
    addresses are demoted to IPv4."""
    if src is None:
        return FAM_UNSPEC, b""
    src = _unmapped(src)
    dst = _unmapped(dst) if dst is not None else _loopback(src[0])
    if src[0].version == 4 and dst[0].version == 4:
        return FAM_TCP4, _INET_BLOCK.pack(src[0].packed, dst[0].packed, src[1], dst[1])
    src_ip, dst_ip = _as_ipv6(src[0]), _as_ipv6(dst[0])
    return FAM_TCP6, _INET6_BLOCK.pack(src_ip.packed, dst_ip.packed, src[1], dst[1])


def _unmapped(endpoint: Endpoint) -> Endpoint:
    ip, port = endpoint
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, port
    return endpoint


def _loopback(ip: IPAddress) -> Endpoint:
    return (_LOOPBACK4 if ip.version == 4 else _LOOPBACK6), 0


def _as_ipv6(ip: IPAddress) -> IPv6Address:
    if isinstance(ip, IPv6Address):
        return ip
    return IPv6Address(b"\x00" * 10 + b"\xff\xff" + ip.packed)


def _tlv(kind: int, value: bytes) -> bytes:
    return _TLV_HEAD.pack(kind, len(value)) + value


def _text(value: str | None) -> bytes:
    return value.encode("utf-8", "surrogateescape") if value else b""


def _tls_tlvs(tls: TlsFacts) -> bytes:
    """ALPN (2.2.1), AUTHORITY (2.2.2), then the SSL TLV (2.2.6), in the
    order nginx writes them."""
    out = b""
    for kind, value in ((PP2_TYPE_ALPN, tls.alpn), (PP2_TYPE_AUTHORITY, tls.sni)):
        if value:
            out += _tlv(kind, _text(value))
    return out + _tlv(PP2_TYPE_SSL, _ssl_value(tls))


def _ssl_value(tls: TlsFacts) -> bytes:
    """The SSL TLV's value (2.2.6): client flags, the verify result (zero
    only for a client certificate that was verified), and sub-TLVs."""
    client = PP2_CLIENT_SSL
    if tls.client_cert:
        client |= PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS
    verify = 0 if tls.client_cert and tls.verified else 1
    subs = (
        (PP2_SUBTYPE_SSL_VERSION, tls.version),
        (PP2_SUBTYPE_SSL_CN, tls.cn if tls.client_cert else None),
        (PP2_SUBTYPE_SSL_CIPHER, tls.cipher),
        (PP2_SUBTYPE_SSL_SIG_ALG, tls.sig_alg),
        (PP2_SUBTYPE_SSL_KEY_ALG, tls.key_alg),
    )
    body = b"".join(_tlv(kind, _text(value)) for kind, value in subs if value)
    return struct.pack("!BI", client, verify) + body
