"""What the POP3, IMAP and SMTP backend logins share (SPEC 9.3-9.5).

Each ``UpstreamLogin`` cuts the backend's bytes into whole responses, hands
each to its protocol's state table, and ends with ``LoginSucceeded`` or
``LoginFailed``, also when a response does not fit in proxy_buffer. A
response is a line for POP3 and IMAP (``LineBuffer``) and a possibly
multi-line reply for SMTP (``smtp_upstream.ReplyBuffer``); both end at an
LF, so unlike nginx a backend ending lines with a bare LF does not stall
(SPEC 9.3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, Final, Protocol

from mailgate.protocol.base import Event, LoginFailed, LoginSucceeded, text

# proxy_buffer default: one memory page, as nginx (ngx_mail_proxy_module).
DEFAULT_PROXY_BUFFER: Final = 4096

# The log action while a response is being read (SPEC 10.2).
READING_RESPONSE: Final = "reading response from upstream"

# The first and the last state of every backend login.
GREETING: Final = "greeting"  # waiting for the backend's greeting
DONE: Final = "done"


class ResponseBuffer(Protocol):
    """Backend bytes not yet handled, bounded by ``limit`` bytes."""

    limit: int

    def feed(self, data: bytes) -> None: ...
    @property
    def too_long(self) -> bool: ...
    def peek(self, size: int) -> bytes: ...
    def take(self) -> bytes: ...


class UpstreamLogin(ABC):
    """A backend login: ``receive_data`` takes backend bytes and returns
    ``Send`` events, then ``LoginSucceeded`` or ``LoginFailed`` (``done``).

    ``next_response`` cuts the next complete response from ``responses``,
    None when there is none yet. ``action`` is the log action for a timeout
    or socket error at this point: the protocol's step sets it when it sends
    a command, ``receive_data`` sets it back to "reading response from
    upstream".
    """

    protocol: ClassVar[str]

    def __init__(
        self, responses: ResponseBuffer, next_response: Callable[[], bytes | None]
    ) -> None:
        self._responses = responses
        self._next_response = next_response
        self._state: str = GREETING
        self.action = READING_RESPONSE

    @property
    def done(self) -> bool:
        return self._state == DONE

    def receive_data(self, data: bytes) -> list[Event]:
        if self._state == DONE:
            return []
        self.action = READING_RESPONSE
        self._responses.feed(data)
        events: list[Event] = []
        while self._state != DONE:
            response = self._next_response()
            if response is None:
                if self._responses.too_long:
                    events.append(self._too_long())
                break
            event = self._handle(response)
            if event is not None:
                events.append(event)
        return events

    @abstractmethod
    def _handle(self, response: bytes) -> Event | None:
        """The event a complete response leads to, None if it only adds to
        a reply still being received."""

    def _succeeded(self, client_reply: bytes) -> LoginSucceeded:
        """Logged in: ``client_reply`` goes to the client, and so does
        whatever the backend sent after it (had it come in a later read, the
        relay would have copied it to the client anyway)."""
        self._state = DONE
        return LoginSucceeded(client_reply=client_reply + self._responses.take())

    def _failed(self, response: str, client_reply: bytes) -> LoginFailed:
        """An unexpected response: ``response`` for the log, ``client_reply``
        relayed with proxy_pass_error_message on (SPEC 9.5)."""
        self._state = DONE
        return LoginFailed(response=response, client_reply=client_reply)

    def _too_long(self) -> LoginFailed:
        self._state = DONE
        head = self._too_long_head()
        return LoginFailed(response=text(head), client_reply=head, too_long=True)

    def _too_long_head(self) -> bytes:
        """What the log quotes of a response that does not fit."""
        return self._responses.peek(self._responses.limit)


def response_text(response: bytes) -> str:
    """A response without its final LF or CRLF, for the log."""
    return text(response.removesuffix(b"\n").removesuffix(b"\r"))
