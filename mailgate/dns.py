"""The SMTP client hostname lookup (SPEC 7.1) and the stub resolver behind it.

``Resolver`` asks the name servers of nginx's ``resolver`` directive over UDP
(RFC 1035 4.2.1), in order and again until ``resolver_timeout`` runs out, and
over TCP (RFC 1035 4.2.2) when an answer comes back truncated. It uses plain
blocking ``socket`` calls: in a worker, where gevent has patched the socket
module, they only block the session's greenlet. Answers are cached per
``Resolver`` for their TTL, or for ``valid=`` when given; errors are not
cached, as in nginx.

``resolve_client_host`` is nginx's PTR, name check, forward lookup and match.
The host it returns is either a bracketed placeholder or a name made only of
``a-z A-Z 0-9 - .`` that resolves back to the client: a hostile PTR name never
reaches auth_http's Client-Host or XCLIENT NAME= (CVE-2026-28753).
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from mailgate.config.values import parse_time_ms
from mailgate.dns_message import (
    RCODE_NOERROR,
    RCODE_NXDOMAIN,
    TYPE_A,
    TYPE_AAAA,
    TYPE_PTR,
    MessageError,
    Query,
    Response,
    fold,
    make_queries,
    parse_response,
    reverse_name,
)
from mailgate.errors import ConfigError

DEFAULT_PORT: Final = 53
# nginx's resolver sends a query again every 5 seconds (resend_timeout).
RESEND_INTERVAL: Final = 5.0
# The largest datagram read. RFC 1035 4.2.1 limits UDP answers to 512
# octets; a bigger one is still accepted rather than cut.
MAX_DATAGRAM: Final = 65535
# Entries a Resolver's cache holds before dropping the oldest.
CACHE_SIZE: Final = 10000

# nginx's NGX_RESOLVE_TIMEDOUT (NGX_ETIMEDOUT) and ngx_resolver_strerror().
RCODE_TIMEDOUT: Final = 110
_RCODE_TEXTS: Final = {
    1: "Format error",
    2: "Server failure",
    3: "Host not found",
    4: "Unimplemented",
    5: "Operation refused",
    RCODE_TIMEDOUT: "Operation timed out",
}

# Hosts sent when there is no name (SPEC 7.1).
UNAVAILABLE: Final = "[UNAVAILABLE]"
TEMPUNAVAIL: Final = "[TEMPUNAVAIL]"
# The error log's action while each step runs (SPEC 10.2).
ACTION_ADDRESS: Final = "in resolving client address"
ACTION_HOSTNAME: Final = "in resolving client hostname"
_HOST_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")


def rcode_text(rcode: int) -> str:
    """nginx's text for a resolver error code."""
    return _RCODE_TEXTS.get(rcode, "Unknown error")


class DnsError(Exception):
    """A lookup failed: ``rcode`` is the DNS RCODE or 110 for a timeout."""

    def __init__(self, rcode: int, text: str | None = None) -> None:
        self.rcode = rcode
        self.text = rcode_text(rcode) if text is None else text
        super().__init__(rcode, self.text)

    def __str__(self) -> str:
        return f"{self.rcode}: {self.text}"


