"""POP3 backend login: USER and PASS on behalf of the client (SPEC 9.3-9.5).

A sans-IO state machine following the driver contract in
``mailgate.protocol.base``; ``Pop3Session.upstream_login`` builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final

from mailgate.protocol.base import (
    Event,
    LineBuffer,
    LoginFailed,
    LoginSucceeded,
    Send,
    text,
    wire,
)

# proxy_buffer default: one memory page, as nginx (ngx_mail_proxy_module).
DEFAULT_PROXY_BUFFER: Final = 4096

# Log actions (SPEC 10.2).
READING_RESPONSE: Final = "reading response from upstream"
SENDING_USER: Final = "sending user name to upstream"
SENDING_PASSWORD: Final = "sending password to upstream"

_GREETING: Final = "greeting"  # waiting for the backend's greeting
_USER_SENT: Final = "user sent"
_PASS_SENT: Final = "pass sent"
_DONE: Final = "done"

UpstreamHandler = Callable[["Pop3UpstreamLogin", bytes], Event]


def _send_user(up: Pop3UpstreamLogin, response: bytes) -> Event:
    up._state, up.action = _USER_SENT, SENDING_USER
    return Send(b"USER " + wire(up.login) + b"\r\n")


def _send_password(up: Pop3UpstreamLogin, response: bytes) -> Event:
    up._state, up.action = _PASS_SENT, SENDING_PASSWORD
    return Send(b"PASS " + wire(up._password) + b"\r\n")


def _logged_in(up: Pop3UpstreamLogin, response: bytes) -> Event:
    up._state = _DONE
    # Whatever the backend sent after its reply goes to the client too.
    return LoginSucceeded(client_reply=response + up._buffer.take())


# state -> what a "+OK" response leads to (SPEC 9.4).
_ON_OK: Final[dict[str, UpstreamHandler]] = {
    _GREETING: _send_user,
    _USER_SENT: _send_password,
    _PASS_SENT: _logged_in,
}


class Pop3UpstreamLogin:
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
        self.login = login
        self._password = password
        self._buffer = LineBuffer(buffer_size)
        self._state: str = _GREETING
        self.action = READING_RESPONSE

    def __repr__(self) -> str:
        return f"Pop3UpstreamLogin(login={self.login!r}, state={self._state!r})"

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def receive_data(self, data: bytes) -> list[Event]:
        if self._state == _DONE:
            return []
        self.action = READING_RESPONSE
        self._buffer.feed(data)
        events: list[Event] = []
        while self._state != _DONE:
            response = self._buffer.pop_line()
            if response is None:
                if self._buffer.too_long:
                    events.append(self._too_long())
                break
            events.append(self._handle(response))
        return events

    def _handle(self, response: bytes) -> Event:
        # Only the start is checked, case-sensitively, as nginx does.
        if not response.startswith(b"+OK"):
            self._state = _DONE
            self.action = READING_RESPONSE
            line = response.removesuffix(b"\n").removesuffix(b"\r")
            return LoginFailed(response=text(line), client_reply=response)
        return _ON_OK[self._state](self, response)

    def _too_long(self) -> Event:
        self._state = _DONE
        head = self._buffer.peek(self._buffer.limit)
        return LoginFailed(response=text(head), client_reply=head, too_long=True)
