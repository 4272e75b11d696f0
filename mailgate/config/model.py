"""The configuration model: one frozen, typed tree built from either syntax.

Both front-ends (YAML and nginx syntax) produce nodes; ``build.py`` turns the
nodes into this model, applying nginx's defaults and its ``mail`` -> ``server``
inheritance. Everything here is immutable so a worker can keep using the model
it was forked with while the master loads a new one on reload.

Times are seconds (float), sizes bytes (int), paths absolute.
"""

from __future__ import annotations

from dataclasses import dataclass

# Log levels in nginx's order, most severe first (ngx_log.c err_levels).
LOG_LEVELS: tuple[str, ...] = ("emerg", "alert", "crit", "error", "warn", "notice", "info", "debug")


@dataclass(frozen=True, slots=True)
class Source:
    """Where something was declared."""

    file: str
    line: int


@dataclass(frozen=True, slots=True)
class LogTarget:
    """One ``error_log`` destination.

    kind is ``file`` (path set), ``stderr``, or ``syslog`` (server set; for
    syslog ``level`` filters and ``severity`` is the syslog severity sent).
    """

    kind: str
    level: str = "error"
    path: str = ""
    server: str = ""  # syslog: "unix:/dev/log" or "host:port"
    facility: str = "local7"
    tag: str = "mailgate"
    severity: str = "info"
    nohostname: bool = False


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """``so_keepalive=idle:intvl:cnt``; a None field keeps the system default."""

    idle: int | None = None
    interval: int | None = None
    count: int | None = None


@dataclass(frozen=True, slots=True)
class Listen:
    """One ``listen`` directive (after host name resolution: one per address).

    ``text`` is the address as nginx prints it in the ``server:`` log field:
    ``127.0.0.1:110``, ``0.0.0.0:110`` for ``listen 110``, ``[::]:110``,
    ``unix:/path``.
    """

    text: str
    family: str  # "inet" | "inet6" | "unix"
    host: str  # IP literal, or the socket path for unix
    port: int  # 0 for unix
    source: Source
    ssl: bool = False
    proxy_protocol: bool = False
    bind: bool = False
    backlog: int = 511
    rcvbuf: int | None = None
    sndbuf: int | None = None
    ipv6only: bool = True
    so_keepalive: bool | KeepAlive | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        """Identity of the socket: two listens with the same key are one socket."""
        return (self.family, self.host, self.port)

    @property
    def wildcard(self) -> bool:
        return self.host in ("0.0.0.0", "::")

    def socket_options(self) -> tuple[object, ...]:
        """Options that need a socket of their own (nginx: they imply ``bind``)."""
        return (self.backlog, self.rcvbuf, self.sndbuf, self.ipv6only, self.so_keepalive)


@dataclass(frozen=True, slots=True)
class AuthHttpUrl:
    """A parsed ``auth_http`` URL (nginx forms: host[:port][/uri], [v6]:port/uri,
    unix:/path[:/uri], optionally prefixed with ``http://``).

    ``address`` is what nginx resolved at load time: the first address of the
    host, as ``ip:port`` (``[v6]:port``) or ``unix:/path``; it names the auth
    server in log lines. ``host_header`` is the ``Host:`` value.
    """

    url: str  # as written, for error messages
    family: str  # "inet" | "inet6" | "unix"
    host: str  # IP literal after resolution, or the unix socket path
    port: int
    uri: str
    host_header: str

    @property
    def address(self) -> str:
        if self.family == "unix":
            return f"unix:{self.host}"
        if self.family == "inet6":
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Ssl:
    """The ngx_mail_ssl_module directives of one server (``ssl_<field>``).

    ``certificates`` pairs the i-th ``ssl_certificate`` with the i-th
    ``ssl_certificate_key`` as nginx does. Certificate, key, CA and CRL
    values are absolute paths or ``data:`` PEM text. Nothing here is read
    or loaded: ``mailgate.tls`` does that in the workers (and for
    ``mailgate test``), so the master never needs the ssl module.
    """

    certificates: tuple[tuple[str, str], ...] = ()
    password_file: str | None = None
    protocols: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    ciphers: str = "HIGH:!aNULL:!MD5"
    prefer_server_ciphers: bool = False
    dhparam: str | None = None
    ecdh_curve: str = "auto"
    session_cache: tuple[str, ...] = ("none",)  # the arguments, checked
    session_tickets: bool = True
    session_ticket_keys: tuple[str, ...] = ()
    session_timeout: int = 300
    verify_client: str = "off"  # "off" | "on" | "optional" | "optional_no_ca"
    verify_depth: int = 1
    client_certificate: str | None = None
    trusted_certificate: str | None = None
    crl: str | None = None
    conf_commands: tuple[tuple[str, str], ...] = ()
    certificate_compression: bool = False


