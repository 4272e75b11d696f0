"""The PROXY protocol: headers from clients, and headers towards backends.

haproxy's doc/proxy-protocol.txt: section 2.1 (version 1, one text line) and
2.2 (version 2, binary; in ``proxy_protocol_v2``). SPEC 3.1 says how nginx
reads them on ``listen ... proxy_protocol`` sockets, SPEC 9.2 what nginx
sends with ``proxy_protocol on|v2``.

Reading is sans-IO: feed ``ProxyHeaderReader`` the client's bytes until it
returns a result. nginx needs the whole header in one read (SPEC 12 item 16);
mailgate accepts it in any number of pieces, within the same bounds: 107
bytes for version 1 (2.1), 4096 for version 2 (nginx's read buffer). Exactly
the header is consumed; what follows it is handed back as ``rest``.

Mailgate is stricter than nginx in two ways: the addresses of a version 1
line must be IP literals of the announced family (nginx only checks their
characters), and a version 2 CRC32C TLV is verified (2.2.3).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from mailgate.protocol import proxy_protocol_v2 as v2
from mailgate.protocol.proxy_protocol_v2 import HeaderError, TlsFacts, crc32c

__all__ = [
    "V1_MAX_HEADER",
    "V2_MAX_HEADER",
    "ProxyError",
    "ProxyHeader",
    "ProxyHeaderReader",
    "ProxyParsed",
    "ProxyResult",
    "TlsFacts",
    "crc32c",
    "encode_v1",
    "encode_v2",
    "format_ip",
    "parse_ip",
]

IPAddress = IPv4Address | IPv6Address
# (ip, port) of a TCP endpoint, or an IPv6 getpeername()'s (ip, port, flow,
# scope); None (or a host that is not an IP literal, such as "unix:/path")
# for anything else.
Address = tuple[str, int] | tuple[str, int, int, int] | None

# 2.1: "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n" is the
# longest line; without a CRLF in the first 107 bytes the line is invalid.
V1_MAX_HEADER: Final = 107
V1_PREFIX: Final = b"PROXY "
V1_UNKNOWN: Final = b"UNKNOWN"
V2_MAX_HEADER: Final = v2.MAX_HEADER
_V1_LINE: Final = re.compile(
    rb"PROXY TCP([46]) ([0-9a-fA-F.:]*) ([0-9a-fA-F.:]*) ([0-9]+) ([0-9]+)"
)
_LINE_END: Final = re.compile(rb"[\r\n]")
_MAX_PORT: Final = 65535


# --- results ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A PROXY header read from a client.

    ``version`` is 1 or 2; ``command`` is ``PROXY``, or for version 2 also
    ``LOCAL`` (or ``UNKNOWN`` for an unassigned command, which nginx
    accepts); ``family`` is ``TCP4``, ``TCP6`` or ``UNKNOWN`` (version 1) and
    for version 2 also ``UDP4``, ``UDP6``, ``UNIX`` or ``UNSPEC``. Addresses
    and ports are set only when the header carries a TCP connection's
    endpoints (SPEC 3.1: otherwise nothing is recorded); version 1 addresses
    are kept as written, version 2 ones are printed as nginx prints them.
    ``tlvs`` are version 2's (type, value) pairs, kept but not used (SPEC 12
    item 16). ``consumed`` is the header's length in bytes.
    """

    version: int
    command: str
    family: str
    src_addr: str | None = None
    src_port: int | None = None
    dst_addr: str | None = None
    dst_port: int | None = None
    tlvs: tuple[tuple[int, bytes], ...] = ()
    consumed: int = 0

    @property
    def has_addresses(self) -> bool:
        return self.src_addr is not None

    @property
    def addresses(self) -> tuple[str, int, str, int] | None:
        """(src, sport, dst, dport) for the Proxy-Protocol-* auth headers
        (SPEC 8.2 item 11), or None when the header carried no addresses."""
        if (
            self.src_addr is None
            or self.src_port is None
            or self.dst_addr is None
            or self.dst_port is None
        ):
            return None
        return self.src_addr, self.src_port, self.dst_addr, self.dst_port

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of type ``kind``, if any."""
        return next((value for tlv_kind, value in self.tlvs if tlv_kind == kind), None)


@dataclass(frozen=True, slots=True)
class ProxyParsed:
    """The header, and the client bytes received after it."""

    header: ProxyHeader
    rest: bytes = b""


@dataclass(frozen=True, slots=True)
class ProxyError:
    """The header is unacceptable: log ``message`` at ``level`` (action
    "reading PROXY protocol") and close the connection sending nothing."""

    message: str
    level: str = "error"


ProxyResult = ProxyParsed | ProxyError


# --- the reader ------------------------------------------------------------------


class ProxyHeaderReader:
    """Reads one PROXY header, version 1 or 2, fed in any number of pieces.

    ``feed`` returns None while the header is incomplete, then once a
    ``ProxyParsed`` or a ``ProxyError``; it must not be fed after that.
    """

    __slots__ = ("_buffer", "_done", "max_v2_header")

    def __init__(self, *, max_v2_header: int = V2_MAX_HEADER) -> None:
        if not v2.HEADER_SIZE <= max_v2_header <= v2.HEADER_SIZE + v2.MAX_PAYLOAD:
            raise ValueError(f"max_v2_header out of range: {max_v2_header}")
        self.max_v2_header = max_v2_header
        self._buffer = bytearray()
        self._done = False

    def feed(self, data: bytes) -> ProxyResult | None:
        if self._done:
            raise RuntimeError("the PROXY header has already been read")
        self._buffer += data
        try:
            header = self._parse(bytes(self._buffer))
        except HeaderError as error:
            result: ProxyResult = ProxyError(str(error))
        else:
            if header is None:
                return None
            result = ProxyParsed(header, bytes(self._buffer[header.consumed :]))
        self._done = True
        self._buffer.clear()
        return result

    def _parse(self, buf: bytes) -> ProxyHeader | None:
        if not buf:
            return None
        # 2.2: the v2 signature starts with CR, which no v1 line does.
        if v2.SIGNATURE.startswith(buf[: len(v2.SIGNATURE)]):
            return _read_v2(buf, self.max_v2_header)
        return _read_v1(buf)


# --- version 1 (2.1) --------------------------------------------------------------


def _read_v1(buf: bytes) -> ProxyHeader | None:
    """A v1 header at the start of ``buf``, None while incomplete.

    A line found broken is reported only once it is complete (a CR or LF
    seen, or 107 bytes without one), so the logged text does not depend on
    how the bytes were cut into reads.
    """
    window = buf[:V1_MAX_HEADER]
    if window.startswith(V1_PREFIX + V1_UNKNOWN):
        return _read_v1_unknown(buf, window)
    found = _LINE_END.search(window)
    if found is None:
        if len(buf) >= V1_MAX_HEADER:
            raise _broken(window)
        return None
    end = found.start()
    header = _v1_fields(window[:end], end + 2)  # raises if broken
    if window[end : end + 2] == b"\r\n":
        return header
    if window[end:] == b"\r" and len(buf) < V1_MAX_HEADER:
        return None  # the LF may follow
    raise _broken(window)


def _read_v1_unknown(buf: bytes, window: bytes) -> ProxyHeader | None:
    """2.1: with UNKNOWN "the receiver must ignore anything presented
    before the CRLF"; nginx skips to the first CRLF and records nothing."""
    end = window.find(b"\r\n", len(V1_PREFIX + V1_UNKNOWN))
    if end >= 0:
        return ProxyHeader(1, "PROXY", "UNKNOWN", consumed=end + 2)
    if len(buf) >= V1_MAX_HEADER:
        raise _broken(window)
    return None


