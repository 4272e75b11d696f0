"""The authentication decision, whoever makes it.

Both the auth_http client (``auth_http.py``) and the embedded users file
(``auth_file.py``) answer an ``AuthRequest`` with an ``AuthResult``; the
session driver does not know which one it asked. Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailgate.protocol.base import Credentials

# AuthResult.outcome values (SPEC 8.4).
OK = "ok"  # log in to server:port
FAIL = "fail"  # Auth-Status other than OK/WAIT: tell the client ``message``
WAIT = "wait"  # Auth-Status: WAIT: ask again after ``wait`` seconds
ERROR = "error"  # anything else: internal server error, ``log_message`` says why


@dataclass(frozen=True, slots=True)
class AuthTls:
    """TLS facts of the client connection, for the Auth-SSL-* headers (SPEC 8.2
    item 13). Each header is left out when its value is empty: ``verify`` and
    the certificate fields are only set when ``ssl_verify_client`` is not off,
    ``cert`` (PEM) only with ``auth_http_pass_client_cert on``. ``sni`` is
    mailgate's own ``Auth-SSL-Server-Name``: the host name the client asked
    for with SNI (nginx does not send it)."""

    protocol: str = ""  # e.g. TLSv1.3
    cipher: str = ""  # e.g. TLS_AES_256_GCM_SHA384
    verify: str = ""  # SUCCESS | FAILED:<reason> | NONE
    subject: str = ""  # RFC 2253 DN
    issuer: str = ""  # RFC 2253 DN
    serial: str = ""  # upper-case hex
    fingerprint: str = ""  # SHA-1, lower-case hex
    cert: str = ""  # PEM, escaped on the wire like Auth-User
    sni: str = ""  # Auth-SSL-Server-Name: lower-case host name, "" without SNI


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """Everything the auth server is told about one login attempt (SPEC 8.2)."""

    credentials: Credentials
    protocol: str  # "pop3" | "imap" | "smtp"
    attempt: int  # Auth-Login-Attempt, 1 for the session's first attempt
    client_ip: str  # after realip, no port
    client_host: str | None = None  # SMTP only: name, [UNAVAILABLE] or [TEMPUNAVAIL]
    # From a PROXY protocol header: (src addr, src port, dst addr, dst port).
    proxy_protocol: tuple[str, int, str, int] | None = None
    tls: AuthTls | None = None  # the client connection is TLS (implicit or STARTTLS)


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The decision. ``login``/``password`` are the Auth-User/Auth-Pass
    overrides (None: keep the client's). ``wait`` is Auth-Wait in seconds."""

    outcome: str
    server: str = ""
    port: int = 0
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    message: str = ""
    wait: int = 0
    error_code: str = ""
    log_message: str = ""
    log_level: str = "error"
    # "Auth-Server:Auth-Port" exactly as the auth server wrote them, when that
    # differs from the normalised ``server``/``port`` (e.g. "010.0.0.1:0110").
    upstream_name: str = ""

    @property
    def upstream(self) -> str:
        """The upstream name used in log lines: Auth-Server:Auth-Port as sent."""
        return self.upstream_name or f"{self.server}:{self.port}"

    def __repr__(self) -> str:
        return (
            f"AuthResult(outcome={self.outcome!r}, server={self.server!r}, port={self.port!r}, "
            f"login={self.login!r}, message={self.message!r}, wait={self.wait!r})"
        )