@dataclass(frozen=True, slots=True)
class Server:
    """One ``server {}`` with every inherited value resolved.

    Field names are the directive names, but for the ``ssl_*`` directives,
    grouped in ``ssl``. Auth method lists are normalised to lower case and
    kept in the directive's order; capability lists are kept exactly as
    written (SPEC 2.10).
    """

    protocol: str  # "pop3" | "imap" | "smtp"
    listens: tuple[Listen, ...]
    source: Source
    # ngx_mail_core_module
    timeout: float = 60.0
    server_name: str = "localhost"
    error_log: tuple[LogTarget, ...] = ()  # empty: the main error log
    max_errors: int = 5
    resolver: tuple[str, ...] = ()  # empty: off
    resolver_timeout: float = 30.0
    # ngx_mail_auth_http_module, and mailgate's embedded users file
    auth_http: AuthHttpUrl | None = None
    auth_http_header: tuple[tuple[str, str], ...] = ()
    auth_http_timeout: float = 60.0
    auth_http_pass_client_cert: bool = False
    auth_file: str | None = None
    # ngx_mail_proxy_module
    proxy: bool = False  # nginx parses it and never reads it (SPEC 2.4)
    proxy_buffer: int = 4096
    proxy_pass_error_message: bool = False
    proxy_protocol: str = "off"  # "off" | "on" | "v2"
    proxy_smtp_auth: bool = False
    proxy_timeout: float = 86400.0
    xclient: bool = True
    # ngx_mail_realip_module
    set_real_ip_from: tuple[str, ...] = ()
    # ngx_mail_ssl_module
    starttls: str = "off"  # "off" | "on" | "only"
    ssl: Ssl = Ssl()
    # protocols
    pop3_auth: tuple[str, ...] = ("plain",)
    pop3_capabilities: tuple[str, ...] = ("TOP", "USER", "UIDL")
    pop3_client_buffer: int = 4096
    imap_auth: tuple[str, ...] = ("plain",)
    imap_capabilities: tuple[str, ...] = ("IMAP4", "IMAP4rev1", "UIDPLUS")
    imap_client_buffer: int = 4096
    smtp_auth: tuple[str, ...] = ("plain", "login")
    smtp_capabilities: tuple[str, ...] = ()
    smtp_client_buffer: int = 4096
    smtp_greeting_delay: float = 0.0

    @property
    def uses_tls(self) -> bool:
        """A ``listen ... ssl`` or ``starttls on|only``: the server needs
        its certificates (nginx's ngx_mail_ssl_merge_conf "mode")."""
        return self.starttls != "off" or any(listen.ssl for listen in self.listens)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a connection accepted on a binding goes: the ``listen`` it matched
    (its text is the ``server:`` log field) and the server (index into
    ``Config.servers``)."""

    listen: Listen
    server: int


@dataclass(frozen=True, slots=True)
class Binding:
    """A socket the master actually binds.

    nginx binds only ``*:port`` when a port has a wildcard listen plus specific
    addresses without ``bind`` or socket options; on accept it looks up the
    local address (getsockname) to pick the server (SPEC 2.2). ``by_address``
    holds those folded-in specific addresses; ``default`` is the route for any
    other local address.
    """

    listen: Listen
    default: Route
    by_address: tuple[tuple[str, Route], ...] = ()

    def route(self, local_ip: str) -> Route:
        for address, route in self.by_address:
            if address == local_ip:
                return route
        return self.default


@dataclass(frozen=True, slots=True)
class Main:
    """Main-context directives (nginx core module; ``events {}`` folded in)."""

    worker_processes: int = 1  # "auto" is resolved to the CPU count
    error_log: tuple[LogTarget, ...] = ()
    pid: str = "/run/mailgate.pid"
    user: tuple[str, str | None] | None = None  # (user, group)
    worker_rlimit_nofile: int | None = None
    worker_connections: int = 512
    worker_shutdown_timeout: float | None = None
    daemon: bool = True
    env: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration, as loaded from ``path``."""

    path: str
    main: Main
    servers: tuple[Server, ...]
    bindings: tuple[Binding, ...]
