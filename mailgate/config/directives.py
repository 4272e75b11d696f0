"""The directive table: every directive mailgate knows, declared as data.

One ``Spec`` per directive says where it may appear, how many arguments it
takes, how its value is parsed, its default, and how values combine on one
level and between ``mail {}`` and ``server {}``. ``build.py`` applies these
rules generically; both syntaxes share them.

Directives and listen parameters the runtime cannot serve yet are in the
table with ``supported=False`` (or ``supported_values``): they are parsed and
validated like the rest, then refused with "... is not supported yet", so a
config written for nginx fails loudly instead of silently meaning something
else. Enabling one is flipping its flag once the runtime implements it (and
giving it a model ``field``). A ``field`` with a dot names an attribute of a
group on the server: ``ssl.ciphers`` is ``Server.ssl.ciphers``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from mailgate.config.addresses import p_auth_http
from mailgate.config.errorlog import p_error_log
from mailgate.config.listen import LISTEN_PARAMETERS, ListenParam, p_listen
from mailgate.config.nodes import Directive
from mailgate.config.sslconf import (
    PROTOCOLS as SSL_PROTOCOLS,
    p_conf_command,
    p_ecdh_curve,
    p_session_cache,
    p_ssl_file,
    p_ssl_key,
    p_ticket_key,
)
from mailgate.config.values import (
    Context,
    Parser,
    fail,
    p_enum,
    p_flag,
    p_methods,
    p_msec,
    p_number,
    p_pair,
    p_path,
    p_resolver,
    p_sec,
    p_size,
    p_string,
    p_strings,
    p_user,
    p_worker_connections,
    p_worker_processes,
)

__all__ = [
    "ANY",
    "DIRECTIVES",
    "EVENTS",
    "FOREIGN",
    "LISTEN_PARAMETERS",
    "MAIL",
    "MAIN",
    "PROTOCOLS",
    "SERVER",
    "ListenParam",
    "Merge",
    "Protocol",
    "Spec",
    "is_block",
    "is_repeatable",
]

# Contexts (nginx: NGX_MAIN_CONF, NGX_EVENT_CONF, NGX_MAIL_MAIN_CONF, NGX_MAIL_SRV_CONF).
MAIN, EVENTS, MAIL, SERVER = "main", "events", "mail", "server"
ANY = frozenset({MAIN, EVENTS, MAIL, SERVER})
MS = frozenset({MAIL, SERVER})

# Page size on Linux x86-64: nginx's default for the mail buffers (SPEC 2).
PAGE_SIZE = 4096


class Merge(enum.Enum):
    """How several lines of one directive on one level combine. Between
    levels the rule is always nginx's merge: a server that sets a directive
    replaces what ``mail {}`` set, else it inherits it, else the default."""

    ONCE = "once"  # a second line on the level: "is duplicate"
    LAST = "last"  # no duplicate check in nginx: the last line wins
    APPEND = "append"  # lines add up (``*_capabilities``)
    UNION = "union"  # lines add up, without repeats (``*_auth`` bitmasks)
    EACH = "each"  # every line is one entry (listen, error_log, headers)


@dataclass(frozen=True, slots=True)
class Spec:
    """One directive.

    ``nargs`` is (minimum, maximum or None for unbounded). ``field`` names the
    model attribute (None: not in the model, e.g. blocks). A directive with
    ``supported_values`` is supported only with those (first argument) values.
    ``excludes`` names a directive that is an alternative to this one: both
    may not be set on one level, and a server that sets either inherits
    neither from ``mail {}`` (``auth_http`` and ``auth_file``).
    """

    name: str
    contexts: frozenset[str]
    nargs: tuple[int, int | None]
    parse: Parser | None = None
    default: Any = None
    merge: Merge = Merge.ONCE
    field: str | None = None
    block: bool = False
    supported: bool = True
    supported_values: tuple[str, ...] = ()
    excludes: str | None = None

    def is_supported(self, d: Directive) -> bool:
        if not self.supported:
            return False
        return not self.supported_values or d.args[0].lower() in self.supported_values


@dataclass(frozen=True, slots=True)
class Protocol:
    """A mail protocol: its name for ``protocol`` and the ports that select it
    when ``protocol`` is not set before the first ``listen`` (SPEC 2.2)."""

    name: str
    ports: tuple[int, ...]
    supported: bool = True


PROTOCOLS: dict[str, Protocol] = {
    "pop3": Protocol("pop3", (110, 995)),
    "imap": Protocol("imap", (143, 993)),
    "smtp": Protocol("smtp", (25, 465, 587)),
}


def p_protocol(d: Directive, ctx: Context) -> str:
    """ngx_mail_core_protocol."""
    if d.args[0] not in PROTOCOLS:
        raise fail(f'unknown protocol "{d.args[0]}"', d)
    return d.args[0]


def _spec(name: str, contexts: frozenset[str], nargs: tuple[int, int | None],
          parse: Parser | None, default: Any = None, **kw: Any) -> Spec:
    """A Spec whose model field is its name unless told otherwise."""
    kw.setdefault("field", name)
    return Spec(name, contexts, nargs, parse, default, **kw)


ONE, TWO, ONE_OR_TWO, ONE_OR_MORE, NONE = (1, 1), (2, 2), (1, 2), (1, None), (0, 0)
EACH, LAST, APPEND, UNION = Merge.EACH, Merge.LAST, Merge.APPEND, Merge.UNION


def _block(name: str, contexts: frozenset[str], merge: Merge = Merge.ONCE) -> Spec:
    return Spec(name, contexts, NONE, merge=merge, block=True)


def _ssl(name: str, nargs: tuple[int, int | None], parse: Parser, default: Any,
         **kw: Any) -> Spec:
    """ngx_mail_ssl_module directives: model field ``ssl.<name without ssl_>``."""
    kw.setdefault("field", "ssl." + name.removeprefix("ssl_"))
    return Spec(name, MS, nargs, parse, default, **kw)


_TABLE: tuple[Spec, ...] = (
    # core, main context (ngx_core_module, ngx_events_module)
    _block("events", frozenset({MAIN})),
    _block("mail", frozenset({MAIN})),
    Spec("include", ANY, ONE),  # expanded by the front-ends
    _spec("worker_processes", frozenset({MAIN}), ONE, p_worker_processes, 1),
    _spec("error_log", frozenset({MAIN, MAIL, SERVER}), ONE_OR_MORE, p_error_log, (), merge=EACH),
    _spec("pid", frozenset({MAIN}), ONE, p_path, "/run/mailgate.pid"),
    _spec("user", frozenset({MAIN}), ONE_OR_TWO, p_user, None),
    _spec("worker_rlimit_nofile", frozenset({MAIN}), ONE, p_number, None),
    _spec("worker_connections", frozenset({EVENTS}), ONE, p_worker_connections, 512),
    _spec("worker_shutdown_timeout", frozenset({MAIN}), ONE, p_msec, None),
    _spec("daemon", frozenset({MAIN}), ONE, p_flag, True),
    _spec("env", frozenset({MAIN}), ONE, p_string, (), merge=EACH),
    # ngx_mail_core_module
    _block("server", frozenset({MAIL}), merge=EACH),
    _spec("listen", frozenset({SERVER}), ONE_OR_MORE, p_listen, (), merge=EACH, field="listens"),
    _spec("protocol", frozenset({SERVER}), ONE, p_protocol, None, merge=LAST),
    _spec("timeout", MS, ONE, p_msec, 60.0),
    _spec("server_name", MS, ONE, p_string, ""),  # "": the host name, lower-cased
    _spec("resolver", MS, ONE_OR_MORE, p_resolver, ()),
    _spec("resolver_timeout", MS, ONE, p_msec, 30.0),
    _spec("max_errors", MS, ONE, p_number, 5),
    # ngx_mail_auth_http_module, and mailgate's embedded users file
    _spec("auth_http", MS, ONE, p_auth_http, None, merge=LAST, excludes="auth_file"),
    _spec("auth_http_header", MS, TWO, p_pair, (), merge=EACH),
    _spec("auth_http_pass_client_cert", MS, ONE, p_flag, False),
    _spec("auth_http_timeout", MS, ONE, p_msec, 60.0),
    _spec("auth_file", MS, ONE, p_path, None, excludes="auth_http"),
    # ngx_mail_proxy_module
    _spec("proxy", MS, ONE, p_flag, False),
    _spec("proxy_buffer", MS, ONE, p_size, PAGE_SIZE),
    _spec("proxy_pass_error_message", MS, ONE, p_flag, False),
    _spec("proxy_protocol", MS, ONE, p_enum("off", "on", "v2"), "off"),
    _spec("proxy_smtp_auth", MS, ONE, p_flag, False),
    _spec("proxy_timeout", MS, ONE, p_msec, 86400.0),
    _spec("xclient", MS, ONE, p_flag, True),
    # ngx_mail_realip_module
    _spec("set_real_ip_from", MS, ONE, p_string, (), merge=EACH),
    # ngx_mail_ssl_module: the model groups these as Server.ssl (field "ssl.<name>");
    # build pairs certificates with keys and checks what nginx checks on merge.
    _spec("starttls", MS, ONE, p_enum("on", "off", "only"), "off"),
    _ssl("ssl_certificate", ONE, p_ssl_file, (), merge=EACH, field="ssl.certificates"),
    _ssl("ssl_certificate_key", ONE, p_ssl_key, (), merge=EACH, field="ssl.certificate_keys"),
    _ssl("ssl_password_file", ONE, p_path, None),
    _ssl("ssl_certificate_compression", ONE, p_flag, False, supported_values=("off",)),
    _ssl("ssl_ciphers", ONE, p_string, "HIGH:!aNULL:!MD5"),
    _ssl("ssl_prefer_server_ciphers", ONE, p_flag, False),
    _ssl("ssl_protocols", ONE_OR_MORE, p_methods(*SSL_PROTOCOLS), ("TLSv1.2", "TLSv1.3"),
         merge=UNION),
    _ssl("ssl_dhparam", ONE, p_path, None),
    _ssl("ssl_ecdh_curve", ONE, p_ecdh_curve, "auto"),
    _ssl("ssl_session_cache", ONE_OR_TWO, p_session_cache, ("none",)),
    _ssl("ssl_session_tickets", ONE, p_flag, True),
    _ssl("ssl_session_ticket_key", ONE, p_ticket_key, (), merge=EACH,
         field="ssl.session_ticket_keys"),
    _ssl("ssl_session_timeout", ONE, p_sec, 300),
    # optional_no_ca needs an OpenSSL verify callback, which Python's ssl lacks.
    _ssl("ssl_verify_client", ONE, p_enum("on", "off", "optional", "optional_no_ca"), "off",
         supported_values=("off", "on", "optional")),
    _ssl("ssl_verify_depth", ONE, p_number, 1),
    _ssl("ssl_client_certificate", ONE, p_ssl_file, None),
    _ssl("ssl_trusted_certificate", ONE, p_ssl_file, None),
    _ssl("ssl_crl", ONE, p_ssl_file, None),
    _ssl("ssl_conf_command", TWO, p_conf_command, (), merge=EACH, field="ssl.conf_commands"),
    # ngx_mail_pop3_module (pop3_client_buffer is mailgate's: SPEC "Do better")
    _spec("pop3_auth", MS, ONE_OR_MORE, p_methods("plain", "apop", "cram-md5", "external"),
          ("plain",), merge=UNION),
    _spec("pop3_capabilities", MS, ONE_OR_MORE, p_strings, ("TOP", "USER", "UIDL"),
          merge=APPEND),
    _spec("pop3_client_buffer", MS, ONE, p_size, PAGE_SIZE),
    # ngx_mail_imap_module
    _spec("imap_auth", MS, ONE_OR_MORE, p_methods("plain", "login", "cram-md5", "external"),
          ("plain",), merge=UNION),
    _spec("imap_capabilities", MS, ONE_OR_MORE, p_strings, ("IMAP4", "IMAP4rev1", "UIDPLUS"),
          merge=APPEND),
    _spec("imap_client_buffer", MS, ONE, p_size, PAGE_SIZE),
    # ngx_mail_smtp_module
    _spec("smtp_auth", MS, ONE_OR_MORE,
          p_methods("plain", "login", "cram-md5", "external", "none"), ("plain", "login"),
          merge=UNION),
    _spec("smtp_capabilities", MS, ONE_OR_MORE, p_strings, (), merge=APPEND),
    _spec("smtp_client_buffer", MS, ONE, p_size, PAGE_SIZE),
    _spec("smtp_greeting_delay", MS, ONE, p_msec, 0.0),
)

DIRECTIVES: dict[str, Spec] = {spec.name: spec for spec in _TABLE}

# Directives of other nginx modules that a full nginx.conf carries next to
# its mail {} block. They are skipped with a warning, so mailgate can be
# pointed at an existing nginx.conf; anywhere else they are "not allowed
# here", as nginx says for a known directive in the wrong place. The value
# is True for blocks, whose contents (and includes) are not read at all.
FOREIGN: dict[str, dict[str, bool]] = {
    MAIN: {
        "http": True, "stream": True, "load_module": False, "worker_cpu_affinity": False,
        "pcre_jit": False, "thread_pool": False, "timer_resolution": False,
        "worker_priority": False, "working_directory": False, "lock_file": False,
        "ssl_engine": False, "master_process": False, "worker_rlimit_core": False,
        "google_perftools_profiles": False, "debug_points": False, "quic_bpf": False,
    },
    EVENTS: {
        "use": False, "multi_accept": False, "accept_mutex": False, "accept_mutex_delay": False,
        "debug_connection": False, "worker_aio_requests": False,
    },
}

# Blocks whose contents the front-ends must not interpret (includes inside
# them are relative to nginx's prefix and may not exist for mailgate).
OPAQUE_BLOCKS = frozenset(name for name, block in FOREIGN[MAIN].items() if block)


def is_block(name: str) -> bool:
    spec = DIRECTIVES.get(name)
    return spec is not None and spec.block


def is_repeatable(name: str) -> bool:
    """Every line is an entry of its own: in YAML a list means several lines."""
    spec = DIRECTIVES.get(name)
    return spec is not None and spec.merge is Merge.EACH and not spec.block