def _v1_fields(line: bytes, consumed: int) -> ProxyHeader:
    """``PROXY TCP4|TCP6 <src> <dst> <sport> <dport>`` without its CRLF."""
    match = _V1_LINE.fullmatch(line)
    if match is None:
        raise _broken(line)
    family, src, dst, sport, dport = match.groups()
    version = 4 if family == b"4" else 6
    src_ip, dst_ip = parse_ip(src.decode("ascii")), parse_ip(dst.decode("ascii"))
    if src_ip is None or dst_ip is None or src_ip.version != version or dst_ip.version != version:
        raise _broken(line)
    src_port, dst_port = int(sport), int(dport)
    if src_port > _MAX_PORT or dst_port > _MAX_PORT:
        raise _broken(line)
    return ProxyHeader(
        1,
        "PROXY",
        f"TCP{version}",
        src_addr=src.decode("ascii"),
        src_port=src_port,
        dst_addr=dst.decode("ascii"),
        dst_port=dst_port,
        consumed=consumed,
    )


def _broken(data: bytes) -> HeaderError:
    """nginx's ``broken header: "<bytes up to the first CR or LF>"``, with
    the bytes escaped so that the log line stays one printable line."""
    line = _LINE_END.split(data, maxsplit=1)[0]
    return HeaderError(f'broken header: "{escape_bytes(line)}"')


def escape_bytes(data: bytes) -> str:
    """``data`` as text: printable ASCII as is, other bytes as ``\\xHH``."""
    return "".join(chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02X}" for b in data)


# --- version 2 (2.2) --------------------------------------------------------------


def _read_v2(buf: bytes, max_header: int) -> ProxyHeader | None:
    block = v2.decode(buf, max_header)
    if block is None:
        return None
    commands = {v2.CMD_PROXY: "PROXY", v2.CMD_LOCAL: "LOCAL"}
    command = commands.get(block.command, "UNKNOWN")
    family = v2.FAMILY_NAMES.get(block.family, "UNSPEC")
    if block.src is None or block.dst is None:
        return ProxyHeader(2, command, family, consumed=block.length)
    return ProxyHeader(
        2,
        command,
        family,
        src_addr=format_ip(block.src[0]),
        src_port=block.src[1],
        dst_addr=format_ip(block.dst[0]),
        dst_port=block.dst[1],
        tlvs=block.tlvs,
        consumed=block.length,
    )


# --- addresses ---------------------------------------------------------------------


