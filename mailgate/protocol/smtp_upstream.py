"""SMTP backend login: EHLO, XCLIENT, AUTH, or the smtp_auth none replay.

SPEC 9.3-9.5; RFC 5321 (replies, EHLO/HELO, MAIL, RCPT), RFC 4954 and
RFC 4616 (AUTH PLAIN), Postfix XCLIENT_README, RFC 3461 (xtext). A sans-IO
state machine following the driver contract in ``mailgate.protocol.base``;
``SmtpSession.upstream_login`` builds it.

The dialogue, byte by byte (SPEC 9.4)::

    S: 220 ...                                  greeting (multi-line allowed)
    C: EHLO <server_name> | HELO <server_name>  EHLO if the client used EHLO or xclient is on
    S: 250 ...
    C: XCLIENT ADDR=<ip> [LOGIN=<login>] NAME=<host>    xclient on only
    S: 220 ... | 250 ...
    C: EHLO <client helo> | HELO <client helo>  xclient on and the client sent one
    S: 250 ...
    then, for smtp_auth none:
    C: MAIL FROM...          S: 250 ...
    C: RCPT TO...            S: any reply, relayed to the client verbatim
    otherwise, only with proxy_smtp_auth on:
    C: AUTH PLAIN <base64(NUL login NUL password)>   S: 235 ...
    and the client is sent ``235 2.0.0 OK`` (with or without AUTH).
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Final

from mailgate.protocol import xtext
from mailgate.protocol.base import Credentials, Event, LoginFailed, Send, wire
from mailgate.protocol.upstream_login import (
    DEFAULT_PROXY_BUFFER,
    DONE,
    GREETING,
    READING_RESPONSE,
    UpstreamLogin,
    response_text,
)

# The client host when there is no resolver (SPEC 7.1).
UNAVAILABLE: Final = "[UNAVAILABLE]"

CRLF: Final = b"\r\n"
# What the client is sent once the backend accepted an authenticated login;
# the backend's own last reply is not relayed (SPEC 9.4 step 6).
CLIENT_AUTH_OK: Final = b"235 2.0.0 OK\r\n"
INTERNAL_ERROR: Final = b"451 4.3.2 Internal server error\r\n"
NO_PASSWORD: Final = "no password available"

# Log actions (SPEC 10.2).
SENDING_HELO: Final = "sending HELO/EHLO to upstream"
SENDING_XCLIENT: Final = "sending XCLIENT to upstream"
SENDING_CLIENT_HELO: Final = "sending client HELO/EHLO to upstream"
SENDING_AUTH: Final = "sending AUTH to upstream"
SENDING_MAIL: Final = "sending MAIL FROM to upstream"
SENDING_RCPT: Final = "sending RCPT TO to upstream"

# RFC 5321 section 4.2.1: every line of a multi-line reply but the last has
# "-" right after the three-digit code, i.e. as its fourth byte.
_CODE_LENGTH: Final = 3
_CONTINUATION: Final = ord("-")


@dataclass(frozen=True, slots=True)
class NoPasswordAvailable(LoginFailed):
    """proxy_smtp_auth needs a password and none is available: EXTERNAL or
    CRAM-MD5 without an Auth-Pass from the auth server (SPEC 9.4 step 5).

    The driver logs ``no password available`` at error level (not
    ``upstream sent invalid response``) and sends the internal error, which
    is also ``client_reply``.
    """


@dataclass(frozen=True, slots=True)
class SmtpLoginParams:
    """Everything the backend login needs, gathered by ``SmtpSession``.

    ``password`` is None when no password is available (only matters with
    ``proxy_smtp_auth``). ``helo`` is the client's HELO/EHLO argument (""
    when it sent none, or STARTTLS made it forgotten) and ``esmtp`` tells
    whether it ever sent EHLO (Appendix B 11). ``method`` is the Auth-Method;
    for ``none``, ``smtp_from`` and ``smtp_to`` are the MAIL and RCPT
    command texts to replay.
    """

    server_name: str
    client_ip: str
    login: str = ""
    password: str | None = field(default=None, repr=False)
    client_host: str = UNAVAILABLE
    helo: str = ""
    esmtp: bool = False
    method: str = "plain"
    smtp_from: str = ""
    smtp_to: str = ""
    xclient: bool = True
    proxy_smtp_auth: bool = False
    buffer_size: int = DEFAULT_PROXY_BUFFER


# --- the password towards the backend -------------------------------------------------

# Mechanisms whose client "password" is not one: the CRAM-MD5 digest, and
# EXTERNAL's empty value (SPEC 4.4, 8.4).
_NO_CLIENT_PASSWORD: Final = frozenset({"cram-md5", "external"})


def backend_password(credentials: Credentials | None, password: str | None) -> str | None:
    """The password for AUTH PLAIN towards the backend, None if none is
    available (SPEC 9.4 step 5).

    ``credentials`` are what the client offered; ``password`` is the auth
    server's Auth-Pass, None when it sent none. Without Auth-Pass a PLAIN or
    LOGIN client's own password is used. After CRAM-MD5 or EXTERNAL only an
    Auth-Pass counts: a driver passing the client's own value back (its
    digest, or EXTERNAL's empty password) gets None.
    """
    if credentials is None:
        return password
    if credentials.method in _NO_CLIENT_PASSWORD:
        return None if password == credentials.password else password
    if password is None and credentials.method == "plain":
        return credentials.password
    return password


# --- command lines ------------------------------------------------------------------


def is_ipv6(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).version == 6
    except ValueError:
        return False


def xclient_command(client_ip: str, login: str, host: str) -> bytes:
    """``XCLIENT ADDR=<ip> [LOGIN=<login>] NAME=<host>`` (Postfix XCLIENT_README).

    IPv6 addresses get Postfix's ``IPV6:`` prefix. Every value is xtext
    (RFC 3461): nginx encodes only LOGIN, but NAME may come from a PTR
    record (CVE-2026-28753) and ADDR from a PROXY header, so none of them can
    smuggle a space, CR or LF into the command; a valid address or host name
    is all xtext characters and goes out unchanged. LOGIN is left out when
    ``login`` is empty.
    """
    address = ("IPV6:" if is_ipv6(client_ip) else "") + client_ip
    parts = [b"XCLIENT", b"ADDR=" + xtext.encode(wire(address))]
    if login:
        parts.append(b"LOGIN=" + xtext.encode(wire(login)))
    parts.append(b"NAME=" + xtext.encode(wire(host)))
    return b" ".join(parts) + CRLF


def auth_plain_command(login: str, password: str) -> bytes:
    """``AUTH PLAIN`` with the RFC 4616 initial response NUL login NUL password."""
    response = base64.b64encode(b"\0" + wire(login) + b"\0" + wire(password))
    return b"AUTH PLAIN " + response + CRLF


# --- backend replies -----------------------------------------------------------------


def _is_last_line(line: bytes | bytearray) -> bool:
    return len(line) <= _CODE_LENGTH or line[_CODE_LENGTH] != _CONTINUATION


class ReplyBuffer:
    """Backend bytes cut into whole SMTP replies, multi-line ones included.

    A line ends at its LF (unlike nginx, a backend ending lines with a bare
    LF does not stall, SPEC 9.3). A reply ends with its first line whose
    fourth byte is not ``-``; it must fit in ``limit`` bytes (proxy_buffer).
    """

    __slots__ = ("_data", "_next_line", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"reply limit must be positive, not {limit}")
        self.limit = limit
        self._data = bytearray()
        # Where the first line not yet known to continue the reply starts.
        self._next_line = 0

    def feed(self, data: bytes) -> None:
        self._data += data

    def pop_reply(self) -> bytes | None:
        """The next complete reply, or None if none fits yet."""
        while True:
            end = self._data.find(b"\n", self._next_line, self.limit)
            if end < 0:
                return None
            if _is_last_line(self._data[self._next_line : end + 1]):
                reply = bytes(self._data[: end + 1])
                del self._data[: end + 1]
                self._next_line = 0
                return reply
            self._next_line = end + 1

    @property
    def too_long(self) -> bool:
        """The reply being received fills ``limit`` bytes and is not complete."""
        return len(self._data) >= self.limit

    def peek(self, size: int) -> bytes:
        return bytes(self._data[:size])

    def take(self) -> bytes:
        data = bytes(self._data)
        self._data.clear()
        self._next_line = 0
        return data


# --- the state machine ---------------------------------------------------------------

_HELO_SENT: Final = "helo sent"
_XCLIENT_SENT: Final = "xclient sent"
_CLIENT_HELO_SENT: Final = "client helo sent"
_AUTH_SENT: Final = "auth sent"
_MAIL_SENT: Final = "mail sent"
_RCPT_SENT: Final = "rcpt sent"

# The reply codes each state accepts; only the first line's code is checked
# (SPEC 9.3). None: any reply (the RCPT reply goes to the client as it is).
_ACCEPTED: Final[dict[str, tuple[bytes, ...] | None]] = {
    GREETING: (b"220",),
    _HELO_SENT: (b"250",),
    _XCLIENT_SENT: (b"220", b"250"),
    _CLIENT_HELO_SENT: (b"250",),
    _AUTH_SENT: (b"235",),
    _MAIL_SENT: (b"250",),
    _RCPT_SENT: None,
}

UpstreamHandler = Callable[["SmtpUpstreamLogin", bytes], Event]


def _send(up: SmtpUpstreamLogin, state: str, action: str, line: bytes) -> Event:
    up._state, up.action = state, action
    return Send(line)


def _send_helo(up: SmtpUpstreamLogin, reply: bytes) -> Event:
    p = up.params
    verb = b"EHLO " if p.esmtp or p.xclient else b"HELO "
    return _send(up, _HELO_SENT, SENDING_HELO, verb + wire(p.server_name) + CRLF)


def _after_helo(up: SmtpUpstreamLogin, reply: bytes) -> Event:
    p = up.params
    if not p.xclient:
        return _log_in(up)
    # With proxy_smtp_auth the backend learns the login from AUTH instead.
    login = "" if p.proxy_smtp_auth else p.login
    line = xclient_command(p.client_ip, login, p.client_host)
    return _send(up, _XCLIENT_SENT, SENDING_XCLIENT, line)


def _after_xclient(up: SmtpUpstreamLogin, reply: bytes) -> Event:
    # XCLIENT resets the backend's session: the client's own greeting is
    # replayed so the backend sees its HELO name (Postfix XCLIENT_README).
    p = up.params
    if not p.helo:
        return _log_in(up)
    verb = b"EHLO " if p.esmtp else b"HELO "
    return _send(up, _CLIENT_HELO_SENT, SENDING_CLIENT_HELO, verb + wire(p.helo) + CRLF)


def _after_client_helo(up: SmtpUpstreamLogin, reply: bytes) -> Event:
    return _log_in(up)


def _log_in(up: SmtpUpstreamLogin) -> Event:
    p = up.params
    if p.method == "none":
        return _send(up, _MAIL_SENT, SENDING_MAIL, wire(p.smtp_from) + CRLF)
    if not p.proxy_smtp_auth:
        return _logged_in(up, b"")
    if p.password is None:
        up._state, up.action = DONE, SENDING_AUTH
        return NoPasswordAvailable(response=NO_PASSWORD, client_reply=INTERNAL_ERROR)
    return _send(up, _AUTH_SENT, SENDING_AUTH, auth_plain_command(p.login, p.password))


def _send_rcpt(up: SmtpUpstreamLogin, reply: bytes) -> Event:
    return _send(up, _RCPT_SENT, SENDING_RCPT, wire(up.params.smtp_to) + CRLF)


def _relay_rcpt_reply(up: SmtpUpstreamLogin, reply: bytes) -> Event:
    # smtp_auth none: the backend's RCPT reply answers the client's RCPT,
    # whatever it says (SPEC 7.6).
    return up._succeeded(reply)


def _logged_in(up: SmtpUpstreamLogin, reply: bytes) -> Event:
    # The backend's last reply is replaced by 235 (SPEC 9.4 step 6).
    return up._succeeded(CLIENT_AUTH_OK)


# state -> what an accepted reply leads to (SPEC 9.4).
_ON_ACCEPTED: Final[dict[str, UpstreamHandler]] = {
    GREETING: _send_helo,
    _HELO_SENT: _after_helo,
    _XCLIENT_SENT: _after_xclient,
    _CLIENT_HELO_SENT: _after_client_helo,
    _AUTH_SENT: _logged_in,
    _MAIL_SENT: _send_rcpt,
    _RCPT_SENT: _relay_rcpt_reply,
}


class SmtpUpstreamLogin(UpstreamLogin):
    """Logs in to the SMTP backend on the client's behalf (SPEC 9.4).

    ``action`` is the log action for a timeout or socket error at this
    point; like nginx it is "reading response from upstream" while a reply
    is being read, including when ``LoginFailed`` is returned.
    """

    protocol: ClassVar[str] = "smtp"

    def __init__(self, params: SmtpLoginParams) -> None:
        replies = ReplyBuffer(params.buffer_size)
        super().__init__(replies, replies.pop_reply)
        self.params = params

    def __repr__(self) -> str:
        return f"SmtpUpstreamLogin(login={self.params.login!r}, state={self._state!r})"

    @property
    def login(self) -> str:
        return self.params.login

    def _handle(self, reply: bytes) -> Event:
        accepted = _ACCEPTED[self._state]
        if accepted is not None and reply[:_CODE_LENGTH] not in accepted:
            self.action = READING_RESPONSE
            return self._failed(response_text(reply), reply)
        return _ON_ACCEPTED[self._state](self, reply)
