"""Address parsing as nginx's ``ngx_parse_url`` does it, and the ``auth_http``
URL built on top of it.

The same parser serves ``listen`` (no URI allowed, a bare port means every
address, ``*`` is the wildcard, port ranges ``a-b``), ``auth_http`` (a URI
part, default port 80) and ``syslog:server=`` (default port 514). Host
names are resolved once, here, at load time: nginx does the same and never
looks them up again until a reload.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from mailgate.config.model import AuthHttpUrl
from mailgate.config.nodes import Directive
from mailgate.config.values import Context, atoi, fail

# sockaddr_un.sun_path is 108 bytes on Linux, including the NUL.
UNIX_PATH_MAX = 107


class UrlError(Exception):
    """``u->err`` of ngx_parse_url: the caller words the full message."""


@dataclass(frozen=True, slots=True)
class Url:
    """The parts of a parsed address.

    ``host`` is written as in the config (brackets kept for IPv6, empty for a
    bare port); ``addresses`` are (family, ip) pairs, or one ("unix", path).
    """

    host: str
    port: int
    last_port: int  # end of a listen port range, else == port
    uri: str
    addresses: tuple[tuple[str, str], ...]


def resolve_host(host: str) -> list[tuple[str, str]]:
    """Every address of ``host`` as (family, ip), IPv4 first, as
    ngx_inet_resolve_host orders them; [] if it does not resolve."""
    literal = _ip_literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    found: list[tuple[str, str]] = []
    for family, name in ((socket.AF_INET, "inet"), (socket.AF_INET6, "inet6")):
        for info in infos:
            pair = (name, str(info[4][0]))
            if info[0] == family and pair not in found:
                found.append(pair)
    return found


def _ip_literal(host: str) -> tuple[str, str] | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return ("inet6" if ip.version == 6 else "inet", str(ip))


def parse_url(text: str, *, listen: bool = False, uri_part: bool = False,
              default_port: int = 0) -> Url:
    """ngx_parse_url for the forms mail uses; raises UrlError(u->err)."""
    if text[:5].lower() == "unix:":
        return _parse_unix(text[5:], uri_part)
    if text.startswith("["):
        return _parse_inet6(text, listen, uri_part, default_port)
    return _parse_inet(text, listen, uri_part, default_port)


def _parse_unix(rest: str, uri_part: bool) -> Url:
    path, uri = rest, ""
    if uri_part and ":" in rest:
        path, uri = rest.split(":", 1)
    if not path:
        raise UrlError("no path in the unix domain socket")
    if len(path.encode()) > UNIX_PATH_MAX:
        raise UrlError("too long path in the unix domain socket")
    return Url(host="", port=0, last_port=0, uri=uri, addresses=(("unix", path),))


def _split_uri(text: str, listen: bool, uri_part: bool) -> tuple[str, str]:
    """Cut the URI (from the first ``/`` or ``?``) off an address."""
    match = re.search(r"[/?]", text)
    if match is None:
        return text, ""
    if listen or not uri_part:
        raise UrlError("invalid host")
    return text[: match.start()], text[match.start():]


def _port(text: str) -> int:
    value = atoi(text)
    if value is None or not 1 <= value <= 65535:
        raise UrlError("invalid port")
    return value


def _ports(text: str, listen: bool) -> tuple[int, int]:
    """A port, or for ``listen`` a range ``a-b``."""
    if listen and "-" in text:
        first, last = text.split("-", 1)
        start, end = _port(first), _port(last)
        if start > end:
            raise UrlError("invalid port range")
        return start, end
    port = _port(text)
    return port, port


def _parse_inet6(text: str, listen: bool, uri_part: bool, default_port: int) -> Url:
    end = text.find("]")
    if end < 0:
        raise UrlError("invalid host")
    rest, uri = _split_uri(text[end + 1:], listen, uri_part)
    if rest and not rest.startswith(":"):
        raise UrlError("invalid host")
    port, last_port = _ports(rest[1:], listen) if rest else (default_port, default_port)
    inside = text[1:end]
    if not inside:
        raise UrlError("no host")
    literal = _ip_literal(inside)
    if literal is None or literal[0] != "inet6":
        raise UrlError("invalid IPv6 address")
    return Url(text[: end + 1], port, last_port, uri, (literal,))


def _parse_inet(text: str, listen: bool, uri_part: bool, default_port: int) -> Url:
    hostport, uri = _split_uri(text, listen, uri_part)
    host, sep, port_text = hostport.partition(":")
    if sep:
        port, last_port = _ports(port_text, listen)
    elif listen and not uri and _looks_like_port(hostport):
        # "listen 110": a bare port means every IPv4 address.
        port, last_port = _ports(hostport, listen)
        return Url("", port, last_port, "", (("inet", "0.0.0.0"),))
    else:
        port = last_port = default_port
    if not host:
        raise UrlError("no host")
    if listen and host == "*":
        return Url(host, port, last_port, uri, (("inet", "0.0.0.0"),))
    addresses = resolve_host(host)
    if not addresses:
        raise UrlError("host not found")
    return Url(host, port, last_port, uri, tuple(addresses))


def _looks_like_port(text: str) -> bool:
    first = text.split("-", 1)[0]
    return atoi(first) is not None


# --- auth_http (ngx_mail_auth_http_module.c: ngx_mail_auth_http) -------------


def p_auth_http(d: Directive, ctx: Context) -> AuthHttpUrl:
    """``auth_http [http://]host[:port][/uri]``, ``[v6]:port/uri`` or
    ``unix:/path[:/uri]``. Only the first resolved address is ever used."""
    written = d.args[0]
    text = written.removeprefix("http://")
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise fail(f'invalid URL prefix in "{written}"', d)
    try:
        url = parse_url(text, uri_part=True, default_port=80)
    except UrlError as err:
        raise fail(f'{err} in auth_http "{text}"', d) from None
    family, host = url.addresses[0]
    return AuthHttpUrl(
        url=written,
        family=family,
        host=host,
        port=url.port if family != "unix" else 0,
        uri=url.uri or "/",
        host_header=url.host if family != "unix" else "localhost",
    )


def address_text(family: str, host: str, port: int) -> str:
    """An address as nginx prints it (ngx_sock_ntop with port)."""
    if family == "unix":
        return f"unix:{host}"
    if family == "inet6":
        return f"[{host}]:{port}"
    return f"{host}:{port}"
