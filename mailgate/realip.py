"""set_real_ip_from: which peers may tell us the client's address (SPEC 2.5, 3.1).

nginx's ngx_mail_realip_module. When a connection's PROXY header carried
addresses and the connecting peer is trusted, the header's source address
and port replace the peer's as the session's client: in Client-IP, the
XCLIENT ADDR, the PROXY header sent to backends and the ``client:`` field
of the log lines that follow.

Entries are parsed as nginx's ngx_ptocidr does: an IPv4 or IPv6 address, a
CIDR block (host bits set are cleared, with a warning), or ``unix:`` for
every unix-socket peer. nginx resolves a host name at load time; that is the
configuration layer's business, which passes the addresses it found.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final

from mailgate.protocol.proxy_protocol import ProxyHeader, format_ip, parse_ip

__all__ = ["TrustedProxies", "real_client"]

UNIX: Final = "unix:"

Network = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The ``set_real_ip_from`` entries of one server.

    ``warnings`` are nginx's config warnings for the entries (``low address
    bits of 10.0.0.1/8 are meaningless``), for the caller to log with the
    directive's file and line. An empty instance is false: realip is off.
    """

    networks: tuple[Network, ...] = ()
    unix: bool = False
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_directive_values(cls, values: tuple[str, ...]) -> TrustedProxies:
        """Parse the entries; ValueError names the first one that is not an
        address, a CIDR block or ``unix:``."""
        networks: list[Network] = []
        warnings: list[str] = []
        unix = False
        for value in values:
            if value == UNIX:
                unix = True
                continue
            network, exact = _parse_cidr(value)
            if not exact:
                warnings.append(f"low address bits of {value} are meaningless")
            if network not in networks:
                networks.append(network)
        return cls(tuple(networks), unix, tuple(warnings))

    def __bool__(self) -> bool:
        return self.unix or bool(self.networks)

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (an IP address, or None for a unix-socket peer)
        matches an entry. Like nginx's ngx_cidr_match, an IPv4-mapped IPv6
        peer is compared as the IPv4 address it maps."""
        if peer is None or peer.startswith(UNIX):
            return self.unix
        ip = parse_ip(peer.split("%", 1)[0])
        if ip is None:
            return False
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks if network.version == ip.version)


def real_client(
    peer_ip: str | None,
    peer_port: int,
    header: ProxyHeader | None,
    trusted: TrustedProxies | None,
) -> tuple[str | None, int]:
    """The session's client address and port (SPEC 3.1): the PROXY header's
    source if realip is configured, the header carried addresses, the
    connecting peer is trusted and the source is an IP literal; otherwise the
    peer's own (``peer_ip`` None for a unix-socket peer). The address is
    printed as nginx prints it."""
    if not trusted or header is None or header.src_addr is None or header.src_port is None:
        return peer_ip, peer_port
    if not trusted.trusts(peer_ip):
        return peer_ip, peer_port
    source = parse_ip(header.src_addr)
    if source is None:
        return peer_ip, peer_port
    return format_ip(source), header.src_port


# --- entries (nginx's ngx_ptocidr) -------------------------------------------


def _parse_cidr(value: str) -> tuple[Network, bool]:
    """The network of ``address[/bits]``, and whether it had no host bits."""
    text, slash, bits_text = value.partition("/")
    ip = _parse_address(text)
    if ip is None:
        raise _invalid(value)
    width: int = ip.max_prefixlen
    if not slash:
        bits = width
    elif bits_text.isascii() and bits_text.isdigit() and int(bits_text) <= width:
        bits = int(bits_text)
    else:
        raise _invalid(value)
    mask = ((1 << width) - 1) ^ ((1 << (width - bits)) - 1)
    base = int(ip) & mask
    kind = IPv4Network if ip.version == 4 else IPv6Network
    return kind((base, bits)), base == int(ip)


def _parse_address(text: str) -> IPv4Address | IPv6Address | None:
    """An IPv4 address in nginx's ngx_inet_addr syntax (which allows
    leading zeros: ``010.0.0.1`` is 10.0.0.1), or an IPv6 literal."""
    parts = text.split(".")
    if len(parts) == 4 and all(part.isascii() and part.isdigit() for part in parts):
        digits = [part.lstrip("0") or "0" for part in parts]
        if all(len(octet) <= 3 and int(octet) <= 255 for octet in digits):
            return IPv4Address(bytes(int(octet) for octet in digits))
        return None
    ip = parse_ip(text)
    return ip if isinstance(ip, IPv6Address) else None


def _invalid(value: str) -> ValueError:
    return ValueError(
        f'invalid value "{value}" in "set_real_ip_from": expected an IP address, '
        f'a CIDR block (address/bits) or "unix:"'
    )
