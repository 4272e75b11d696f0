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
class AuthRequest:
    """Everything the auth server is told about one login attempt (SPEC 8.2)."""

    credentials: Credentials
    protocol: str  # "pop3" | "imap" | "smtp"
    attempt: int  # Auth-Login-Attempt, 1 for the session's first attempt
    client_ip: str  # after realip, no port
    client_host: str | None = None  # SMTP only: name, [UNAVAILABLE] or [TEMPUNAVAIL]
    # From a PROXY protocol header: (src addr, src port, dst addr, dst port).
    proxy_protocol: tuple[str, int, str, int] | None = None


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

    @property
    def upstream(self) -> str:
        """The upstream name used in log lines: Auth-Server:Auth-Port as sent."""
        return f"{self.server}:{self.port}"

    def __repr__(self) -> str:
        return (
            f"AuthResult(outcome={self.outcome!r}, server={self.server!r}, port={self.port!r}, "
            f"login={self.login!r}, message={self.message!r}, wait={self.wait!r})"
        )
