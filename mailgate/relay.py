"""The proxying phase: bytes both ways until both sides are done.

Where mailgate deliberately differs from nginx (SPEC Appendix B, items 2 and 3):

* the client's half-close is propagated: when the client ends its stream
  (EOF), mailgate shuts down its write side towards the backend and keeps
  relaying the backend's replies until the backend closes, so a reply in
  flight is not lost (nginx ends the session at the first EOF, SPEC 9.7).
  The backend's EOF ends the session once its bytes have reached the client:
  mail servers never half-close, and nothing could reach a closed backend;
* ``proxy_timeout`` is an idle timer over both directions: a backend streaming
  a large message to a silent client keeps the session alive (nginx only
  counts client-side events).

Nothing is parsed here. Runs under gevent: each direction is a small greenlet
blocked in recv() while idle.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import gevent
from gevent.event import Event

# Outcomes of a relay, used in the session summary line.
DONE = "proxied"
TIMEOUT = "proxy-timeout"
SHUTDOWN = "shutdown-timeout"
ERROR = "relay-error"


@dataclass
class Counters:
    """Bytes that crossed the relay, from the client's point of view."""

    from_client: int = 0
    to_client: int = 0


class Relay:
    """Copies between ``client`` and ``backend`` (connected green sockets)."""

    def __init__(
        self,
        client: socket.socket,
        backend: socket.socket,
        *,
        client_buffer: int,
        backend_buffer: int,
        idle_timeout: float,
        log,  # mailgate.log.SessionLog
    ) -> None:
        self.client = client
        self.backend = backend
        self.client_buffer = client_buffer
        self.backend_buffer = backend_buffer
        self.idle_timeout = idle_timeout
        self.log = log
        self.counters = Counters()
        self.last_activity = time.monotonic()
        self.finished = Event()
        self.outcome = DONE
        self.pumps: list[gevent.Greenlet] = []

    def run(self, to_client: bytes = b"", to_backend: bytes = b"") -> str:
        """Relay until done; returns the outcome. ``to_client``/``to_backend``
        are sent first: the backend's login reply, and client bytes pipelined
        after the login command (SPEC 9.6)."""
        try:
            if to_client:
                self.client.sendall(to_client)
                self.counters.to_client += len(to_client)
            if to_backend:
                self.backend.sendall(to_backend)
                self.counters.from_client += len(to_backend)
        except OSError as err:
            self._log_error("send() failed", err)
            return ERROR
        self.pumps = [
            gevent.spawn(self._pump, self.client, self.backend, self.client_buffer, "from_client"),
            gevent.spawn(self._pump, self.backend, self.client, self.backend_buffer, "to_client"),
        ]
        self._wait()
        gevent.killall(self.pumps, block=True)
        return self.outcome

    def abort(self, outcome: str) -> None:
        """Stop relaying now (worker_shutdown_timeout)."""
        if not self.finished.is_set():
            self.outcome = outcome
            self.finished.set()

    def _wait(self) -> None:
        while True:
            idle_left = self.last_activity + self.idle_timeout - time.monotonic()
            if self.finished.wait(timeout=max(idle_left, 0.0)):
                return
            if time.monotonic() - self.last_activity >= self.idle_timeout:
                self.log.log("info", "client timed out (110: Connection timed out)")
                self.outcome = TIMEOUT
                return

    def _pump(self, src: socket.socket, dst: socket.socket, size: int, counter: str) -> None:
        from_client = counter == "from_client"
        reading = "proxying and reading from client" if from_client else "proxying and reading from upstream"
        sending = "proxying and sending to upstream" if from_client else "proxying and sending to client"
        while True:
            try:
                data = src.recv(size)
            except OSError as err:
                # A read error ends this direction like EOF (SPEC 9.7), logged.
                self._log_error("recv() failed", err, reading, client_side=from_client)
                break
            if not data:
                break
            self.last_activity = time.monotonic()
            try:
                dst.sendall(data)
            except OSError as err:
                # A send error ends the whole session at once (SPEC 9.7).
                self._log_error("send() failed", err, sending, client_side=not from_client)
                self.abort(ERROR)
                return
            setattr(self.counters, counter, getattr(self.counters, counter) + len(data))
            self.last_activity = time.monotonic()
        self._end_of_stream(dst, from_client)

    def _end_of_stream(self, dst: socket.socket, from_client: bool) -> None:
        """Pass the EOF on; the backend's EOF also ends the session."""
        if not from_client:
            # The session ends: the close that follows tells the client. A TLS
            # socket must not be shut down here: SSLSocket.shutdown() drops
            # the TLS layer and later writes would go out in clear.
            self.finished.set()
            return
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _log_error(self, what: str, err: OSError, action: str = "proxying", client_side: bool = True) -> None:
        # Client-side socket errors are the client's business (info); the
        # backend's are the operator's (error), as nginx levels them.
        level = "info" if client_side else "error"
        saved = self.log.ctx.action
        self.log.ctx.action = action
        self.log.log(level, f"{what} ({err.errno}: {err.strerror})")
        self.log.ctx.action = saved