# --- the resolver directive ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameServer:
    host: str  # an IP address
    port: int = DEFAULT_PORT

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_servers(text: str) -> list[NameServer]:
    """``address[:port]`` (IPv6 in brackets) as nginx's URL parser takes it
    with port 53 by default. A host name is resolved now, each address
    becoming a server. ConfigError in nginx's words otherwise."""
    host, port = _split_host_port(text)
    try:
        return [NameServer(str(ipaddress.ip_address(host)), port)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        raise ConfigError(f'host not found in resolver "{text}"') from None
    found = [NameServer(str(info[4][0]), port) for info in infos]
    return list(dict.fromkeys(found))


def _split_host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ConfigError(f'invalid host in resolver "{text}"')
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_ = text.partition(":")
        port_text = port_text_ if colon else None
    # nginx's URL parser checks the port first: "::1" is an invalid port.
    if port_text is not None and not _valid_port(port_text):
        raise ConfigError(f'invalid port in resolver "{text}"')
    if not host:
        raise ConfigError(f'no host in resolver "{text}"')
    return host, DEFAULT_PORT if port_text is None else int(port_text)


def _valid_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 0 < int(text) <= 65535


def _parse_switch(arg: str) -> bool:
    value = arg.partition("=")[2]
    if value not in ("on", "off"):
        raise ConfigError(f"invalid parameter: {arg}")
    return value == "on"


def _parse_valid(arg: str) -> float:
    msec = parse_time_ms(arg.partition("=")[2], seconds_only=True)
    if msec is None:
        raise ConfigError(f"invalid parameter: {arg}")
    return msec / 1000


# --- the cache ----------------------------------------------------------------


class _Cache:
    """Answers by (type, folded name) until they expire."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.entries: dict[tuple[int, str], tuple[float, list[str]]] = {}

    def get(self, qtype: int, name: str) -> list[str] | None:
        entry = self.entries.get((qtype, fold(name)))
        if entry is None or entry[0] <= self.clock():
            return None
        return list(entry[1])

    def put(self, qtype: int, name: str, values: list[str], ttl: float) -> None:
        if ttl <= 0:
            return
        if len(self.entries) >= CACHE_SIZE:
            self._evict()
        key = (qtype, fold(name))
        self.entries.pop(key, None)  # re-insert: the dict's order is age
        self.entries[key] = (self.clock() + ttl, list(values))

    def _evict(self) -> None:
        now = self.clock()
        self.entries = {key: entry for key, entry in self.entries.items() if entry[0] > now}
        while len(self.entries) >= CACHE_SIZE:
            del self.entries[next(iter(self.entries))]


# --- the resolver -------------------------------------------------------------


class Resolver:
    """A stub resolver for the ``resolver``/``resolver_timeout`` directives.

    ``servers``: ``address[:port]`` strings; ``timeout``: seconds for a whole
    lookup; ``valid``: cache time overriding TTLs; ``ipv4``/``ipv6``: which
    address types ``addresses`` asks for. ``clock`` times the cache only.
    """

    def __init__(self, servers: tuple[str, ...], timeout: float, valid: float | None = None,
                 ipv4: bool = True, ipv6: bool = True, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.servers = tuple(server for text in servers for server in parse_servers(text))
        if not self.servers:
            raise ConfigError("no name servers defined")
        if not ipv4 and not ipv6:
            raise ConfigError('"ipv4" and "ipv6" cannot both be "off"')
        self.timeout = timeout
        self.valid = valid
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.cache = _Cache(clock)

    @classmethod
    def from_directive(cls, args: tuple[str, ...], timeout: float) -> Resolver:
        """From ``resolver address ... [valid=time] [ipv4=on|off] [ipv6=on|off]``."""
        servers: list[str] = []
        valid: float | None = None
        ipv4 = ipv6 = True
        for arg in args:
            if arg.startswith("valid="):
                valid = _parse_valid(arg)
            elif arg.startswith("ipv4="):
                ipv4 = _parse_switch(arg)
            elif arg.startswith("ipv6="):
                ipv6 = _parse_switch(arg)
            else:
                servers.append(arg)
        return cls(tuple(servers), timeout, valid, ipv4, ipv6)

    def ptr(self, ip: str) -> list[str]:
        """The names of address ``ip``, lower-cased (as nginx does). Raises
        DnsError, or ValueError if ``ip`` is not an IP address."""
        name = reverse_name(ip)
        cached = self.cache.get(TYPE_PTR, name)
        if cached is not None:
            return cached
        answers = _answers(self._exchange(make_queries(name, (TYPE_PTR,)))[TYPE_PTR])
        names = [fold(value) for value, _ in answers]
        self.cache.put(TYPE_PTR, name, names, self._ttl(answers))
        return names

    def addresses(self, name: str) -> list[str]:
        """The A addresses of ``name``, then its AAAA ones (unless
        ``ipv6=off``; no A with ``ipv4=off``). Raises DnsError when there are
        none, or MessageError if ``name`` cannot be put in a query."""
        qtypes = [qtype for qtype, on in ((TYPE_A, self.ipv4), (TYPE_AAAA, self.ipv6)) if on]
        found: dict[int, list[str]] = {}
        for qtype in qtypes:
            cached = self.cache.get(qtype, name)
            if cached is not None:
                found[qtype] = cached
        errors = self._ask_addresses(name, [qtype for qtype in qtypes if qtype not in found], found)
        addresses = [value for qtype in qtypes for value in found.get(qtype, ())]
        if not addresses:
            raise next((err for err in errors if err.rcode != RCODE_NXDOMAIN), DnsError(RCODE_NXDOMAIN))
        return addresses

    def _ask_addresses(self, name: str, qtypes: list[int], found: dict[int, list[str]]) -> list[DnsError]:
        """Ask for ``qtypes`` of ``name`` at once, adding to ``found`` and the
        cache; returns the errors, A's before AAAA's."""
        errors: list[DnsError] = []
        empty: list[int] = []
        ttls: list[float] = []
        for qtype, result in sorted(self._exchange(make_queries(name, qtypes)).items()):
            try:
                answers = _answers(result)
            except DnsError as err:
                errors.append(err)
                if isinstance(result, Response) and result.rcode == RCODE_NOERROR:
                    empty.append(qtype)
                continue
            found[qtype] = [value for value, _ in answers]
            ttls.append(self._ttl(answers))
            self.cache.put(qtype, name, found[qtype], ttls[-1])
        for qtype in empty if ttls else ():
            # The name has addresses of the other type: like nginx, which
            # keeps both in one cache node, remember this type has none.
            self.cache.put(qtype, name, [], min(ttls))
        return errors

    def _ttl(self, answers: list[tuple[str, int]]) -> float:
        return self.valid if self.valid is not None else min(ttl for _, ttl in answers)

    # --- the exchange with the name servers -----------------------------------

    def _exchange(self, queries: list[Query]) -> dict[int, Response | DnsError]:
        """Each query's response by type; DnsError(110) for those unanswered
        when ``timeout`` runs out. Servers are tried in order, round and
        round, each for a share of the timeout (at most RESEND_INTERVAL)."""
        pending = {query.qtype: query for query in queries}
        results: dict[int, Response | DnsError] = {}
        deadline = time.monotonic() + self.timeout
        window = min(RESEND_INTERVAL, self.timeout / len(self.servers))
        cycle_start = time.monotonic()
        for index, server in enumerate(itertools.cycle(self.servers)):
            now = time.monotonic()
            if not pending or now >= deadline:
                break
            self._udp_round(server, pending, results, min(deadline, now + window), deadline)
            if pending and index % len(self.servers) == len(self.servers) - 1:
                # A round that ended early (servers refused or unreachable):
                # wait out the window rather than spin until the deadline.
                _sleep_until(min(deadline, cycle_start + window))
                cycle_start = time.monotonic()
        results.update({qtype: DnsError(RCODE_TIMEDOUT) for qtype in pending})
        return results

    def _udp_round(self, server: NameServer, pending: dict[int, Query],
                   results: dict[int, Response | DnsError], until: float, deadline: float) -> None:
        """Send every pending query to ``server`` and take its answers until
        ``until``. Datagrams that are malformed or answer nothing we asked are
        ignored (RFC 5452 9.1)."""
        try:
            with socket.socket(server.family, socket.SOCK_DGRAM) as sock:
                sock.connect(server.address)  # only this server's datagrams
                for query in pending.values():
                    sock.send(query.wire())
                while pending:
                    sock.settimeout(_left(until))
                    data = sock.recv(MAX_DATAGRAM)
                    self._take(data, server, pending, results, deadline)
        except OSError:  # timed out, refused, unreachable
            return

    def _take(self, data: bytes, server: NameServer, pending: dict[int, Query],
              results: dict[int, Response | DnsError], deadline: float) -> None:
        for qtype, query in list(pending.items()):
            try:
                response = parse_response(data, query)
            except MessageError:
                continue
            if response.truncated:
                tcp_response = _tcp_exchange(server, query, deadline)
                if tcp_response is None:
                    return  # left pending for the next server
                response = tcp_response
            results[qtype] = response
            del pending[qtype]
            return


def _answers(result: Response | DnsError) -> list[tuple[str, int]]:
    """The answer's ``(value, ttl)`` pairs, or the DnsError it amounts to."""
    if isinstance(result, DnsError):
        raise result
    if result.rcode != RCODE_NOERROR:
        raise DnsError(result.rcode)
    answers = result.answers()
    if not answers:  # nginx: no record of the type is "Host not found"
        raise DnsError(RCODE_NXDOMAIN)
    return answers


def _tcp_exchange(server: NameServer, query: Query, deadline: float) -> Response | None:
    """RFC 1035 4.2.2: the query again over TCP, each message prefixed by its
    two-octet length. None if that fails."""
    wire = query.wire()
    try:
        with socket.socket(server.family, socket.SOCK_STREAM) as sock:
            sock.settimeout(_left(deadline))
            sock.connect(server.address)
            sock.sendall(struct.pack(">H", len(wire)) + wire)
            (length,) = struct.unpack(">H", _recv_exactly(sock, 2, deadline))
            return parse_response(_recv_exactly(sock, length, deadline), query)
    except (OSError, MessageError):
        return None


def _recv_exactly(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        sock.settimeout(_left(deadline))
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("name server closed the connection")
        data += chunk
    return data


def _left(until: float) -> float:
    left = until - time.monotonic()
    if left <= 0:
        raise TimeoutError("DNS query timed out")
    return left


def _sleep_until(moment: float) -> None:
    left = moment - time.monotonic()
    if left > 0:
        time.sleep(left)


_SHARED: dict[tuple[tuple[str, ...], float], Resolver] = {}


def shared_resolver(args: tuple[str, ...], timeout: float) -> Resolver | None:
    """The process's Resolver for a ``resolver`` directive's args (None for
    ``off``), made once so every session shares its cache."""
    if not args or args == ("off",):
        return None
    key = (tuple(args), timeout)
    if key not in _SHARED:
        _SHARED[key] = Resolver.from_directive(args, timeout)
    return _SHARED[key]


# --- the client hostname (SPEC 7.1) -------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientHost:
    """The lookup's outcome. ``host`` goes to Client-Host and XCLIENT NAME=.
    ``logs`` are ``(level, message)`` for the error log, to be written with
    ``action`` (ACTION_ADDRESS or ACTION_HOSTNAME): the step they belong to,
    which is also the last step run."""

    host: str
    logs: list[tuple[str, str]] = field(default_factory=list)
    action: str = ACTION_ADDRESS


def is_valid_host_name(name: str) -> bool:
    """nginx 1.29.7: a PTR name is used only if it is not empty and holds
    nothing but ``a-z A-Z 0-9 - .``."""
    return bool(name) and set(name) <= _HOST_CHARS


def escape_for_log(name: str) -> str:
    """``name`` safe inside a quoted log field: bytes outside printable
    ASCII, ``"`` and ``\\`` become ``\\xHH`` (as nginx's access log escapes)."""
    return "".join(ch if " " <= ch <= "~" and ch not in '"\\' else f"\\x{ord(ch):02X}" for ch in name)


def resolve_client_host(resolver: Resolver | None, client_ip: str | None) -> ClientHost:
    """nginx's client hostname for an SMTP session, with the lines to log.

    ``resolver`` None is ``resolver off``: ``[UNAVAILABLE]``, no lookup.
    ``client_ip`` None, or not an IP address (a UNIX-socket client):
    ``[TEMPUNAVAIL]``, no lookup."""
    if resolver is None:
        return ClientHost(UNAVAILABLE)
    address = _client_address(client_ip)
    if address is None:
        return ClientHost(TEMPUNAVAIL)
    try:
        names = resolver.ptr(str(address))
    except DnsError as err:
        return _failed(err, f"{client_ip} could not be resolved ({err})", ACTION_ADDRESS)
    name = names[0].removesuffix(".")
    if not is_valid_host_name(name):
        message = f'{client_ip} resolved to invalid host name "{escape_for_log(name)}"'
        return ClientHost(TEMPUNAVAIL, [("error", message)], ACTION_ADDRESS)
    try:
        addresses = resolver.addresses(name)
    except DnsError as err:
        return _failed(err, f'"{name}" could not be resolved ({err})', ACTION_HOSTNAME)
    except MessageError:  # a name no query can carry cannot be confirmed
        return ClientHost(UNAVAILABLE, [], ACTION_HOSTNAME)
    if any(_client_address(found) == address for found in addresses):
        return ClientHost(name, [], ACTION_HOSTNAME)
    return ClientHost(UNAVAILABLE, [], ACTION_HOSTNAME)


def _failed(err: DnsError, message: str, action: str) -> ClientHost:
    host = UNAVAILABLE if err.rcode == RCODE_NXDOMAIN else TEMPUNAVAIL
    return ClientHost(host, [("error", message)], action)


def _client_address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an address to compare: no IPv6 zone, and an IPv4-mapped
    IPv6 address as the IPv4 address it carries. None if not an address."""
    if text is None:
        return None
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
