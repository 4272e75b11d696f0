"""What the load generator and the fake servers agree on: users, messages, sizes.

The fake backends send messages built here and the load generator knows
their exact size on the wire, so it reads a download by counting bytes
instead of scanning it, and checks only its last bytes.
"""

from __future__ import annotations

import base64

USER = "bench"
PASSWORD = "secret"
# The auth server answers users whose name starts with this after AUTH_DELAY.
SLOW_PREFIX = "slow"
AUTH_DELAY = 0.020
# The auth server sends users whose name starts with this to the bulk backends.
BULK_PREFIX = "bulk"

MIB = 1024 * 1024
LINE = 1024  # bytes per message line, CRLF included

DOWNLOAD_MESSAGE = 16 * MIB  # one POP3 RETR / IMAP FETCH
UPLOAD_MESSAGE = 4 * MIB  # one SMTP DATA


def body(size: int, fill: bytes = b"x") -> bytes:
    """``size`` bytes of CRLF-terminated lines; no line starts with a dot."""
    assert size % LINE == 0
    return (fill * (LINE - 2) + b"\r\n") * (size // LINE)


def pop3_retr_reply(size: int) -> bytes:
    """The backend's whole answer to RETR: status line, message, final dot."""
    return b"+OK %d octets\r\n" % size + body(size) + b".\r\n"


def imap_fetch_reply(size: int) -> bytes:
    """The untagged FETCH response; the tagged OK line follows it."""
    return b"* 1 FETCH (BODY[] {%d}\r\n" % size + body(size) + b")\r\n"


def imap_fetch_done(tag: bytes) -> bytes:
    return tag + b" OK FETCH completed\r\n"


def smtp_data(size: int) -> bytes:
    """A message as the client sends it after 354, with the final dot."""
    return body(size, b"y") + b".\r\n"


def smtp_auth_plain(user: str, password: str) -> bytes:
    token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
    return b"AUTH PLAIN " + token + b"\r\n"
