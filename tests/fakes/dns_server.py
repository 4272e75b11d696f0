"""A fake DNS server for tests, on 127.0.0.1 over UDP and TCP (same port).

It answers from a table and records every query::

    records = {
        ("4.3.2.1.in-addr.arpa", "PTR"): [("mail.example.", 300)],
        ("mail.example", "A"): [("1.2.3.4", 300)],
    }
    with FakeDnsServer(records) as dns:
        ...  # resolver 127.0.0.1:{dns.port}
        assert dns.queries[0].qtype == "PTR"

Names are text split on dots, each label's characters written as raw bytes
(latin-1), so a PTR value such as ``"evil\\r\\nX-Injected: 1.example."``
goes on the wire as the labels ``evil\\r\\nX-Injected: 1`` and ``example``.
CNAME records are followed within the table and put in the answer. A name
with no record of any type is NXDOMAIN; one with records of other types gets
an empty answer.

Knobs: ``rcodes`` (name -> RCODE, answered with no records), ``delay`` (seconds
before every answer) and ``delays`` (per name), ``truncate`` (names whose UDP
answer has the TC bit and no records; TCP answers in full), ``silent`` (never
answer), ``mangle`` (name -> function of the server and the query packet returning
the packets to send instead of the answer; ``build`` makes the real one). Its own encoder and decoder are
deliberately independent of mailgate's.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = range(6)
TYPES = {"A": 1, "CNAME": 5, "PTR": 12, "AAAA": 28}
TYPE_NAMES = {number: name for name, number in TYPES.items()}

Records = dict[tuple[str, str], list[tuple[str, int]]]


@dataclass(frozen=True)
class LoggedQuery:
    transport: str  # "udp" | "tcp"
    name: str  # lower-case, no trailing dot
    qtype: str  # "A", "PTR", ... or the number as text
    ident: int
    at: float = 0.0  # time.monotonic() on arrival


def key(name: str) -> str:
    return name.rstrip(".").lower()


def labels(name: str) -> bytes:
    """The uncompressed wire form of ``name``."""
    out = b""
    for label in name.rstrip(".").split(".") if name.rstrip(".") else ():
        raw = label.encode("latin-1")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def read_question(packet: bytes) -> tuple[int, str, int]:
    """(id, name, qtype) of a query; no compression in queries."""
    ident = struct.unpack_from(">H", packet)[0]
    offset, parts = 12, []
    while packet[offset]:
        length = packet[offset]
        parts.append(packet[offset + 1 : offset + 1 + length].decode("latin-1"))
        offset += 1 + length
    qtype = struct.unpack_from(">H", packet, offset + 1)[0]
    return ident, ".".join(parts), qtype


def rdata(qtype: int, value: str) -> bytes:
    if qtype in (TYPES["A"], TYPES["AAAA"]):
        return ipaddress.ip_address(value).packed
    return labels(value)


@dataclass
class FakeDnsServer:
    records: Records = field(default_factory=dict)
    rcodes: dict[str, int] = field(default_factory=dict)
    delay: float = 0.0
    delays: dict[str, float] = field(default_factory=dict)
    truncate: Iterable[str] = ()
    silent: bool = False
    mangle: dict[str, Callable[[FakeDnsServer, bytes], list[bytes]]] = field(default_factory=dict)
    port: int = 0
    queries: list[LoggedQuery] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.records = {(key(name), rtype.upper()): values for (name, rtype), values in self.records.items()}
        self.rcodes = {key(name): code for name, code in self.rcodes.items()}
        self.delays = {key(name): seconds for name, seconds in self.delays.items()}
        self.mangle = {key(name): function for name, function in self.mangle.items()}
        self.truncate = {key(name) for name in self.truncate}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # --- lifecycle ------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def directive(self) -> str:
        """The server as a ``resolver`` argument."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeDnsServer:
        self.udp, self.tcp = _bind_pair(self.port)
        self.port = self.udp.getsockname()[1]
        for target in (self._serve_udp, self._serve_tcp):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self.udp.close()
        self.tcp.close()

    def __enter__(self) -> FakeDnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def asked(self, qtype: str | None = None) -> list[str]:
        """Names asked so far, of one type if given."""
        with self._lock:
            return [q.name for q in self.queries if qtype is None or q.qtype == qtype]

    # --- answering --------------------------------------------------------------

    def answer(self, packet: bytes, transport: str) -> list[bytes]:
        """The packets to send back for ``packet`` (none if silent)."""
        ident, name, qtype = read_question(packet)
        logged = LoggedQuery(transport, key(name), TYPE_NAMES.get(qtype, str(qtype)), ident, time.monotonic())
        with self._lock:
            self.queries.append(logged)
        if self.silent:
            return []
        if key(name) in self.mangle:
            return self.mangle[key(name)](self, packet)
        truncated = transport == "udp" and key(name) in self.truncate
        return [self.build(packet, name, qtype, truncated)]

    def build(self, packet: bytes, name: str, qtype: int, truncated: bool = False) -> bytes:
        ident = struct.unpack_from(">H", packet)[0]
        question = packet[12:]  # the query's question, echoed
        rcode = self.rcodes.get(key(name), NOERROR)
        answers = [] if rcode or truncated else self.chain(name, qtype)
        if rcode == NOERROR and not answers and not truncated and not self.known(name):
            rcode = NXDOMAIN
        flags = 0x8000 | 0x0100 | 0x0080 | rcode | (0x0200 if truncated else 0)
        header = struct.pack(">HHHHHH", ident, flags, 1, len(answers), 0, 0)
        return header + question + b"".join(answers)

    def known(self, name: str) -> bool:
        return any(owner == key(name) for owner, _ in self.records)

    def chain(self, name: str, qtype: int) -> list[bytes]:
        """Answer records: CNAMEs from ``name`` on, then the wanted ones.
        The first owner name is a compression pointer to the question."""
        out, owner = [], key(name)
        for _ in range(20):
            wanted = self.records.get((owner, TYPE_NAMES.get(qtype, "")))
            if wanted:
                return out + [self.record(owner, name, qtype, value, ttl) for value, ttl in wanted]
            alias = self.records.get((owner, "CNAME"))
            if not alias:
                return out
            out.append(self.record(owner, name, TYPES["CNAME"], alias[0][0], alias[0][1]))
            owner = key(alias[0][0])
        return out

    @staticmethod
    def record(owner: str, qname: str, rtype: int, value: str, ttl: int) -> bytes:
        # RFC 1035 4.1.4: 0xC00C points at the question's name.
        name = b"\xc0\x0c" if owner == key(qname) else labels(owner)
        data = rdata(rtype, value)
        return name + struct.pack(">HHIH", rtype, 1, ttl, len(data)) + data

    def _wait(self, name: str) -> float:
        return self.delays.get(key(name), self.delay)

    # --- transports -------------------------------------------------------------

    def _serve_udp(self) -> None:
        self.udp.settimeout(0.05)
        while not self._stop.is_set():
            try:
                packet, peer = self.udp.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            try:
                replies = self.answer(packet, "udp")
                wait = self._wait(read_question(packet)[1])
            except (IndexError, struct.error):
                continue
            send = lambda replies=replies, peer=peer: [self._sendto(r, peer) for r in replies]  # noqa: E731
            if wait:
                timer = threading.Timer(wait, send)
                timer.daemon = True
                timer.start()
            else:
                send()

    def _sendto(self, reply: bytes, peer: tuple[str, int]) -> None:
        if not self._stop.is_set():
            try:
                self.udp.sendto(reply, peer)
            except OSError:
                pass

    def _serve_tcp(self) -> None:
        self.tcp.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._tcp_session, args=(conn,), daemon=True).start()

    def _tcp_session(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                length = struct.unpack(">H", _read(conn, 2))[0]
                packet = _read(conn, length)
                replies = self.answer(packet, "tcp")
                if self._stop.wait(self._wait(read_question(packet)[1])):
                    return
                for reply in replies:
                    conn.sendall(struct.pack(">H", len(reply)) + reply)
            except (OSError, struct.error, IndexError):
                return


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError
        data += chunk
    return data


def _bind_pair(port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same loopback port."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", port))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            if port:
                raise
            continue
        tcp.listen(16)
        return udp, tcp
    raise OSError("no free port for UDP and TCP")


# --- helpers for tests ----------------------------------------------------------


def ptr(ip: str) -> str:
    """The PTR owner name of ``ip``."""
    return ipaddress.ip_address(ip).reverse_pointer


def with_ident(packet: bytes, ident: int) -> bytes:
    return struct.pack(">H", ident) + packet[2:]


def unused_udp_port() -> int:
    """A loopback UDP port nobody listens on (queries get ICMP refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
