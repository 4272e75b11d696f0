"""Which sans-IO session serves which ``protocol``, built from the model.

The protocol modules know nothing of the configuration; here the resolved
``Server`` becomes each protocol's plain settings (a table, one row per
protocol).
"""

from __future__ import annotations

from collections.abc import Callable

from mailgate.config.model import Server
from mailgate.protocol.imap import ImapSession, ImapSettings
from mailgate.protocol.pop3 import Pop3Session, Pop3Settings
from mailgate.protocol.smtp import SmtpSession, SmtpSettings


def _pop3(server: Server, tls_active: bool) -> Pop3Session:
    return Pop3Session(
        Pop3Settings(
            tls_active=tls_active,
            auth_methods=server.pop3_auth,
            capabilities=server.pop3_capabilities,
            starttls=server.starttls,
            max_errors=server.max_errors,
            client_buffer=server.pop3_client_buffer,
            server_name=server.server_name,
            proxy_buffer=server.proxy_buffer,
        )
    )


def _imap(server: Server, tls_active: bool) -> ImapSession:
    return ImapSession(
        ImapSettings(
            tls_active=tls_active,
            auth_methods=server.imap_auth,
            capabilities=server.imap_capabilities,
            starttls=server.starttls,
            max_errors=server.max_errors,
            client_buffer=server.imap_client_buffer,
            server_name=server.server_name,
            proxy_buffer=server.proxy_buffer,
        )
    )


def _smtp(server: Server, tls_active: bool) -> SmtpSession:
    return SmtpSession(
        SmtpSettings(
            tls_active=tls_active,
            auth_methods=server.smtp_auth,
            capabilities=server.smtp_capabilities,
            starttls=server.starttls,
            max_errors=server.max_errors,
            client_buffer=server.smtp_client_buffer,
            server_name=server.server_name,
            proxy_buffer=server.proxy_buffer,
            greeting_delay=server.smtp_greeting_delay,
            xclient=server.xclient,
            proxy_smtp_auth=server.proxy_smtp_auth,
        )
    )


SESSIONS: dict[str, Callable[[Server, bool], object]] = {"pop3": _pop3, "imap": _imap, "smtp": _smtp}

# The client->backend buffer of each protocol (SPEC 9.7).
CLIENT_BUFFERS: dict[str, Callable[[Server], int]] = {
    "pop3": lambda server: server.pop3_client_buffer,
    "imap": lambda server: server.imap_client_buffer,
    "smtp": lambda server: server.smtp_client_buffer,
}


def new_session(server: Server, tls_active: bool = False):  # noqa: ANN201 - each protocol's Session type
    """The protocol's session; ``tls_active`` for implicit TLS (``listen ... ssl``)."""
    return SESSIONS[server.protocol](server, tls_active)


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


def client_buffer(server: Server) -> int:
    return CLIENT_BUFFERS[server.protocol](server)
