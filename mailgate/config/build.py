"""Directive nodes -> the frozen model, by the rules of the directive table.

The checks follow nginx's order where it is observable: a directive is
looked up (unknown, not allowed here), its terminator and argument count are
checked, its value parsed, then combined with the other lines of its level.
After a ``server {}`` block: "no "listen" is defined"; after the whole
``mail {}`` block, for every server, the protocol, then TLS (certificates
for ``listen ... ssl`` and ``starttls``), then authentication (nginx checks
these while merging ``mail`` into ``server``, module by module).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailgate.config.directives import (
    DIRECTIVES,
    EVENTS,
    FOREIGN,
    MAIL,
    MAIN,
    PROTOCOLS,
    SERVER,
    Merge,
    Spec,
)
from mailgate.config.listen import compute_bindings
from mailgate.config.model import Config, Listen, LogTarget, Main, Server, Source, Ssl
from mailgate.config.nodes import Directive
from mailgate.config.sslconf import shown
from mailgate.config.values import Context, directive_error, fail
from mailgate.errors import ConfigError

# Where the main error log goes when no error_log is set (nginx: the
# compiled-in logs/error.log).
DEFAULT_ERROR_LOG = LogTarget(kind="file", path="/var/log/mailgate/error.log")

_FOREIGN_ANYWHERE = frozenset(name for names in FOREIGN.values() for name in names)


@dataclass(slots=True)
class Level:
    """The values set on one level (main, ``mail {}`` or one ``server {}``)."""

    values: dict[str, Any] = field(default_factory=dict)
    # The last line of each directive, for checks that name where it was set.
    where: dict[str, Directive] = field(default_factory=dict)

    def add(self, spec: Spec, d: Directive, value: Any, ctx: Context) -> None:
        """Combine one more line of ``spec`` with what the level has."""
        if spec.excludes is not None and spec.excludes in self.values:
            raise fail(f'"{d.name}" directive is not allowed together with "{spec.excludes}"', d)
        self.where[spec.name] = d
        if spec.name not in self.values:
            self.values[spec.name] = (value,) if spec.merge is Merge.EACH else value
            return
        old = self.values[spec.name]
        if spec.merge is Merge.ONCE:
            raise directive_error(d, "is duplicate")
        if spec.merge is Merge.LAST:
            self.values[spec.name] = value
        elif spec.merge is Merge.EACH:
            self.values[spec.name] = (*old, value)
        elif spec.merge is Merge.APPEND:
            self.values[spec.name] = (*old, *value)
        else:  # UNION: nginx ORs bitmask lines together
            for arg in d.args:
                if arg.lower() in (item.lower() for item in old):
                    ctx.warn(f'duplicate value "{arg}"', d)
            self.values[spec.name] = (*old, *(item for item in value if item not in old))


def build(nodes: tuple[Directive, ...], path: str) -> tuple[Config, list[str]]:
    """The model for ``nodes`` read from ``path``, and the warnings."""
    path = os.path.abspath(path)
    builder = _Builder(Context(base_dir=os.path.dirname(path)))
    config = builder.config(nodes, path)
    return config, builder.ctx.warnings


class _Builder:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # Every listen so far, across servers: nginx refuses the same
        # address and port twice (ngx_mail_core_listen).
        self.listen_keys: set[tuple[str, str, int]] = set()

    def config(self, nodes: tuple[Directive, ...], path: str) -> Config:
        main = Level()
        servers: list[Server] = []

        def block(d: Directive) -> None:
            if d.name == "events":
                self.read_level(d.block or (), EVENTS, main, block)
            else:
                servers.extend(self.mail(d))

        self.read_level(nodes, MAIN, main, block)
        return Config(path=path, main=self.main(main), servers=tuple(servers),
                      bindings=compute_bindings(tuple(servers)))

    def lookup(self, d: Directive, context: str) -> Spec | None:
        """The directive's Spec after nginx's checks (ngx_conf_handler), or
        None for a foreign nginx directive that is skipped."""
        spec = DIRECTIVES.get(d.name)
        if spec is None or context not in spec.contexts:
            if d.name in FOREIGN.get(context, {}):
                self.ctx.warn(f'"{d.name}" directive is ignored (not a mail directive)', d)
                return None
            if spec is None and d.name not in _FOREIGN_ANYWHERE:
                raise fail(f'unknown directive "{d.name}"', d)
            raise directive_error(d, "is not allowed here")
        if spec.block and d.block is None:
            raise fail(f'directive "{d.name}" has no opening "{{"', d)
        if not spec.block and d.block is not None:
            raise fail(f'directive "{d.name}" is not terminated by ";"', d)
        least, most = spec.nargs
        if len(d.args) < least or (most is not None and len(d.args) > most):
            raise fail(f'invalid number of arguments in "{d.name}" directive', d)
        return spec

    def read_level(self, nodes: tuple[Directive, ...], context: str, level: Level,
                   on_block: Callable[[Directive], None]) -> None:
        """Apply one block's directives to ``level`` in order, handing each
        nested block to ``on_block`` when it comes (nginx reads them inline)."""
        seen_blocks: set[str] = set()
        for d in nodes:
            spec = self.lookup(d, context)
            if spec is None or spec.parse is None and not spec.block:
                continue  # skipped foreign directive; include (expanded already)
            if spec.block:
                if spec.merge is Merge.ONCE and d.name in seen_blocks:
                    raise directive_error(d, "is duplicate")
                seen_blocks.add(d.name)
                on_block(d)
                continue
            assert spec.parse is not None
            value = spec.parse(d, self.ctx)
            if not spec.is_supported(d):
                raise directive_error(d, "is not supported yet")
            if spec.name == "listen":
                self.listen(d, value, level)
            level.add(spec, d, value, self.ctx)

    def listen(self, d: Directive, listens: tuple[Listen, ...], level: Level) -> None:
        """Duplicate check, and protocol auto-detection: while ``protocol``
        is unset, the port of a listen picks it (ngx_mail_core_listen); a
        later ``protocol`` line still overrides it."""
        for listen in listens:
            if listen.key in self.listen_keys:
                raise fail(f'duplicate "{listen.text}" address and port pair', d)
            self.listen_keys.add(listen.key)
        if "protocol" not in level.values:
            port = listens[0].port  # nginx: u.port, the first port of a range
            for protocol in PROTOCOLS.values():
                if port in protocol.ports:
                    level.values["protocol"] = protocol.name
                    break

    def mail(self, d: Directive) -> tuple[Server, ...]:
        mail = Level()
        levels: list[tuple[Directive, Level]] = []

        def server_block(block: Directive) -> None:
            level = Level()
            self.read_level(block.block or (), SERVER, level, _no_blocks)
            if "listen" not in level.values:
                raise fail('no "listen" is defined for server', block)
            levels.append((block, level))

        self.read_level(d.block or (), MAIL, mail, server_block)
        for block, level in levels:
            protocol = level.values.get("protocol")
            if protocol is None:
                raise fail("unknown mail protocol for server", block)
            if not PROTOCOLS[protocol].supported:
                raise fail(f'"{protocol}" protocol is not supported yet', block)
        servers = tuple(self.server(block, level, mail) for block, level in levels)
        for (block, _level), server in zip(levels, servers):
            if server.auth_http is None and server.auth_file is None:
                raise fail('no "auth_http" or "auth_file" is defined for server', block)
        return servers

    def server(self, d: Directive, level: Level, mail: Level) -> Server:
        """A server with each value from its own level, else ``mail {}``,
        else the default."""
        fields: dict[str, Any] = {}
        groups: dict[str, dict[str, Any]] = {"ssl": {}}
        for spec in DIRECTIVES.values():
            if spec.field is None or SERVER not in spec.contexts:
                continue
            source = level
            if spec.name not in level.values and (
                    spec.excludes is None or spec.excludes not in level.values):
                source = mail
            group, _, name = spec.field.rpartition(".")
            target = groups[group] if group else fields
            target[name] = source.values.get(spec.name, spec.default)
        fields["listens"] = tuple(item for group in fields["listens"] for item in group)
        fields["server_name"] = fields["server_name"] or socket.gethostname().lower()
        fields["ssl"] = _ssl(fields, groups["ssl"], level, mail)
        return Server(source=Source(d.file, d.line), **fields)

    def main(self, level: Level) -> Main:
        fields = {
            spec.field: level.values.get(spec.name, spec.default)
            for spec in DIRECTIVES.values()
            if spec.field is not None and (MAIN in spec.contexts or EVENTS in spec.contexts)
        }
        fields["error_log"] = fields["error_log"] or (DEFAULT_ERROR_LOG,)
        return Main(**fields)



def _ssl(fields: dict[str, Any], values: dict[str, Any], level: Level, mail: Level) -> Ssl:
    """The server's Ssl, after nginx's checks (ngx_mail_ssl_merge_conf):
    a server with ``listen ... ssl`` or ``starttls on|only`` needs as many
    keys as certificates, and ``ssl_verify_client`` needs a CA (but for
    ``optional_no_ca``). A server without TLS is not checked at all."""
    certificates, keys = values.pop("certificates"), values.pop("certificate_keys")
    ssl = Ssl(certificates=tuple(zip(certificates, keys)), **values)
    mode, where = _tls_mode(fields, level, mail)
    if where is None:
        return ssl
    file, line = where
    if not certificates:
        raise ConfigError(f'no "ssl_certificate" is defined for the "{mode}" directive in '
                          f"{file}:{line}")
    if not keys:
        raise ConfigError(f'no "ssl_certificate_key" is defined for the "{mode}" directive in '
                          f"{file}:{line}")
    if len(keys) < len(certificates):
        raise ConfigError(f'no "ssl_certificate_key" is defined for certificate '
                          f'"{shown(certificates[-1])}" and the "{mode}" directive in '
                          f"{file}:{line}")
    if (ssl.verify_client not in ("off", "optional_no_ca")
            and ssl.client_certificate is None and ssl.trusted_certificate is None):
        d = level.where.get("ssl_verify_client") or mail.where["ssl_verify_client"]
        raise fail("no ssl_client_certificate or ssl_trusted_certificate for ssl_verify_client",
                   d)
    return ssl


def _tls_mode(fields: dict[str, Any], level: Level,
              mail: Level) -> tuple[str, tuple[str, int] | None]:
    """nginx's "mode" of a server and where it was set: the last ``listen
    ... ssl`` line, else the ``starttls`` line of the server, else that of
    ``mail {}``. The check's message ends with that place (nginx prints it
    itself, as the error is found while merging, not while reading)."""
    ssl_listens = [listen for listen in fields["listens"] if listen.ssl]
    if ssl_listens:
        source = ssl_listens[-1].source
        return "listen ... ssl", (source.file, source.line)
    if fields["starttls"] != "off":
        d = level.where.get("starttls") or mail.where["starttls"]
        return "starttls", d.where
    return "", None


def _no_blocks(d: Directive) -> None:
    """server {} holds no blocks: the table allows none there, so this is
    never called."""
    raise AssertionError(d)
