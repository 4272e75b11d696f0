"""``error_log`` as nginx parses it (ngx_log.c ngx_log_set_log, ngx_syslog.c).

``error_log FILE|stderr|syslog:server=ADDR[,facility=F][,severity=S][,tag=T]
[,nohostname] [LEVEL]``. Several ``error_log`` lines on one level all log
(nginx chains them), so each line is one ``LogTarget``.
"""

from __future__ import annotations

import re

from mailgate.config.addresses import UrlError, address_text, parse_url
from mailgate.config.model import LOG_LEVELS, LogTarget
from mailgate.config.nodes import Directive
from mailgate.config.values import Context, fail

SYSLOG_PORT = 514  # RFC 5426
SYSLOG_TAG_MAX = 32  # ngx_syslog.c: "syslog tag length exceeds 32"

# ngx_syslog.c facilities and severities, in their table order.
SYSLOG_FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "intern", "lpr", "news", "uucp",
    "clock", "authpriv", "ftp", "ntp", "audit", "alert", "cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)
SYSLOG_SEVERITIES = LOG_LEVELS

# ngx_log.c debug_levels: each selects debug logging of one subsystem; for
# mailgate they all mean "debug".
DEBUG_LEVELS = (
    "debug_core", "debug_alloc", "debug_mutex", "debug_event",
    "debug_http", "debug_mail", "debug_stream",
)

DEFAULT_LEVEL = "error"


def p_error_log(d: Directive, ctx: Context) -> LogTarget:
    """One ``error_log`` line."""
    where, level = d.args[0], _level(d)
    if where == "stderr":
        return LogTarget(kind="stderr", level=level)
    if where.startswith("memory:"):
        raise fail('"memory:" error logs are not supported', d)
    if where.startswith("syslog:"):
        return _syslog(where[7:], level, d)
    return LogTarget(kind="file", level=level, path=ctx.path(where))


def _level(d: Directive) -> str:
    """ngx_log_set_levels: one level (default ``error``); the ``debug_*``
    subsystem levels may be combined with each other but not with a level."""
    level, debug = "", False
    for arg in d.args[1:]:
        if arg in LOG_LEVELS:
            if level or debug:
                raise fail(f'duplicate log level "{arg}"', d)
            level = arg
        elif arg in DEBUG_LEVELS and not level:
            debug = True
        else:
            raise fail(f'invalid log level "{arg}"', d)
    return level or ("debug" if debug else DEFAULT_LEVEL)


def _syslog(params: str, level: str, d: Directive) -> LogTarget:
    """ngx_syslog_parse_args: comma-separated parameters; server= required."""
    fields: dict[str, object] = {}
    for param in params.split(",") if params else []:
        name, sep, value = param.partition("=")
        if not sep and param == "nohostname":
            fields["nohostname"] = True
        elif sep and name in ("server", "facility", "severity", "tag"):
            if name in fields:
                raise fail(f'duplicate syslog "{name}"', d)
            fields[name] = _syslog_value(name, value, d)
        else:
            raise fail(f'unknown syslog parameter "{param}"', d)
    if "server" not in fields:
        raise fail("no syslog server specified", d)
    return LogTarget(kind="syslog", level=level, **fields)  # type: ignore[arg-type]


def _syslog_value(name: str, value: str, d: Directive) -> str:
    if name == "server":
        try:
            url = parse_url(value, default_port=SYSLOG_PORT)
        except UrlError as err:
            raise fail(f'{err} in syslog server "{value}"', d) from None
        family, host = url.addresses[0]
        return address_text(family, host, url.port)
    if name == "facility" and value not in SYSLOG_FACILITIES:
        raise fail(f'unknown syslog facility "{value}"', d)
    if name == "severity" and value not in SYSLOG_SEVERITIES:
        raise fail(f'unknown syslog severity "{value}"', d)
    if name == "tag":
        if len(value) > SYSLOG_TAG_MAX:
            raise fail(f"syslog tag length exceeds {SYSLOG_TAG_MAX}", d)
        if not re.fullmatch(r"[A-Za-z0-9_]*", value):
            raise fail('syslog "tag" only allows alphanumeric characters and underscore', d)
    return value
