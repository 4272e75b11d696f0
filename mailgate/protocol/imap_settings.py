"""What an IMAP session needs from its server's configuration (SPEC 2.8)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

from mailgate.protocol.capabilities import ImapCapabilities, imap_capabilities
from mailgate.protocol.session import check_settings
from mailgate.protocol.upstream_login import DEFAULT_PROXY_BUFFER

# imap_client_buffer default: one memory page, as nginx. One command,
# literals included, must fit in it (SPEC 4.1).
DEFAULT_CLIENT_BUFFER: Final = 4096

AUTH_METHODS: Final = ("plain", "login", "cram-md5", "external")


@dataclass(frozen=True, slots=True)
class ImapSettings:
    """What an IMAP session needs from its server's configuration.

    ``auth_methods`` are imap_auth values in lower case; ``capabilities`` the
    imap_capabilities values as written; ``tls_active`` is True on a
    ``listen ... ssl`` connection; ``client_buffer`` is imap_client_buffer,
    the longest command accepted, literals and CRLF included;
    ``proxy_buffer`` is the longest backend response during the backend
    login; ``server_name`` goes into the CRAM-MD5 salt (SPEC 3.4).
    """

    auth_methods: tuple[str, ...] = ("plain",)
    capabilities: tuple[str, ...] = ("IMAP4", "IMAP4rev1", "UIDPLUS")
    starttls: str = "off"
    tls_active: bool = False
    max_errors: int = 5
    client_buffer: int = DEFAULT_CLIENT_BUFFER
    server_name: str = "localhost"
    proxy_buffer: int = DEFAULT_PROXY_BUFFER

    def __post_init__(self) -> None:
        check_settings(self, AUTH_METHODS, "imap_auth")


@functools.lru_cache(maxsize=64)
def capabilities_for(settings: ImapSettings) -> ImapCapabilities:
    """The CAPABILITY lines, built once per settings object as nginx builds
    them at config time (SPEC 6.4)."""
    return imap_capabilities(settings.capabilities, settings.auth_methods)
