"""Values of the ngx_mail_ssl_module directives (parsing only, no ssl import).

The configuration package checks what it can see in the text: the forms of
the certificate and key values, ``ssl_session_cache``, and which
``ssl_conf_command`` commands mailgate can apply. Files are read and
certificates loaded by ``mailgate.tls`` in the workers and by ``mailgate
test``.

``ssl_conf_command`` passes a command to OpenSSL's SSL_CONF_cmd() in nginx.
Python's ssl module has no such call, so mailgate applies the commands it can
express through ``ssl.SSLContext`` (``CONF_COMMANDS``) and refuses every
other one at load time, with the directive's file and line, rather than
ignore it.
"""

from __future__ import annotations

from mailgate.config.nodes import Directive
from mailgate.config.values import Context, atoi, fail, parse_size

# Values of certificate, key, CA and CRL directives that hold the PEM text
# itself instead of a file name (nginx 1.15.10).
DATA_PREFIX = "data:"
# Key forms nginx hands to an OpenSSL engine or provider store: Python's ssl
# can only read PEM keys.
KEY_PREFIXES_REFUSED = ("engine:", "store:")

# ngx_mail_ssl_session_cache refuses shared caches smaller than 8 pages.
PAGE_SIZE = 4096
MIN_SHARED_CACHE = 8 * PAGE_SIZE

# ssl_protocols names in nginx's order, and the TLS versions among them.
PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")

# OpenSSL 3 option bits (SSL_OP_*, include/openssl/ssl.h.in) by their
# SSL_CONF "Options" names (ssl/ssl_conf.c ssl_option_list). An inverted name
# clears the bit when given plainly (``SessionTicket`` clears NO_TICKET).
# Names of options that are no-ops since OpenSSL 1.1 map to 0.
OPTIONS: dict[str, tuple[int, bool]] = {
    "sessionticket": (1 << 14, True),
    "emptyfragments": (1 << 11, True),
    "bugs": ((1 << 31) | (1 << 11) | (1 << 2) | (1 << 4) | (1 << 6), False),
    "compression": (1 << 17, True),
    "serverpreference": (1 << 22, False),
    "noresumptiononrenegotiation": (1 << 16, False),
    "dhsingle": (0, False),
    "ecdhsingle": (0, False),
    "unsafelegacyrenegotiation": (1 << 18, False),
    "unsafelegacyserverconnect": (1 << 2, False),
    "clientrenegotiation": (1 << 8, False),
    "encryptthenmac": (1 << 19, True),
    "norenegotiation": (1 << 30, False),
    "allownodhekex": (1 << 10, False),
    "prioritizechacha": (1 << 21, False),
    "middleboxcompat": (1 << 20, False),
    "antireplay": (1 << 24, True),
    "extendedmastersecret": (1 << 0, True),
    "canames": (1 << 9, True),
    "ignoreunexpectedeof": (1 << 7, False),
}

# SSL_OP_NO_<version> bits, for the "Protocol" command.
NO_PROTOCOL: dict[str, int] = {
    "sslv3": 1 << 25, "tlsv1": 1 << 26, "tlsv1.1": 1 << 28, "tlsv1.2": 1 << 27,
    "tlsv1.3": 1 << 29,
}

