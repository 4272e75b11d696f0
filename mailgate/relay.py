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

Nothing is parsed here. Like nginx's event handlers, the relay runs on the
hub's I/O watchers, not in greenlets: each direction is armed either for
reading its source or, while its destination is full, for writing there. An
idle session costs two armed watchers and one timer, no greenlet stack, which
is what lets one worker hold thousands of idle IMAP sessions (issue 7 targets
nginx's memory per session within 2x). Callbacks run in the hub and never
block: both sockets are non-blocking (timeout 0) for the relay's lifetime.
"""

from __future__ import annotations

import fcntl
import os
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Callable

from gevent.hub import get_hub

# Outcomes of a relay, used in the session summary line.
DONE = "proxied"
TIMEOUT = "proxy-timeout"
SHUTDOWN = "shutdown-timeout"
ERROR = "relay-error"

# libev event masks.
READ = 1
WRITE = 2

# Reads per readiness callback before other sessions get their turn (libev
# watchers are level-triggered: a source with more to give is called again).
BURST = 16

# splice(2) between plain sockets (Linux): up to this much per call, through a
# pipe of this size (the kernel caps it at /proc/sys/fs/pipe-max-size).
PIPE_SIZE = 1 << 20
SPLICE = hasattr(os, "splice")
# A streaming direction keeps its pipe through the short pauses between its
# sender's bursts (opening and sizing a pipe for every burst cost about a
# tenth of an upload's CPU, bench/PROFILE.md); a pipe its direction has not
# used for this long is closed, so idle sessions hold no extra descriptors.
PIPE_IDLE = 1.0

# Nothing to read right now (plain socket: EAGAIN; TLS: no whole record yet).
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError)


@dataclass
class Counters:
    """Bytes that crossed the relay, from the client's point of view."""

    from_client: int = 0
    to_client: int = 0


class Relay:
    """Copies between ``client`` and ``backend`` (connected gevent sockets,
    the client's possibly TLS) until the backend closes, an error, the idle
    timer or ``abort``; then calls ``on_done(outcome)`` once."""

    def __init__(
        self,
        client: socket.socket,
        backend: socket.socket,
        *,
        client_buffer: int,
        backend_buffer: int,
        idle_timeout: float,
        log,  # mailgate.log.SessionLog
        on_done: Callable[[str], None],
    ) -> None:
        self.loop = get_hub().loop
        self.idle_timeout = idle_timeout
        self.log = log
        self.on_done = on_done
        self.counters = Counters()
        self.last_activity = time.monotonic()
        self.finished = False
        self.timer = None
        kind = _direction_class(client, backend)
        self.upstream = kind(self, client, backend, client_buffer, from_client=True)
        self.downstream = kind(self, backend, client, backend_buffer, from_client=False)

    def start(self, to_client: bytes = b"", to_backend: bytes = b"") -> None:
        """Arm the relay and return at once. ``to_client``/``to_backend`` go
        first: the backend's login reply, and client bytes pipelined after the
        login command (SPEC 9.6)."""
        self.upstream.src.settimeout(0.0)
        self.downstream.src.settimeout(0.0)
        self._arm_timer(self.idle_timeout)
        self.downstream.begin(to_client)
        if not self.finished:
            self.upstream.begin(to_backend)

    def abort(self, outcome: str) -> None:
        """Stop relaying now (worker_shutdown_timeout)."""
        self.finish(outcome)

    def finish(self, outcome: str) -> None:
        if self.finished:
            return
        self.finished = True
        self.upstream.close()
        self.downstream.close()
        if self.timer is not None:
            self.timer.stop()
        self.on_done(outcome)

    # --- what the directions report ---------------------------------------------

    def activity(self) -> None:
        self.last_activity = time.monotonic()

    def end_of_stream(self, direction: _Direction) -> None:
        """Pass the EOF on; the backend's EOF also ends the session."""
        direction.close()
        if not direction.from_client:
            # The session ends: the close that follows tells the client. A TLS
            # socket must not be shut down here: SSLSocket.shutdown() drops
            # the TLS layer and later writes would go out in clear.
            self.finish(DONE)
            return
        try:
            direction.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def read_failed(self, direction: _Direction, err: OSError) -> None:
        # A read error ends this direction like EOF (SPEC 9.7), logged.
        side = "client" if direction.from_client else "upstream"
        self._log_error("recv() failed", err, f"proxying and reading from {side}", direction.from_client)
        self.end_of_stream(direction)

    def send_failed(self, direction: _Direction, err: OSError) -> None:
        # A send error ends the whole session at once (SPEC 9.7).
        side = "upstream" if direction.from_client else "client"
        self._log_error("send() failed", err, f"proxying and sending to {side}", not direction.from_client)
        self.finish(ERROR)

    def crashed(self, err: BaseException) -> None:
        """A bug, not a network event: end the session rather than leave it
        armed in an unknown state (an exception must not reach the hub)."""
        self.log.log("alert", f"relay failed: {err!r}")
        self.finish(ERROR)

    # --- proxy_timeout ----------------------------------------------------------

    def _arm_timer(self, seconds: float) -> None:
        self.timer = self.loop.timer(max(seconds, 0.0))
        self.timer.start(self._on_timer)

    def _on_timer(self) -> None:
        if self.finished:
            return
        # One timer per session, re-armed for what is left rather than moved
        # on every read: activity only updates a timestamp.
        idle = time.monotonic() - self.last_activity
        if idle < self.idle_timeout:
            self._arm_timer(self.idle_timeout - idle)
            return
        self.log.log("info", "client timed out (110: Connection timed out)")
        self.finish(TIMEOUT)

    def _log_error(self, what: str, err: OSError, action: str, client_side: bool) -> None:
        # Client-side socket errors are the client's business (info); the
        # backend's are the operator's (error), as nginx levels them.
        level = "info" if client_side else "error"
        saved = self.log.ctx.action
        self.log.ctx.action = action
        self.log.log(level, f"{what} ({err.errno}: {err.strerror})")
        self.log.ctx.action = saved


class _Direction:
    """One way through the relay: read ``src``, write ``dst``.

    Exactly one watcher is armed at a time: ``src`` readable while there is
    nothing to send, ``dst`` writable while a read waits to be sent (nginx's
    back-pressure: a slow reader stops its writer). TLS can ask for the other
    readiness (a read needing a write, a write needing a read); those watchers
    are made only when that happens."""

    __slots__ = ("relay", "src", "dst", "size", "from_client", "src_tls", "send",
                 "readable", "writable", "armed", "pending", "extra")

    def __init__(self, relay: Relay, src: socket.socket, dst: socket.socket, size: int, *, from_client: bool) -> None:
        self.relay = relay
        self.src = src
        self.dst = dst
        self.size = size
        self.from_client = from_client
        self.src_tls = isinstance(src, ssl.SSLSocket)
        # SSLSocket.write() raises SSLWantRead/WriteError when non-blocking;
        # its send() returns 0 for both and would not say which to wait for.
        self.send = dst.write if isinstance(dst, ssl.SSLSocket) else dst.send
        self.readable = relay.loop.io(src.fileno(), READ)
        self.writable = relay.loop.io(dst.fileno(), WRITE)
        self.armed = None
        self.pending: memoryview | None = None
        self.extra: list = []

    def begin(self, first: bytes) -> None:
        if first:
            self.pending = memoryview(first)
            self.on_writable()
        elif self.src_tls and self.src.pending():
            self.on_readable()  # decrypted bytes already wait in OpenSSL's buffer
        else:
            self._arm(self.readable, self.on_readable)

    def stop(self) -> None:
        if self.armed is not None:
            self.armed.stop()
            self.armed = None

    def close(self) -> None:
        """This direction is over: nothing stays armed or open."""
        self.stop()

    # --- watcher callbacks (run in the hub) --------------------------------------

    def on_readable(self) -> None:
        if self.relay.finished:
            return  # a callback queued before the end (run_callback below)
        try:
            self._pump()
        except Exception as err:  # noqa: BLE001 - see Relay.crashed
            self.relay.crashed(err)

    def on_writable(self) -> None:
        try:
            if self._flush():
                self._pump()
        except Exception as err:  # noqa: BLE001 - see Relay.crashed
            self.relay.crashed(err)

    # --- moving bytes -----------------------------------------------------------

    def _pump(self) -> None:
        for _ in range(BURST):
            if not self._read_once():
                return
        self._arm(self.readable, self.on_readable)
        if self.src_tls and self.src.pending():
            # Records already decrypted do not make the socket readable.
            self.relay.loop.run_callback(self.on_readable)

    def _read_once(self) -> int:
        """Read once and send what came: the bytes moved, or 0 when pumping
        stops here (a watcher is armed, or the direction or session ended)."""
        try:
            data = self.src.recv(self.size)
        except _WOULD_BLOCK:
            self._arm(self.readable, self.on_readable)
            return 0
        except ssl.SSLWantWriteError:
            self._arm(self._watcher(self.src, WRITE), self.on_readable)
            return 0
        except OSError as err:
            self.relay.read_failed(self, err)
            return 0
        if not data:
            self.relay.end_of_stream(self)
            return 0
        self.relay.activity()
        self.pending = memoryview(data)
        return len(data) if self._flush() else 0

    def _flush(self) -> bool:
        """Send ``pending``; False if the rest must wait for ``dst`` (the
        matching watcher is then armed) or the session ended."""
        view = self.pending
        while view:
            try:
                sent = self.send(view)
            except (BlockingIOError, ssl.SSLWantWriteError):
                self.pending = view
                self._arm(self.writable, self.on_writable)
                return False
            except ssl.SSLWantReadError:
                self.pending = view
                self._arm(self._watcher(self.dst, READ), self.on_writable)
                return False
            except OSError as err:
                self.relay.send_failed(self, err)
                return False
            self._count(sent)
            view = view[sent:]
        self.pending = None
        if self.relay.finished:
            return False
        self.relay.activity()
        return True

    def _count(self, sent: int) -> None:
        counters = self.relay.counters
        if self.from_client:
            counters.from_client += sent
        else:
            counters.to_client += sent

    def _arm(self, watcher, callback) -> None:  # noqa: ANN001 - a gevent watcher
        if self.relay.finished:
            return
        if self.armed is not watcher:
            self.stop()
            watcher.start(callback)
            self.armed = watcher

    def _watcher(self, sock: socket.socket, events: int):  # noqa: ANN202 - a gevent watcher
        for made in self.extra:
            if made.events == events and made.fd == sock.fileno():
                return made
        made = self.relay.loop.io(sock.fileno(), events)
        self.extra.append(made)
        return made


class _SpliceDirection(_Direction):
    """A direction between two plain sockets. Small reads are copied as
    above; once a read fills the whole buffer (a message is streaming), the
    bytes go socket -> pipe -> socket inside the kernel with splice(2) and are
    never copied into Python. The pipe is kept through the pauses of a
    stream and given back once unused for PIPE_IDLE, so idle sessions hold no
    extra descriptors."""

    __slots__ = ("pipe_r", "pipe_w", "in_pipe", "paused_at")

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - as _Direction
        super().__init__(*args, **kwargs)
        self.pipe_r = self.pipe_w = -1
        self.in_pipe = 0  # bytes spliced into the pipe, not yet out of it
        self.paused_at = 0.0  # loop time the source last ran dry with the pipe open; 0 while streaming

    def _pump(self) -> None:
        for _ in range(BURST):
            if self.pipe_w >= 0:
                moved = self._splice_once()
            else:
                moved = self._read_once()
                if moved == self.size:
                    self._open_pipe()  # a full read: a message is streaming
            if not moved:
                return
        self._arm(self.readable, self.on_readable)

    def _splice_once(self) -> int:
        """``_read_once`` through the pipe."""
        try:
            moved = os.splice(self.src.fileno(), self.pipe_w, PIPE_SIZE, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            # The pipe is always drained before a read, so the source is
            # empty: the burst is over. The pipe stays for the next one,
            # unless none comes within PIPE_IDLE (_PipeReaper).
            self.paused_at = self.relay.loop.now()
            self._arm(self.readable, self.on_readable)
            return 0
        except OSError as err:
            self.relay.read_failed(self, err)
            return 0
        if not moved:
            self.relay.end_of_stream(self)
            return 0
        self.relay.activity()
        self.paused_at = 0.0
        self.in_pipe = moved
        return moved if self._flush() else 0

    def _flush(self) -> bool:
        if self.pending is not None and not super()._flush():
            return False
        while self.in_pipe:
            try:
                sent = os.splice(self.pipe_r, self.dst.fileno(), self.in_pipe, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                self._arm(self.writable, self.on_writable)
                return False
            except OSError as err:
                self.relay.send_failed(self, err)
                return False
            self._count(sent)
            self.in_pipe -= sent
        return not self.relay.finished

    def _open_pipe(self) -> None:
        try:
            self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return  # out of descriptors: copying works as well, only slower
        try:
            fcntl.fcntl(self.pipe_w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # a smaller pipe only means more calls
        self.paused_at = 0.0
        _PipeReaper.of(self.relay.loop).hold(self)

    def idle_pipe(self, now: float) -> bool:
        """Whether the pipe is empty and unused for PIPE_IDLE seconds."""
        return self.paused_at > 0 and self.in_pipe == 0 and now - self.paused_at >= PIPE_IDLE

    def _close_pipe(self) -> None:
        if self.pipe_w >= 0:
            os.close(self.pipe_r)
            os.close(self.pipe_w)
            self.pipe_r = self.pipe_w = -1
            self.in_pipe = 0
            _PipeReaper.of(self.relay.loop).release(self)

    def close(self) -> None:
        super().close()
        self._close_pipe()


_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


class _PipeReaper:
    """Closes the splice pipes that went idle: one timer per event loop,
    running only while some direction holds a pipe."""

    _by_loop: dict[int, _PipeReaper] = {}

    def __init__(self, loop) -> None:  # noqa: ANN001 - a gevent loop
        self.loop = loop
        self.held: set[_SpliceDirection] = set()
        self.timer = None

    @classmethod
    def of(cls, loop) -> _PipeReaper:  # noqa: ANN001 - a gevent loop
        reaper = cls._by_loop.get(id(loop))
        if reaper is None or reaper.loop is not loop:
            reaper = cls._by_loop[id(loop)] = cls(loop)
        return reaper

    def hold(self, direction: _SpliceDirection) -> None:
        self.held.add(direction)
        if self.timer is None:
            self.timer = self.loop.timer(PIPE_IDLE, PIPE_IDLE)
            self.timer.start(self._sweep)

    def release(self, direction: _SpliceDirection) -> None:
        self.held.discard(direction)

    def _sweep(self) -> None:
        now = self.loop.now()
        for direction in [d for d in self.held if d.idle_pipe(now)]:
            direction._close_pipe()
        if not self.held and self.timer is not None:
            self.timer.stop()
            self.timer = None


def _direction_class(client: socket.socket, backend: socket.socket) -> type[_Direction]:
    """splice(2) needs the kernel to see the bytes: not under TLS."""
    plain = not isinstance(client, ssl.SSLSocket) and not isinstance(backend, ssl.SSLSocket)
    return _SpliceDirection if SPLICE and plain else _Direction
