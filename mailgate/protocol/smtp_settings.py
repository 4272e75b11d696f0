"""SMTP settings and the fixed client replies (SPEC 2.9, 7, Appendix A).

``SmtpSettings`` is what ``SmtpSession`` needs from its server's
configuration; the replies are nginx's, byte for byte.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

from mailgate.protocol import sasl
from mailgate.protocol.base import wire
from mailgate.protocol.capabilities import SmtpLists, smtp_lists
from mailgate.protocol.session import check_settings
from mailgate.protocol.upstream_login import DEFAULT_PROXY_BUFFER

# --- limits -----------------------------------------------------------------

# smtp_client_buffer default: one memory page, as nginx. It is the longest
# command line accepted, CRLF included (SPEC 4.1).
DEFAULT_CLIENT_BUFFER: Final = 4096

# --- replies (SPEC Appendix A) ------------------------------------------------

OK: Final = b"250 2.0.0 OK\r\n"
BYE: Final = b"221 2.0.0 Bye\r\n"
START_TLS: Final = b"220 2.0.0 Start TLS\r\n"
INVALID_COMMAND: Final = b"500 5.5.1 Invalid command\r\n"
INVALID_ARGUMENT: Final = b"501 5.5.4 Invalid argument\r\n"
BAD_SEQUENCE: Final = b"503 5.5.1 Bad sequence of commands\r\n"
INVALID_PIPELINING: Final = b"503 5.5.0 Improper use of SMTP command pipelining\r\n"
AUTH_REQUIRED: Final = b"530 5.7.1 Authentication required\r\n"
CONTINUATION: Final = b"334 "  # RFC 4954 section 4: "334" SP base64 CRLF
# The default code of a failed login; Auth-Error-Code replaces it (SPEC 8.5).
AUTH_FAILED_CODE: Final = "535 5.7.0"

# --- settings ---------------------------------------------------------------------

AUTH_NONE: Final = "none"
AUTH_METHODS: Final = (sasl.PLAIN, sasl.LOGIN, sasl.CRAM_MD5, sasl.EXTERNAL, AUTH_NONE)


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """What an SMTP session needs from its server's configuration.

    ``auth_methods`` are smtp_auth values in lower case; ``capabilities``
    the smtp_capabilities values as written (CHUNKING and BINARYMIME are
    withheld, see ``mailgate.protocol.smtp``); ``tls_active`` is True on a
    ``listen ... ssl`` connection; ``client_buffer`` is smtp_client_buffer,
    the longest command line accepted, CRLF included; ``proxy_buffer`` the
    longest backend reply during the backend login; ``greeting_delay`` is
    smtp_greeting_delay in seconds (the driver waits, and hands anything the
    client sends meanwhile to ``SmtpSession.early_data``); ``xclient`` and
    ``proxy_smtp_auth`` are the proxy module's directives (SPEC 9.4).
    """

    auth_methods: tuple[str, ...] = (sasl.PLAIN, sasl.LOGIN)
    capabilities: tuple[str, ...] = ()
    starttls: str = "off"
    tls_active: bool = False
    max_errors: int = 5
    client_buffer: int = DEFAULT_CLIENT_BUFFER
    server_name: str = "localhost"
    proxy_buffer: int = DEFAULT_PROXY_BUFFER
    greeting_delay: float = 0.0
    xclient: bool = True
    proxy_smtp_auth: bool = False

    def __post_init__(self) -> None:
        check_settings(self, AUTH_METHODS, "smtp_auth")
        if self.greeting_delay < 0:
            raise ValueError(f"greeting_delay must not be negative, not {self.greeting_delay}")

    @property
    def auth_none(self) -> bool:
        """MAIL and RCPT are allowed without authentication (SPEC 7.6)."""
        return AUTH_NONE in self.auth_methods


@functools.lru_cache(maxsize=64)
def lists_for(settings: SmtpSettings) -> SmtpLists:
    # Built once per settings object, as nginx builds them at config time.
    return smtp_lists(settings.server_name, settings.capabilities, settings.auth_methods)


def failure_reply(message: str, error_code: str = "") -> bytes:
    """``<Auth-Error-Code or 535 5.7.0> <message>`` (SPEC 8.5)."""
    return wire(f"{error_code or AUTH_FAILED_CODE} {message}") + b"\r\n"
