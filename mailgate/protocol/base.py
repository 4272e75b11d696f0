"""Events and shared types of the sans-IO protocol layer.

A protocol ``Session`` (client side, before login) and an ``UpstreamLogin``
(backend side) take bytes in and hand events out; the gevent driver in
``mailgate.worker`` performs them. This package imports only the standard
library.

Driver contract, for every protocol:

* ``Session.start()`` returns the greeting events.
* ``Session.receive_data(data)`` buffers ``data`` and handles complete
  commands one after the other, in order, returning their events. It stops
  early, leaving the rest buffered, after an event that needs the driver to act
  first: ``Authenticate``, ``StartTLS`` or ``Close``. ``receive_data(b"")``
  just resumes handling what is buffered.
* After ``Authenticate`` the driver asks the auth server and calls one of
  ``auth_failed(message, error_code="")`` (the client may try again),
  ``auth_rejected(message, error_code="")`` (send the error, close) or
  ``internal_error()``; or it creates the backend login with
  ``upstream_login(login, password, *, client_ip, client_host)`` and, once
  logged in, takes ``pending_input()``: the client bytes pipelined after the
  login command, to forward verbatim (SPEC 4.3). Every protocol takes the
  same arguments; ``error_code`` (Auth-Error-Code) and the client's address
  and host name (XCLIENT) only matter to SMTP.
* ``UpstreamLogin.receive_data(data)`` takes backend bytes and returns
  ``Send`` (to the backend), then ``LoginSucceeded`` or ``LoginFailed``.
* After ``StartTLS`` the driver runs the handshake and calls
  ``Session.tls_started()``; client bytes fed before that are plaintext
  pipelined after the STARTTLS command and are dropped (SPEC 4.3).
* After ``Close`` the session ignores further input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Logins and passwords are bytes on the wire and may be any bytes (SPEC 8.2
# escapes control bytes and sends bytes >= 0x80 raw). They are held as str
# decoded with surrogateescape so every byte survives the round trip.
_CODEC = ("utf-8", "surrogateescape")


def text(data: bytes) -> str:
    """Client or backend bytes as a str that round-trips through ``wire``."""
    return data.decode(*_CODEC)


def wire(value: str) -> bytes:
    """The exact bytes a str from ``text`` came from."""
    return value.encode(*_CODEC)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the client offered, for the auth request.

    ``method`` is the Auth-Method value: plain, apop, cram-md5, external, none.
    ``password`` holds the password, the APOP or CRAM-MD5 digest, or "".
    ``salt`` is the APOP/CRAM-MD5 salt including its trailing CRLF (SPEC 3.4).
    ``smtp_helo``/``smtp_from``/``smtp_to`` are set for ``none`` (SPEC 7.6).
    The password never appears in ``repr()``.
    """

    method: str
    login: str
    password: str = field(default="", repr=False)
    salt: str = ""
    smtp_helo: str = ""
    smtp_from: str = ""
    smtp_to: str = ""

    def __repr__(self) -> str:
        return f"Credentials(method={self.method!r}, login={self.login!r}, password=<redacted>)"


# --- events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write these bytes to the peer."""

    data: bytes

    def __repr__(self) -> str:
        # Client replies never carry secrets, but backend-bound Sends do (PASS).
        return f"Send(<{len(self.data)} bytes>)"


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection once everything before it has been sent."""


@dataclass(frozen=True, slots=True)
class Log:
    """A message for the session's error log, e.g. ``client sent too many
    invalid commands`` at ``info``. The driver adds the context."""

    level: str
    message: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Ask the auth server about these credentials; the session waits."""

    credentials: Credentials


@dataclass(frozen=True, slots=True)
class StartTLS:
    """Start TLS on the client connection now (reply already sent)."""


@dataclass(frozen=True, slots=True)
class LoginSucceeded:
    """The backend accepted the login. ``client_reply`` is what the client is
    sent first (the backend's final reply, or SMTP's ``235 2.0.0 OK``)."""

    client_reply: bytes


@dataclass(frozen=True, slots=True)
class LoginFailed:
    """The backend login failed (SPEC 9.5).

    ``response`` is the text for ``upstream sent invalid response: "..."``;
    ``client_reply`` is the backend's whole response, relayed verbatim with
    ``proxy_pass_error_message on``. ``too_long`` marks a response that did not
    fit in ``proxy_buffer`` (logged as ``upstream sent too long response line``
    and always answered with the internal error).
    """

    response: str
    client_reply: bytes
    too_long: bool = False


Event = Send | Close | Log | Authenticate | StartTLS | LoginSucceeded | LoginFailed


class ProtocolError(Exception):
    """A protocol violation, carrying the reply to send (if any)."""

    def __init__(self, reply: bytes = b"", close: bool = False) -> None:
        super().__init__(reply)
        self.reply = reply
        self.close = close


# --- input buffering ----------------------------------------------------------


class LineBuffer:
    """Client bytes received and not yet handled, cut into LF-terminated lines.

    nginx keeps a fixed buffer and rewinds it only once every byte in it has
    been handled, so a pipelined burst overflows it even when each command is
    short (SPEC 4.1). mailgate removes each line as soon as it is taken (the
    buffer is compacted, SPEC "Do better" and Appendix B item 4): the only
    limit is ``limit`` bytes per line, LF included.
    """

    __slots__ = ("_data", "_scanned", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"line limit must be positive, not {limit}")
        self.limit = limit
        self._data = bytearray()
        # How many leading bytes are known to hold no LF, so that a line
        # arriving byte by byte is not scanned again from its start each time.
        self._scanned = 0

    def __len__(self) -> int:
        return len(self._data)

    def feed(self, data: bytes) -> None:
        self._data += data

    def pop_line(self) -> bytes | None:
        """The next complete line, LF included, or None if none fits yet."""
        end = self._data.find(b"\n", self._scanned, self.limit)
        if end < 0:
            self._scanned = min(len(self._data), self.limit)
            return None
        line = bytes(self._data[: end + 1])
        del self._data[: end + 1]
        self._scanned = 0
        return line

    @property
    def too_long(self) -> bool:
        """The line being received fills ``limit`` bytes and has no LF yet."""
        return len(self._data) >= self.limit and self._data.find(b"\n", 0, self.limit) < 0

    def peek(self, size: int) -> bytes:
        """The first ``size`` buffered bytes, left in place (for log messages)."""
        return bytes(self._data[:size])

    def take(self) -> bytes:
        """Everything buffered; the buffer is left empty."""
        data = bytes(self._data)
        self.clear()
        return data

    def clear(self) -> None:
        self._data.clear()
        self._scanned = 0
