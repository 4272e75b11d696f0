"""IMAP backend login: LOGIN with synchronising literals (SPEC 9.3-9.5).

A sans-IO state machine following the driver contract in
``mailgate.protocol.base``; ``ImapSession.upstream_login`` builds it with the
tag of the client's LOGIN or AUTHENTICATE command, so that the backend's
tagged reply is the answer to the client's own command.

Backend dialogue (SPEC 9.4; RFC 9051 / RFC 3501 6.2.3 LOGIN, section 7.5
command continuation)::

    S: * OK ...                           greeting, checked
    C: <tag> LOGIN {<login bytes>}        "sending LOGIN command to upstream"
    S: + ...                              continuation (a bare "+" too)
    C: <login> {<password bytes>}         "sending user name to upstream"
    S: + ...
    C: <password>                         "sending password to upstream"
    S: * ...                              any number of untagged lines
    S: <tag> OK ...                       relayed to the client with them

Literals carry the login and the password whatever bytes they hold, so no
quoting or escaping is needed (RFC 9051 section 4.3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final

from mailgate.protocol.base import Event, LineBuffer, Send, wire
from mailgate.protocol.upstream_login import (
    DEFAULT_PROXY_BUFFER,
    GREETING,
    UpstreamLogin,
    response_text,
)

# Log actions (SPEC 10.2).
SENDING_LOGIN: Final = "sending LOGIN command to upstream"
SENDING_USER: Final = "sending user name to upstream"
SENDING_PASSWORD: Final = "sending password to upstream"

# What each response must start with (SPEC 9.3). Case-sensitive, as nginx.
GREETING_OK: Final = b"* OK"  # PREAUTH or BYE greetings fail (RFC 9051 7.1.4, 7.1.5)
CONTINUATION: Final = b"+"  # RFC 9051 7.5; greenmail sends a bare "+" (PEERS.md)
UNTAGGED: Final = b"* "

_LOGIN_SENT: Final = "login sent"  # waiting for the first continuation
_USER_SENT: Final = "user sent"  # waiting for the second continuation
_PASS_SENT: Final = "pass sent"  # waiting for the tagged reply

UpstreamHandler = Callable[["ImapUpstreamLogin"], Event]


def _send_login(up: ImapUpstreamLogin) -> Event:
    up._state, up.action = _LOGIN_SENT, SENDING_LOGIN
    return Send(up._tag_bytes + b" LOGIN " + _literal_header(up._login_bytes))


def _send_user(up: ImapUpstreamLogin) -> Event:
    up._state, up.action = _USER_SENT, SENDING_USER
    return Send(up._login_bytes + b" " + _literal_header(up._password_bytes))


def _send_password(up: ImapUpstreamLogin) -> Event:
    up._state, up.action = _PASS_SENT, SENDING_PASSWORD
    return Send(up._password_bytes + b"\r\n")


def _literal_header(value: bytes) -> bytes:
    # The size counts bytes on the wire, not characters.
    return b"{%d}\r\n" % len(value)


# state -> (the start a good response has, what it leads to) (SPEC 9.4).
_STEPS: Final[dict[str, tuple[bytes, UpstreamHandler]]] = {
    GREETING: (GREETING_OK, _send_login),
    _LOGIN_SENT: (CONTINUATION, _send_user),
    _USER_SENT: (CONTINUATION, _send_password),
}


class ImapUpstreamLogin(UpstreamLogin):
    """Logs in to the IMAP backend with LOGIN and two literals (SPEC 9.4).

    A response is complete at its LF: unlike nginx, a backend ending lines
    with a bare LF does not stall (SPEC 9.3). Before the tagged reply to
    LOGIN, nginx skips at most one untagged line; mailgate skips any number
    (a backend may send CAPABILITY and other untagged data first, RFC 9051
    section 7), all relayed to the client with the tagged reply. The whole
    reply, untagged lines included, must fit in ``buffer_size`` bytes
    (proxy_buffer), as in nginx. ``action`` is the log action for a timeout
    or socket error at this point ("reading response from upstream" while a
    response is being read).
    """

    protocol: ClassVar[str] = "imap"

    def __init__(
        self, tag: str, login: str, password: str, buffer_size: int = DEFAULT_PROXY_BUFFER
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer size must be positive, not {buffer_size}")
        lines = LineBuffer(buffer_size)
        super().__init__(lines, lines.pop_line)
        self.tag = tag
        self.login = login
        self._tag_bytes = wire(tag)
        self._login_bytes = wire(login)
        self._password_bytes = wire(password)
        self._size = buffer_size
        self._untagged = bytearray()  # untagged lines before the tagged reply

    def __repr__(self) -> str:
        return f"ImapUpstreamLogin(tag={self.tag!r}, login={self.login!r}, state={self._state!r})"

    def _handle(self, response: bytes) -> Event | None:
        if self._state == _PASS_SENT:
            return self._login_reply(response)
        expected, step = _STEPS[self._state]
        if not response.startswith(expected):
            return self._failed(response_text(response), response)
        return step(self)

    def _login_reply(self, line: bytes) -> Event | None:
        """The reply to LOGIN: untagged lines, then ``<tag> OK``."""
        tag = self._tag_bytes + b" "
        if line.startswith(tag + b"OK"):
            return self._succeeded(bytes(self._untagged) + line)
        if line.startswith(UNTAGGED):
            self._untagged += line
            room = self._size - len(self._untagged)
            if room < 1:
                return self._too_long()
            # The untagged lines kept count towards proxy_buffer.
            self._responses.limit = room
            return None
        # As nginx, the logged text starts after the tag (SPEC 9.5).
        shown = line[len(tag) :] if line.startswith(tag) else line
        return self._failed(response_text(shown), bytes(self._untagged) + line)

    def _too_long_head(self) -> bytes:
        # The untagged lines received first are part of the reply.
        return (bytes(self._untagged) + super()._too_long_head())[: self._size]
