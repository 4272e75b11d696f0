"""Connect to the backend the auth server named and log in on the client's behalf.

One deadline of ``timeout`` covers the connect and the whole login dialogue
(SPEC 9.1); the client is not read meanwhile. The dialogue itself is the
protocol's sans-IO ``UpstreamLogin``; this module only moves its bytes.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from dataclasses import dataclass

from mailgate.protocol.base import LoginFailed, LoginSucceeded, Send
from mailgate.protocol.smtp_upstream import NoPasswordAvailable
from mailgate.sockets import send_all


@dataclass
class UpstreamError(Exception):
    """The backend login failed. ``reply`` is what the client gets (the
    backend's own words with ``proxy_pass_error_message on``) or None for the
    protocol's internal-server-error line."""

    reply: bytes | None = None


@dataclass
class Upstream:
    sock: socket.socket
    client_reply: bytes


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError(errno.ETIMEDOUT, "Connection timed out")
        return left


def connect_and_login(address: tuple[str, int], login, *, timeout: float, buffer_size: int,
                      pass_error: bool, log, proxy_header: bytes | None = None) -> Upstream:
    """Connect to ``address``, send ``proxy_header`` if any, and run ``login``
    (an UpstreamLogin) to its end.

    Raises UpstreamError after logging in nginx's words (SPEC 9.1, 9.3, 9.5).
    """
    deadline = _Deadline(timeout)
    log.ctx.action = "connecting to upstream"
    sock = _connect(address, deadline, log)
    try:
        if proxy_header:
            _send_proxy_header(sock, proxy_header, log)
        return _login(sock, login, deadline, buffer_size, pass_error, log)
    except BaseException:
        sock.close()
        raise


def _connect(address: tuple[str, int], deadline: _Deadline, log) -> socket.socket:
    # The address is an IP literal (checked when the auth answer was read), so
    # connect directly: create_connection() would resolve it through
    # getaddrinfo in gevent's thread pool, about a tenth of a login's CPU.
    upstream = log.ctx.upstream
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(deadline.remaining())
        sock.connect(address)
        return sock
    except TimeoutError:
        log.log("info", "upstream timed out (110: Connection timed out)")
    except OSError as err:
        code = err.errno or 0
        text = err.strerror or os.strerror(code)
        log.log("error", f"connect() to {upstream} failed ({code}: {text})")
    sock.close()
    raise UpstreamError()


def _send_proxy_header(sock: socket.socket, header: bytes, log) -> None:
    """In one send, before anything is read from the backend (SPEC 9.2)."""
    log.ctx.action = "sending PROXY protocol header to upstream"
    try:
        sent = sock.send(header)
    except OSError as err:
        log.log("error", f"send() failed ({err.errno}: {err.strerror})")
        raise UpstreamError() from None
    if sent != len(header):
        log.log("error", "could not send PROXY protocol header at once")
        raise UpstreamError()


def _login(sock: socket.socket, login, deadline: _Deadline, buffer_size: int, pass_error: bool, log) -> Upstream:
    while True:
        log.ctx.action = login.action
        try:
            sock.settimeout(deadline.remaining())
            data = sock.recv(buffer_size)
        except TimeoutError:
            log.log("info", "upstream timed out (110: Connection timed out)")
            raise UpstreamError() from None
        except OSError as err:
            log.log("error", f"recv() failed ({err.errno}: {err.strerror})")
            raise UpstreamError() from None
        if log.enabled("debug"):
            log.log("debug", f"upstream sent {len(data)} bytes")
        if not data:
            # nginx says nothing here; an operator wants to know.
            log.log("error", "upstream prematurely closed connection")
            raise UpstreamError()
        events = login.receive_data(data)
        log.ctx.action = login.action
        for event in events:
            if isinstance(event, Send):
                _send(sock, event.data, deadline, log)
            elif isinstance(event, LoginSucceeded):
                sock.settimeout(None)
                return Upstream(sock, event.client_reply)
            elif isinstance(event, LoginFailed):
                raise _failed(event, pass_error, log)


def _send(sock: socket.socket, data: bytes, deadline: _Deadline, log) -> None:
    if log.enabled("debug"):
        # The size only: these lines carry the password.
        log.log("debug", f"{len(data)} bytes to upstream")
    try:
        sock.settimeout(deadline.remaining())
        send_all(sock, data)
    except TimeoutError:
        log.log("info", "upstream timed out (110: Connection timed out)")
        raise UpstreamError() from None
    except OSError as err:
        log.log("error", f"send() failed ({err.errno}: {err.strerror})")
        raise UpstreamError() from None


def _failed(event: LoginFailed, pass_error: bool, log) -> UpstreamError:
    """SPEC 9.5: logged at error (info when relayed), internal error or the
    backend's own reply."""
    if isinstance(event, NoPasswordAvailable):
        log.log("error", "no password available")
        return UpstreamError()
    if event.too_long:
        log.log("error", f'upstream sent too long response line: "{event.response}"')
        return UpstreamError()
    log.ctx.action = "reading response from upstream"
    if pass_error:
        log.log("info", f'upstream sent invalid response: "{event.response}"')
        return UpstreamError(event.client_reply)
    log.log("error", f'upstream sent invalid response: "{event.response}"')
    return UpstreamError()
