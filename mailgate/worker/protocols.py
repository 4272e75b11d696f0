"""Which sans-IO session serves which ``protocol``, built from the model.

The protocol modules know nothing of the configuration; here the resolved
``Server`` becomes each protocol's plain settings: the fields every protocol
shares, plus what is its own (a table, one row per protocol).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mailgate.config.model import Server
from mailgate.protocol.imap import ImapSession, ImapSettings
from mailgate.protocol.pop3 import Pop3Session, Pop3Settings
from mailgate.protocol.smtp import SmtpSession, SmtpSettings


def _shared(server: Server, tls_active: bool) -> dict[str, Any]:
    return dict(
        tls_active=tls_active,
        starttls=server.starttls,
        max_errors=server.max_errors,
        server_name=server.server_name,
        proxy_buffer=server.proxy_buffer,
    )


def _smtp_own(server: Server) -> dict[str, Any]:
    return dict(
        greeting_delay=server.smtp_greeting_delay,
        xclient=server.xclient,
        proxy_smtp_auth=server.proxy_smtp_auth,
    )


# protocol: (session, settings, its *_auth, *_capabilities, *_client_buffer, its own fields)
PROTOCOLS: dict[str, tuple[type, type, Callable[[Server], tuple[Any, Any, int]], Callable[[Server], dict]]] = {
    "pop3": (Pop3Session, Pop3Settings,
             lambda s: (s.pop3_auth, s.pop3_capabilities, s.pop3_client_buffer), lambda s: {}),
    "imap": (ImapSession, ImapSettings,
             lambda s: (s.imap_auth, s.imap_capabilities, s.imap_client_buffer), lambda s: {}),
    "smtp": (SmtpSession, SmtpSettings,
             lambda s: (s.smtp_auth, s.smtp_capabilities, s.smtp_client_buffer), _smtp_own),
}


def new_session(server: Server, tls_active: bool = False):  # noqa: ANN201 - each protocol's Session type
    """The protocol's session; ``tls_active`` for implicit TLS (``listen ... ssl``)."""
    return PROTOCOLS[server.protocol][0](_settings(server, tls_active))


# Settings are immutable and depend only on the server block: made once per
# server (and TLS state) of the worker's configuration, not once per session.
_SETTINGS: dict[tuple[int, bool], tuple[Server, object]] = {}


def _settings(server: Server, tls_active: bool):  # noqa: ANN202 - each protocol's Settings type
    key = (id(server), tls_active)
    made = _SETTINGS.get(key)
    if made is None or made[0] is not server:
        _, settings, own_directives, own_fields = PROTOCOLS[server.protocol]
        auth_methods, capabilities, buffer = own_directives(server)
        made = (server, settings(auth_methods=auth_methods, capabilities=capabilities, client_buffer=buffer,
                                 **_shared(server, tls_active), **own_fields(server)))
        _SETTINGS[key] = made
    return made[1]


def client_buffer(server: Server) -> int:
    """The client->backend buffer of the protocol (SPEC 9.7)."""
    return _settings(server, False).client_buffer


# What the client is told before the close when its certificate is refused
# after the handshake (SPEC 3.3), by ClientCertProblem.kind.
CERTIFICATE_REPLIES: dict[str, dict[str, bytes]] = {
    "pop3": {"certificate error": b"-ERR SSL certificate error\r\n",
             "no certificate": b"-ERR No required SSL certificate\r\n"},
    "imap": {"certificate error": b"* BYE SSL certificate error\r\n",
             "no certificate": b"* BYE No required SSL certificate\r\n"},
    "smtp": {"certificate error": b"421 4.7.1 SSL certificate error\r\n",
             "no certificate": b"421 4.7.1 No required SSL certificate\r\n"},
}
