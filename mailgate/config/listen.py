"""``listen`` (ngx_mail_core_module.c ngx_mail_core_listen) and the sockets
the master binds for all of them (ngx_mail.c ngx_mail_optimize_servers).

A ``listen`` line may stand for several sockets: a host name is resolved
and each address listens, and a port range ``a-b`` listens on each port.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailgate.config.addresses import UrlError, address_text, parse_url
from mailgate.config.model import Binding, KeepAlive, Listen, Route, Server, Source
from mailgate.config.nodes import Directive
from mailgate.config.values import Context, atoi, fail, parse_size, parse_time_ms

# What one parameter sets on the Listen, from the text after "name=".
ParamParser = Callable[[str], dict[str, Any] | None]


@dataclass(frozen=True, slots=True)
class ListenParam:
    """One ``listen`` parameter.

    ``value`` says it is written ``name=value``; ``implies_bind`` is nginx's
    rule that a socket option needs a socket of its own; ``error`` is nginx's
    message for a bad value (``{}`` gets the text nginx prints). A parameter
    that is not ``supported`` yet is refused at load, so that turning it on
    later is flipping the flag once the runtime implements it.
    """

    name: str
    parse: ParamParser
    value: bool = False
    implies_bind: bool = False
    supported: bool = True
    error: str = 'invalid parameter "{}"'


def _flag_param(field: str) -> ParamParser:
    return lambda _text: {field: True}


def _backlog(text: str) -> dict[str, Any] | None:
    value = atoi(text)
    return {"backlog": value} if value else None  # nginx refuses 0 too


def _buffer(field: str) -> ParamParser:
    def parse(text: str) -> dict[str, Any] | None:
        value = parse_size(text) if text else None
        return None if value is None else {field: value}

    return parse


def _ipv6only(text: str) -> dict[str, Any] | None:
    if text not in ("on", "off"):
        return None
    return {"ipv6only": text == "on"}


def _keepalive(text: str) -> dict[str, Any] | None:
    """``on``, ``off`` or ``[idle]:[intvl]:[cnt]`` (idle and intvl in nginx
    time syntax, whole seconds); an empty or zero part keeps the system value,
    but not all three."""
    if text in ("on", "off"):
        return {"so_keepalive": text == "on"}
    parts = (text.split(":") + ["", ""])[:3] if text.count(":") <= 2 else None
    if parts is None:
        return None
    times = [parse_time_ms(p, seconds_only=True) if p else 0 for p in parts[:2]]
    count = atoi(parts[2]) if parts[2] else 0
    if None in times or count is None:
        return None
    idle, interval = (t // 1000 if t else None for t in times)
    keepalive = KeepAlive(idle=idle, interval=interval, count=count or None)
    if keepalive == KeepAlive():
        return None
    return {"so_keepalive": keepalive}


# The parameters of ngx_mail_core_listen, with their messages.
LISTEN_PARAMETERS: dict[str, ListenParam] = {
    p.name: p
    for p in (
        ListenParam("bind", _flag_param("bind")),
        ListenParam("backlog", _backlog, value=True, implies_bind=True,
                    error='invalid backlog "{}"'),
        ListenParam("rcvbuf", _buffer("rcvbuf"), value=True, implies_bind=True,
                    error='invalid rcvbuf "{}"'),
        ListenParam("sndbuf", _buffer("sndbuf"), value=True, implies_bind=True,
                    error='invalid sndbuf "{}"'),
        ListenParam("ipv6only", _ipv6only, value=True, implies_bind=True,
                    error='invalid ipv6only flags "{}"'),
        ListenParam("so_keepalive", _keepalive, value=True, implies_bind=True,
                    error='invalid so_keepalive value: "{}"'),
        ListenParam("ssl", _flag_param("ssl")),
        ListenParam("proxy_protocol", _flag_param("proxy_protocol")),
        # MPTCP (nginx 1.29.7); not modelled on Listen until supported.
        ListenParam("multipath", lambda _text: {}, implies_bind=True, supported=False),
    )
}


def p_listen(d: Directive, ctx: Context) -> tuple[Listen, ...]:
    """One ``listen`` line: a Listen per resolved address and port."""
    text = d.args[0]
    try:
        url = parse_url(text, listen=True)
    except UrlError as err:
        raise fail(f'{err} in "{text}" of the "listen" directive', d) from None
    if url.port == 0 and url.addresses[0][0] != "unix":
        raise fail(f'no port in "{text}" of the "listen" directive', d)
    options = _parameters(d)
    source = Source(d.file, d.line)
    listens = []
    for port in range(url.port, url.last_port + 1):
        for family, host in url.addresses:
            listens.append(Listen(text=address_text(family, host, port), family=family,
                                  host=host, port=port, source=source, **options))
    return tuple(listens)


def _parameters(d: Directive) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for arg in d.args[1:]:
        name, sep, value = arg.partition("=")
        param = LISTEN_PARAMETERS.get(name)
        if param is None or param.value != bool(sep):
            raise fail(f'invalid parameter "{arg}"', d)
        parsed = param.parse(value)
        if parsed is None:
            raise fail(param.error.format(value if name == "ipv6only" else arg), d)
        if not param.supported:
            raise fail(f'the "{name}" parameter of the "listen" directive is not supported yet', d)
        options.update(parsed)
        if param.implies_bind:
            options["bind"] = True
    return options


# --- bindings -----------------------------------------------------------------


def compute_bindings(servers: tuple[Server, ...]) -> tuple[Binding, ...]:
    """The sockets to bind, as ngx_mail_optimize_servers chooses them.

    For each (family, port) with a wildcard listen, specific addresses that
    do not ask for a socket of their own (``bind`` or a socket option) are
    not bound: the wildcard socket accepts for them, and the local address
    of each connection picks the server. Everything else gets its own socket.
    """
    routes = [(listen, Route(listen, index))
              for index, server in enumerate(servers) for listen in server.listens]
    wildcards = {(lst.family, lst.port): route for lst, route in routes if lst.wildcard}
    folded: dict[tuple[str, int], list[tuple[str, Route]]] = {}
    for listen, route in routes:
        wildcard = wildcards.get((listen.family, listen.port))
        if wildcard is not None and not listen.bind and not listen.wildcard:
            folded.setdefault((listen.family, listen.port), []).append((listen.host, route))
    bindings = []
    for listen, route in routes:
        port_key = (listen.family, listen.port)
        if listen.wildcard:
            bindings.append(Binding(listen, route, tuple(folded.get(port_key, ()))))
        elif port_key not in wildcards or listen.bind:
            bindings.append(Binding(listen, route))
    return tuple(bindings)