# MinProtocol / MaxProtocol values (case-sensitive in OpenSSL); None: no bound.
PROTOCOL_BOUNDS = ("None", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")

# The ssl_conf_command commands mailgate applies (file-style names,
# case-insensitive as in OpenSSL), by what they become in mailgate.tls.
CONF_COMMANDS: dict[str, str] = {
    "options": "options",
    "protocol": "protocol",
    "cipherstring": "ciphers",
    "minprotocol": "min_protocol",
    "maxprotocol": "max_protocol",
    "groups": "curve",
    "curves": "curve",
    "ecdhparameters": "curve",
    "dhparameters": "dhparam",
    "numtickets": "num_tickets",
}


def is_data(value: str) -> bool:
    return value.startswith(DATA_PREFIX)


def shown(value: str) -> str:
    """How a certificate or key value is named in messages: inline data is
    never written to a log (it may be a secret key)."""
    return "data:..." if is_data(value) else value


def p_ssl_file(d: Directive, ctx: Context) -> str:
    """A PEM file (made absolute) or ``data:`` PEM text kept as written."""
    value = d.args[0]
    return value if is_data(value) else ctx.path(value)


def p_ssl_key(d: Directive, ctx: Context) -> str:
    """``ssl_certificate_key``: a file or ``data:``; ``engine:`` and
    ``store:`` keys need OpenSSL interfaces Python does not offer."""
    value = d.args[0]
    for prefix in KEY_PREFIXES_REFUSED:
        if value.startswith(prefix):
            raise fail(f'"{prefix}" keys are not supported in "{d.name}" directive', d)
    return p_ssl_file(d, ctx)


def p_session_cache(d: Directive, ctx: Context) -> tuple[str, ...]:
    """ngx_mail_ssl_session_cache: ``off``, ``none``, ``builtin[:size]``,
    ``shared:name:size``; kept as written once checked."""
    for value in d.args:
        if value in ("off", "none", "builtin"):
            continue
        if value.startswith("builtin:") and len(value) > len("builtin:"):
            if atoi(value[len("builtin:"):]) is None:
                raise fail(f'invalid session cache "{value}"', d)
            continue
        if value.startswith("shared:") and len(value) > len("shared:"):
            name, sep, size_text = value[len("shared:"):].partition(":")
            size = parse_size(size_text) if size_text else None
            if not name or not sep or size is None:
                raise fail(f'invalid session cache "{value}"', d)
            if size < MIN_SHARED_CACHE:
                raise fail(f'session cache "{value}" is too small', d)
            continue
        raise fail(f'invalid session cache "{value}"', d)
    return d.args


def session_cache_stores(args: tuple[str, ...]) -> bool:
    """Whether ``ssl_session_cache`` keeps sessions (anything but off/none)."""
    return any(value not in ("off", "none") for value in args)


def p_ecdh_curve(d: Directive, ctx: Context) -> str:
    """``auto`` or one curve name: Python's ssl sets a single curve
    (SSLContext.set_ecdh_curve), not OpenSSL's colon-separated list."""
    value = d.args[0]
    if ":" in value:
        raise fail(f'a list of curves in "{d.name}" directive is not supported: "{value}"', d)
    return value


def p_ticket_key(d: Directive, ctx: Context) -> str:
    """``ssl_session_ticket_key``: Python's ssl cannot set ticket keys, so
    each worker uses the random keys OpenSSL makes; the file is still
    checked by mailgate.tls, as nginx reads it."""
    ctx.warn(f'"{d.name}" is ignored: session tickets use per-process keys', d)
    return ctx.path(d.args[0])


def p_conf_command(d: Directive, ctx: Context) -> tuple[str, str]:
    """One ``ssl_conf_command name value``, if mailgate can apply it."""
    name, value = d.args
    kind = CONF_COMMANDS.get(name.lower())
    if kind is None:
        raise fail(f'the "{name}" command of the "{d.name}" directive is not supported', d)
    if kind == "options":
        for item in conf_items(value):
            if item.lstrip("+-").lower() not in OPTIONS:
                raise fail(f'invalid option "{item}" in "{d.name} {name}"', d)
    elif kind == "protocol":
        for item in conf_items(value):
            if item.lstrip("+-").lower() not in (*NO_PROTOCOL, "all"):
                raise fail(f'invalid protocol "{item}" in "{d.name} {name}"', d)
    elif kind in ("min_protocol", "max_protocol"):
        if value not in PROTOCOL_BOUNDS:
            raise fail(f'invalid value "{value}" in "{d.name} {name}"', d)
    elif kind == "num_tickets":
        if atoi(value) is None:
            raise fail(f'invalid value "{value}" in "{d.name} {name}"', d)
    elif kind == "curve" and ":" in value:
        raise fail(f'a list of curves in "{d.name} {name}" is not supported: "{value}"', d)
    elif kind == "dhparam":
        return (name, ctx.path(value))
    return (name, value)


def conf_items(value: str) -> list[str]:
    """OpenSSL's CONF_parse_list for options: comma-separated, spaces trimmed."""
    return [item.strip() for item in value.split(",") if item.strip()]