def parse_ip(text: str) -> IPAddress | None:
    """An IPv4 or IPv6 literal (no zone, no brackets), or None."""
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def format_ip(ip: IPAddress) -> str:
    """``ip`` as nginx prints it (ngx_inet6_ntop): IPv6 in lower case with
    the longest run of two or more zero groups compressed, and the IPv4
    forms ``::ffff:a.b.c.d`` (mapped) and ``::a.b.c.d`` (compatible)."""
    if isinstance(ip, IPv4Address):
        return str(ip)
    packed = ip.packed
    words = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2)]
    start, size = _longest_zero_run(words)
    if start == 0 and _ends_in_ipv4(words, size):
        prefix = "::ffff:" if size == 5 else "::"
        return prefix + str(IPv4Address(packed[12:]))
    if size < 2:
        return ":".join(f"{word:x}" for word in words)
    head = ":".join(f"{word:x}" for word in words[:start])
    tail = ":".join(f"{word:x}" for word in words[start + size :])
    return f"{head}::{tail}"


def _longest_zero_run(words: list[int]) -> tuple[int, int]:
    """Start and length of the first longest run of zero words."""
    best_start, best_size, start = 0, 0, None
    for index, word in enumerate([*words, 1]):
        if word == 0 and start is None:
            start = index
        elif word != 0 and start is not None:
            if index - start > best_size:
                best_start, best_size = start, index - start
            start = None
    return best_start, best_size


def _ends_in_ipv4(words: list[int], zeros: int) -> bool:
    """nginx's test for printing the last 32 bits as a dotted quad after a
    leading run of ``zeros`` zero words."""
    if zeros == 5:
        return words[5] == 0xFFFF
    if zeros == 6:
        return True
    return zeros == 7 and words[7] >> 8 != 0 and words[7] & 0xFF != 1


# --- writing (SPEC 9.2) -----------------------------------------------------------


def _endpoint(address: Address) -> tuple[IPAddress, int] | None:
    if address is None:
        return None
    host, port = address[0], address[1]
    ip = parse_ip(host.split("%", 1)[0])
    if ip is None:
        return None
    if not 0 <= port <= _MAX_PORT:
        raise ValueError(f"port out of range: {port}")
    return ip, port


def encode_v1(src: Address, dst: Address) -> bytes:
    """The v1 line nginx sends (SPEC 9.2, 2.1): ``PROXY TCP4 <client ip>
    <local ip> <client port> <local port>\\r\\n``.

    ``src`` is the client (after realip), ``dst`` mailgate's local end of
    the client connection; None, or a host that is not an IP literal, for
    a unix socket. An unknown client gives ``PROXY UNKNOWN\\r\\n``. An
    unknown local end (a unix listener behind a trusted proxy) becomes the
    loopback address, port 0, as nginx's v2 writer does, so that the
    client's address still reaches the backend. TCP4 needs two IPv4
    addresses; a mixed pair is sent as TCP6 with the IPv4 one mapped,
    unless the IPv6 one is itself IPv4-mapped, which is unmapped to TCP4.
    """
    client, local = _endpoint(src), _endpoint(dst)
    if client is None:
        return b"PROXY UNKNOWN\r\n"
    if local is None:
        local = (IPv4Address("127.0.0.1") if client[0].version == 4 else IPv6Address("::1")), 0
    (src_ip, sport), (dst_ip, dport) = _v1_family(client, local)
    family = "TCP4" if src_ip.version == 4 else "TCP6"
    line = f"PROXY {family} {format_ip(src_ip)} {format_ip(dst_ip)} {sport} {dport}\r\n"
    return line.encode("ascii")


def _v1_family(
    src: tuple[IPAddress, int], dst: tuple[IPAddress, int]
) -> tuple[tuple[IPAddress, int], tuple[IPAddress, int]]:
    """Both endpoints in one family: as they are when they agree (nginx
    sends two IPv4-mapped addresses as TCP6, and so does mailgate)."""
    if src[0].version == dst[0].version:
        return src, dst
    unmapped = [_unmap(ip) for ip in (src[0], dst[0])]
    if all(ip.version == 4 for ip in unmapped):
        return (unmapped[0], src[1]), (unmapped[1], dst[1])
    return (_map(src[0]), src[1]), (_map(dst[0]), dst[1])


def _unmap(ip: IPAddress) -> IPAddress:
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _map(ip: IPAddress) -> IPv6Address:
    if isinstance(ip, IPv6Address):
        return ip
    return IPv6Address(b"\x00" * 10 + b"\xff\xff" + ip.packed)


def encode_v2(src: Address, dst: Address, tls: TlsFacts | None = None) -> bytes:
    """The v2 header nginx sends (SPEC 9.2, 2.2): PROXY command; TCP over
    IPv4 (0x11) or IPv6 (0x21, mixed families promoted with IPv4-mapped
    addresses, two IPv4-mapped ones demoted to IPv4), or UNSPEC (0x00) with
    no addresses when the client is not an IP socket; the TLS TLVs when
    ``tls`` is given; a CRC32C TLV last. ``src``/``dst`` as for ``encode_v1``.
    """
    return v2.encode(_endpoint(src), _endpoint(dst), tls)
