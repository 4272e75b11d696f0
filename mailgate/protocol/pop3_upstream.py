"""POP3 backend login: USER and PASS on behalf of the client (SPEC 9.3-9.5).

A sans-IO state machine following the driver contract in
``mailgate.protocol.base``; ``Pop3Session.upstream_login`` builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final

from mailgate.protocol.base import Event, LineBuffer, Send, wire
from mailgate.protocol.upstream_login import (
    DEFAULT_PROXY_BUFFER,
    GREETING,
    READING_RESPONSE,
    UpstreamLogin,
    response_text,
)

# Log actions (SPEC 10.2).
SENDING_USER: Final = "sending user name to upstream"
SENDING_PASSWORD: Final = "sending password to upstream"

_USER_SENT: Final = "user sent"
_PASS_SENT: Final = "pass sent"

UpstreamHandler = Callable[["Pop3UpstreamLogin", bytes], Event]


def _send_user(up: Pop3UpstreamLogin, response: bytes) -> Event:
    up._state, up.action = _USER_SENT, SENDING_USER
    return Send(b"USER " + wire(up.login) + b"\r\n")


def _send_password(up: Pop3UpstreamLogin, response: bytes) -> Event:
    up._state, up.action = _PASS_SENT, SENDING_PASSWORD
    return Send(b"PASS " + wire(up._password) + b"\r\n")


def _logged_in(up: Pop3UpstreamLogin, response: bytes) -> Event:
    return up._succeeded(response)


# state -> what a "+OK" response leads to (SPEC 9.4).
_ON_OK: Final[dict[str, UpstreamHandler]] = {
    GREETING: _send_user,
    _USER_SENT: _send_password,
    _PASS_SENT: _logged_in,
}


class Pop3UpstreamLogin(UpstreamLogin):
    """Logs in to the POP3 backend with USER and PASS (SPEC 9.4).

    The backend's reply to PASS becomes the client's reply to its own login
    command. A response is complete at its LF: unlike nginx, a backend ending
    lines with a bare LF does not stall (SPEC 9.3). ``action`` is the log
    action for a timeout or socket error at this point; like nginx it is
    "reading response from upstream" while a response is being read,
    including when ``LoginFailed`` is returned.
    """

    protocol: ClassVar[str] = "pop3"

    def __init__(self, login: str, password: str, buffer_size: int = DEFAULT_PROXY_BUFFER) -> None:
        lines = LineBuffer(buffer_size)
        super().__init__(lines, lines.pop_line)
        self.login = login
        self._password = password

    def __repr__(self) -> str:
        return f"Pop3UpstreamLogin(login={self.login!r}, state={self._state!r})"

    def _handle(self, response: bytes) -> Event:
        # Only the start is checked, case-sensitively, as nginx does.
        if not response.startswith(b"+OK"):
            self.action = READING_RESPONSE
            return self._failed(response_text(response), response)
        return _ON_OK[self._state](self, response)
