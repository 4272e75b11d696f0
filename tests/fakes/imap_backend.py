"""A small IMAP4rev1 server to stand behind mailgate in tests and demos.

It records every line it receives (a synchronising literal is recorded
together with the rest of its line, so mailgate's back-end LOGIN shows up as
``a1 LOGIN {5}\\r\\n``, ``alice {10}\\r\\n``, ``wonderland\\r\\n``)::

    with ImapBackend(users={"alice": "wonderland"}) as backend:
        ...  # log in through mailgate, send IDLE
        backend.wait_idling(1)
        backend.notify_all(b"* 2 EXISTS\\r\\n")

It understands LOGIN (atoms, quoted strings, ``{n}`` and ``{n+}`` literals),
CAPABILITY, NOOP, ID, LOGOUT, SELECT/EXAMINE INBOX, FETCH (BODY[],
BODY.PEEK[], RFC822, RFC822.SIZE, FLAGS, UID) and IDLE; anything else gets
``<tag> BAD unknown``.

All connections are served by one thread with a ``selectors`` loop, so
thousands of idle sessions cost a few kilobytes each and no threads. A PROXY
protocol header (v1 or v2) at the very start of a connection is taken off and
kept in ``proxy_headers``. The loop (``LoopServer``) is shared with
``tests.fakes.smtp_backend``.

Run it alone for a first login through mailgate:

    python -m tests.fakes.imap_backend --port 11143 --user alice:wonderland
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import re
import selectors
import socket
import threading
import time
import traceback
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

# --- the shared event loop ------------------------------------------------------

LINE = "line"
"""Request from a session generator: the next line, through its LF."""

RECV_SIZE = 256 * 1024
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


@dataclass(frozen=True)
class Until:
    """Request from a session generator: everything through ``marker``.

    If the data starts with ``at_start`` that alone is the answer (an SMTP
    body ends with CRLF.CRLF, an empty one is just ``.CRLF``)."""

    marker: bytes
    at_start: bytes | None = None


Request = str | int | Until  # LINE, an exact byte count, or Until


@dataclass
class Session:
    """What one connection did. Protocol fakes add fields."""

    number: int = 0  # from 1, in order of acceptance
    peer: tuple[str, int] = ("", 0)
    lines: list[bytes] = field(default_factory=list, repr=False)
    proxy_header: bytes | None = None
    open: bool = True


class Connection:
    """One client connection, driven by the loop thread only."""

    def __init__(self, sock: socket.socket, number: int, peer: tuple[str, int], session: Session) -> None:
        self.sock = sock
        self.number = number
        self.peer = peer
        self.session = session
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.gen: Generator[Request, bytes, None] | None = None
        self.want: Request = LINE
        self.scan = 0  # bytes of inbuf already searched for the current request
        self.events = 0
        self.proxy_checked = False
        self.eof = False  # the peer has shut down its side
        self.closing = False  # the dialogue is over: flush, then close
        self.draining = False  # write side shut down; waiting for the peer's EOF
        self.closed = False

    def write(self, data: bytes) -> None:
        self.outbuf += data

    def close_when_flushed(self) -> None:
        self.closing = True


class LoopServer:
    """A TCP server on ``host:port`` (port 0: a free one) running one
    generator per connection on a single ``selectors`` thread.

    Subclasses (dataclasses) provide the fields ``host``, ``port``, ``lines``,
    ``sessions``, ``connections``, ``sessions_open``, ``proxy_headers``,
    ``errors`` and ``accept_proxy_protocol``, call ``_open_listener()`` from
    ``__post_init__`` and implement ``_session(conn)``: a generator that
    writes with ``conn.write()`` and yields ``LINE``, a byte count or an
    ``Until`` to receive the next piece of input. Returning ends the
    dialogue: pending output is flushed, the write side shut down and the
    connection closed once the peer closes too (so nothing is lost to a
    reset). Exceptions in a session are kept in ``errors`` and abort that
    connection only.
    """

    host: str
    port: int
    lines: list[bytes]
    sessions: list[Any]
    connections: int
    sessions_open: int
    proxy_headers: list[bytes]
    errors: list[str]
    accept_proxy_protocol: bool

    # --- set-up and life cycle ------------------------------------------------

    def _open_listener(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, self.port))
        self._listener.listen(1024)  # a burst of logins must not be dropped
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._conns: dict[int, Connection] = {}
        self._running = False
        self._stopping = False
        self._loop_ident: int | None = None
        self._thread: threading.Thread | None = None
        self._cleaned_up = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Any:
        self._running = True
        self._thread = threading.Thread(target=self._run, name=f"{type(self).__name__}-{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Run the loop in the calling thread (until ``stop()`` or Ctrl-C)."""
        self._running = True
        self._run()

    def stop(self) -> None:
        if self._running:
            self._stopping = True
            self._wake()
            if self._thread is not None and self._thread is not threading.current_thread():
                self._thread.join(10)
        if not self._running or (self._thread is not None and not self._thread.is_alive()):
            self._cleanup()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- helpers for tests ------------------------------------------------------

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn`` on the loop thread and return its result."""
        if not self._running or self._loop_ident == threading.get_ident():
            return fn()
        future: Future[T] = Future()
        self._calls.put((fn, future))
        self._wake()
        return future.result(timeout)

    def wait_for(self, predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.005)

    def wait_sessions_open(self, count: int, timeout: float = 10.0) -> None:
        self.wait_for(lambda: self.sessions_open == count, timeout,
                      f"{count} open sessions (have {self.sessions_open})")

    def drop_all(self, reset: bool = False) -> int:
        """Close every connection at once, without a word (``reset``: with RST)."""

        def drop() -> int:
            conns = list(self._conns.values())
            for conn in conns:
                if reset:
                    with contextlib.suppress(OSError):
                        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self._close(conn)
            return len(conns)

        return self.call(drop)

    def clear(self) -> None:
        """Forget what was recorded so far (the counters stay)."""

        def clear() -> None:
            self.lines.clear()
            self.proxy_headers.clear()
            self.errors.clear()

        self.call(clear)

    # --- the loop ---------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run(self) -> None:
        self._loop_ident = threading.get_ident()
        try:
            while not self._stopping:
                for key, mask in self._selector.select(0.5):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        self._run_calls()
                    else:
                        self._ready(key.data, mask)
        except KeyboardInterrupt:
            pass
        finally:
            self._run_calls()
            self._cleanup()
            self._running = False

    def _cleanup(self) -> None:
        if self._cleaned_up:
            return
        self._cleaned_up = True
        for conn in list(self._conns.values()):
            self._close(conn)
        for sock in (self._listener, self._wake_r, self._wake_w):
            with contextlib.suppress(Exception):
                self._selector.unregister(sock)
            sock.close()
        self._selector.close()

    def _run_calls(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                fn, future = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)

    def _accept(self) -> None:
        for _ in range(512):
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors and the like: try again later
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections += 1
            self.sessions_open += 1
            session = self._new_session(self.connections, peer)
            self.sessions.append(session)
            conn = Connection(sock, self.connections, peer, session)
            self._conns[conn.number] = conn
            conn.events = selectors.EVENT_READ
            self._selector.register(sock, conn.events, conn)
            conn.gen = self._session(conn)
            try:
                conn.want = next(conn.gen)
            except StopIteration:
                conn.gen = None
                conn.closing = True
            except Exception:  # noqa: BLE001
                self._failed(conn)
                continue
            self._settle(conn)

    def _ready(self, conn: Connection, mask: int) -> None:
        if conn.closed:
            return
        if mask & selectors.EVENT_READ:
            try:
                data = conn.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data is not None:
                if not data:
                    conn.eof = True
                elif not conn.draining and conn.gen is not None:
                    conn.inbuf += data
            if conn.draining:
                if conn.eof:
                    self._close(conn)
                return
            self._advance(conn)
        self._settle(conn)

    def _advance(self, conn: Connection) -> None:
        """Hand complete requests to the session generator."""
        if not conn.proxy_checked:
            if not self._take_proxy_header(conn):
                return
        while conn.gen is not None and not conn.closed:
            value = self._take(conn)
            if value is None:
                break
            conn.scan = 0
            try:
                conn.want = conn.gen.send(value)
            except StopIteration:
                conn.gen = None
                conn.closing = True
            except Exception:  # noqa: BLE001
                self._failed(conn)
                return
        if conn.eof and conn.gen is not None:
            self._end_generator(conn)
            conn.closing = True

    def _take(self, conn: Connection) -> bytes | None:
        buf, want = conn.inbuf, conn.want
        if want is LINE:
            end = buf.find(b"\n", conn.scan)
            if end < 0:
                conn.scan = len(buf)
                return None
            size = end + 1
        elif isinstance(want, int):
            if len(buf) < want:
                return None
            size = want
        elif isinstance(want, Until):
            start = want.at_start
            if start and conn.scan == 0:
                if len(buf) < len(start) and start.startswith(buf):
                    return None
                if buf.startswith(start):
                    del buf[: len(start)]
                    return start
            end = buf.find(want.marker, max(0, conn.scan - len(want.marker) + 1))
            if end < 0:
                conn.scan = len(buf)
                return None
            size = end + len(want.marker)
        else:
            raise TypeError(f"bad request from session: {want!r}")
        value = bytes(buf[:size])
        del buf[:size]
        return value

    def _take_proxy_header(self, conn: Connection) -> bool:
        """Take a PROXY v1/v2 header off the start; False: need more data."""
        buf = conn.inbuf
        if not self.accept_proxy_protocol:
            conn.proxy_checked = True
            return True
        if not buf and not conn.eof:
            return False
        size = 0
        n = min(len(buf), 6)
        if n and buf[:n] == b"PROXY "[:n]:
            end = buf.find(b"\r\n")
            if end >= 0:
                size = end + 2
            elif len(buf) < 108 and not conn.eof:
                return False
        n = min(len(buf), 12)
        if n and buf[:n] == PROXY_V2_SIGNATURE[:n]:
            if len(buf) >= 16 and len(buf) >= 16 + int.from_bytes(buf[14:16], "big"):
                size = 16 + int.from_bytes(buf[14:16], "big")
            elif not conn.eof:
                return False
        if size:
            header = bytes(buf[:size])
            del buf[:size]
            conn.session.proxy_header = header
            self.proxy_headers.append(header)
        conn.proxy_checked = True
        return True

    def _settle(self, conn: Connection) -> None:
        """Flush output, close when the dialogue is over, fix the events."""
        if conn.closed:
            return
        while conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(conn)
                return
            del conn.outbuf[:sent]
        if conn.closing and not conn.outbuf and not conn.draining:
            if conn.eof:
                self._close(conn)
                return
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._close(conn)
                return
            conn.draining = True
            conn.inbuf.clear()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        if events != conn.events:
            conn.events = events
            self._selector.modify(conn.sock, events, conn)

    def _failed(self, conn: Connection) -> None:
        self.errors.append(traceback.format_exc())
        conn.gen = None
        self._close(conn)

    def _end_generator(self, conn: Connection) -> None:
        gen, conn.gen = conn.gen, None
        if gen is not None:
            try:
                gen.close()
            except Exception:  # noqa: BLE001
                self.errors.append(traceback.format_exc())

    def _close(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._end_generator(conn)
        with contextlib.suppress(Exception):
            self._selector.unregister(conn.sock)
        conn.sock.close()
        self._conns.pop(conn.number, None)
        self.sessions_open -= 1
        conn.session.open = False
        self._session_closed(conn)

    # --- for subclasses -----------------------------------------------------------

    def _new_session(self, number: int, peer: tuple[str, int]) -> Session:
        return Session(number, peer)

    def _session(self, conn: Connection) -> Generator[Request, bytes, None]:
        raise NotImplementedError

    def _session_closed(self, conn: Connection) -> None:
        pass

    def _record(self, conn: Connection, data: bytes) -> None:
        conn.session.lines.append(data)
        self.lines.append(data)


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def _as_line(value: str | bytes) -> bytes:
    data = _as_bytes(value)
    return data if data.endswith(b"\n") else data + b"\r\n"


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def _strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith(b"\n") else line


# --- IMAP -------------------------------------------------------------------------

LITERAL_AT_END = re.compile(rb"\{(\d+)(\+?)\}$")
FETCH_ITEMS = {"BODY[]", "BODY.PEEK[]", "RFC822", "RFC822.SIZE", "FLAGS", "UID"}


class ImapSyntaxError(ValueError):
    pass


class Literal(bytes):
    """A command argument that came as a literal."""


@dataclass
class ImapSession(Session):
    login: str | None = None  # set by a successful LOGIN
    selected: str | None = None
    idling: bool = False


@dataclass
class ImapCommand:
    tag: str
    name: str  # upper case
    args: list[bytes]  # after the command name: atoms, unquoted strings, Literal
    text: bytes  # the line without literal data and line ends (for FETCH items)


@dataclass
class ImapBackend(LoopServer):
    """An IMAP4rev1 server on 127.0.0.1 (``port`` 0 picks a free one)."""

    users: dict[str, str] = field(default_factory=lambda: {"alice": "wonderland"})
    messages: list[bytes] = field(default_factory=lambda: [b"Subject: hello\r\n\r\nHello from the backend.\r\n"])
    port: int = 0
    host: str = "127.0.0.1"
    greeting: bytes = b"* OK fake IMAP ready\r\n"
    capabilities: bytes = b"IMAP4rev1 IDLE LITERAL+ ID"
    login_untagged: list[bytes] = field(default_factory=lambda: [b"* CAPABILITY IMAP4rev1 IDLE LITERAL+"])
    ok_reply: bytes = b"OK Logged in"  # after "<tag> "
    fail_reply: bytes = b"NO [AUTHENTICATIONFAILED] bad"  # after "<tag> "
    continuation: bytes = b"+ go ahead\r\n"  # for each synchronising literal
    accept_proxy_protocol: bool = True
    lines: list[bytes] = field(default_factory=list, repr=False)
    logins: list[tuple[str, str]] = field(default_factory=list)  # every LOGIN tried: (login, password)
    sessions: list[ImapSession] = field(default_factory=list, repr=False)
    proxy_headers: list[bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    connections: int = 0
    sessions_open: int = 0

    def __post_init__(self) -> None:
        self.greeting = _as_bytes(self.greeting)
        self.fail_reply = _as_bytes(self.fail_reply)
        self.ok_reply = _as_bytes(self.ok_reply)
        self._open_listener()

    # --- pushing to clients -----------------------------------------------------

    def notify_all(self, data: bytes | str, *, idling_only: bool = True) -> int:
        """Send ``data`` (e.g. ``b"* 2 EXISTS\\r\\n"``) to every idling session
        (``idling_only=False``: every logged-in session); returns how many."""
        payload = _as_line(data)

        def push() -> int:
            count = 0
            for conn in list(self._conns.values()):
                session = conn.session
                if conn.gen is None or not (session.idling if idling_only else session.login is not None):
                    continue
                conn.write(payload)
                self._settle(conn)
                count += 1
            return count

        return self.call(push)

    @property
    def idling(self) -> int:
        return sum(1 for session in self.sessions if session.open and session.idling)

    def wait_idling(self, count: int = 1, timeout: float = 10.0) -> None:
        self.wait_for(lambda: self.idling >= count, timeout, f"{count} idling sessions (have {self.idling})")

    def wait_logins(self, count: int = 1, timeout: float = 10.0) -> list[tuple[str, str]]:
        self.wait_for(lambda: len(self.logins) >= count, timeout, f"{count} LOGIN commands")
        return list(self.logins)

    def clear(self) -> None:
        super().clear()
        self.call(self.logins.clear)

    # --- the dialogue -----------------------------------------------------------

    def _new_session(self, number: int, peer: tuple[str, int]) -> ImapSession:
        return ImapSession(number, peer)

    def _session_closed(self, conn: Connection) -> None:
        conn.session.idling = False

    def _session(self, conn: Connection) -> Generator[Request, bytes, None]:
        conn.write(self.greeting)
        while True:
            command = yield from self._read_command(conn)
            if command is None:
                continue
            handler = getattr(self, "_cmd_" + command.name.lower().replace(".", "_"), None)
            if handler is None:
                conn.write(f"{command.tag} BAD unknown\r\n".encode())
                continue
            result = handler(conn, conn.session, command)
            if isinstance(result, Generator):
                yield from result
            if conn.closing:
                return

    def _read_command(self, conn: Connection) -> Generator[Request, bytes, ImapCommand | None]:
        """One command with its literals; every piece is recorded as read."""
        tokens: list[bytes] = []
        text_parts: list[bytes] = []
        piece = yield LINE
        record = piece
        while True:
            self._record(conn, record)
            body = _strip_eol(piece)
            literal = LITERAL_AT_END.search(body)
            head = body[: literal.start()] if literal else body
            text_parts.append(head)
            try:
                tokens += _tokens(head)
            except ImapSyntaxError:
                literal = None
                tokens = []
            if literal is None:
                break
            if not literal.group(2):
                conn.write(self.continuation)
            data = Literal((yield int(literal.group(1))))
            piece = yield LINE
            record = data + piece
            tokens.append(data)
        if not tokens:
            conn.write(b"* BAD empty command line\r\n" if not b"".join(text_parts).strip() else b"* BAD syntax\r\n")
            return None
        tag = _text(tokens[0])
        if len(tokens) < 2 or isinstance(tokens[1], Literal):
            conn.write(f"{tag} BAD missing command\r\n".encode())
            return None
        return ImapCommand(tag, _text(tokens[1]).upper(), tokens[2:], b" ".join(text_parts))

    def _ok(self, conn: Connection, command: ImapCommand, text: str = "") -> None:
        conn.write(f"{command.tag} OK {text or command.name + ' completed'}\r\n".encode())

    def _bad(self, conn: Connection, command: ImapCommand, text: str) -> None:
        conn.write(f"{command.tag} BAD {text}\r\n".encode())

    def _cmd_capability(self, conn: Connection, session: ImapSession, command: ImapCommand) -> None:
        conn.write(b"* CAPABILITY " + self.capabilities + b"\r\n")
        self._ok(conn, command)

    def _cmd_noop(self, conn: Connection, session: ImapSession, command: ImapCommand) -> None:
        self._ok(conn, command)

    def _cmd_id(self, conn: Connection, session: ImapSession, command: ImapCommand) -> None:
        conn.write(b"* ID NIL\r\n")
        self._ok(conn, command)

    def _cmd_logout(self, conn: Connection, session: ImapSession, command: ImapCommand) -> None:
        conn.write(b"* BYE logging out\r\n")
        self._ok(conn, command)
        conn.close_when_flushed()

    def _cmd_login(self, conn: Connection, session: ImapSession, command: ImapCommand) -> None:
        if len(command.args) != 2:
            return self._bad(conn, command, "LOGIN needs a user name and a password")
        if session.login is not None:
            return self._bad(conn, command, "already logged in")
        login, password = _text(command.args[0]), _text(command.args[1])
        self.logins.append((login, password))
        if login in self.users and self.users[login] == password:
            session.login = login
            conn.write(b"".join(_as_line(line) for line in self.login_untagged))
            conn.write(command.tag.encode() + b" " + self.ok_reply + b"\r\n")
        else:
            conn.write(command.tag.encode() + b" " + self.fail_reply + b"\r\n")

    def _cmd_select(self, conn: Connection, session: ImapSession, command: ImapCommand) -> None:
        if session.login is None:
            return self._bad(conn, command, "not logged in")
        if len(command.args) != 1 or _text(command.args[0]).upper() != "INBOX":
            conn.write(f"{command.tag} NO no such mailbox\r\n".encode())
            return None
        count = len(self.messages)
        conn.write(
            b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
            b"* OK [PERMANENTFLAGS (\\Deleted \\Seen)] flags\r\n"
            b"* %d EXISTS\r\n* 0 RECENT\r\n"
            b"* OK [UIDVALIDITY 1] UIDs valid\r\n* OK [UIDNEXT %d] next UID\r\n" % (count, count + 1)
        )
        session.selected = "INBOX"
        mode = "READ-ONLY" if command.name == "EXAMINE" else "READ-WRITE"
        self._ok(conn, command, f"[{mode}] {command.name} completed")

    _cmd_examine = _cmd_select

    def _cmd_fetch(self, conn: Connection, session: ImapSession, command: ImapCommand) -> None:
        if session.selected is None:
            return self._bad(conn, command, "no mailbox selected")
        parts = command.text.split(None, 3)  # tag FETCH set items
        if len(parts) != 4:
            return self._bad(conn, command, "FETCH needs a sequence set and items")
        numbers = _sequence_set(_text(parts[2]), len(self.messages))
        items = _text(parts[3]).strip().upper()
        if items.startswith("(") and items.endswith(")"):
            items = items[1:-1]
        wanted = items.split()
        if numbers is None or not wanted or not set(wanted) <= FETCH_ITEMS:
            return self._bad(conn, command, "unsupported FETCH")
        for number in numbers:
            message = self.messages[number - 1]
            out = [b"* %d FETCH (" % number]
            for i, item in enumerate(wanted):
                out.append(b" " if i else b"")
                if item == "UID":
                    out.append(b"UID %d" % number)
                elif item == "FLAGS":
                    out.append(b"FLAGS ()")
                elif item == "RFC822.SIZE":
                    out.append(b"RFC822.SIZE %d" % len(message))
                else:
                    name = b"RFC822" if item == "RFC822" else b"BODY[]"
                    out.append(name + b" {%d}\r\n" % len(message) + message)
            out.append(b")\r\n")
            conn.write(b"".join(out))
        self._ok(conn, command)

    def _cmd_idle(self, conn: Connection, session: ImapSession, command: ImapCommand) -> Generator[Request, bytes, None]:
        if session.login is None:
            self._bad(conn, command, "not logged in")
            return
        conn.write(b"+ idling\r\n")
        session.idling = True
        try:
            line = yield LINE
        finally:
            session.idling = False
        self._record(conn, line)
        if _strip_eol(line).upper() == b"DONE":
            self._ok(conn, command, "IDLE terminated")
        else:
            self._bad(conn, command, "expected DONE")


def _tokens(text: bytes) -> list[bytes]:
    """Atoms and quoted strings (unquoted); raises ImapSyntaxError."""
    out: list[bytes] = []
    i, size = 0, len(text)
    while i < size:
        if text[i] == 0x20:
            i += 1
        elif text[i] == 0x22:
            value = bytearray()
            i += 1
            while i < size and text[i] != 0x22:
                if text[i] == 0x5C:
                    i += 1
                    if i == size:
                        break
                value.append(text[i])
                i += 1
            if i >= size:
                raise ImapSyntaxError("unterminated quoted string")
            out.append(bytes(value))
            i += 1
        else:
            end = text.find(b" ", i)
            end = size if end < 0 else end
            out.append(text[i:end])
            i = end
    return out


def _sequence_set(text: str, count: int) -> list[int] | None:
    numbers: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.partition(":")
            low = count if first == "*" else int(first)
            high = low if not last else count if last == "*" else int(last)
            low, high = min(low, high), max(low, high)
            if low < 1 or high > count:
                return None
            numbers.extend(range(low, high + 1))
    except ValueError:
        return None
    return numbers


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A demo IMAP backend for mailgate.")
    parser.add_argument("--port", type=int, default=11143)
    parser.add_argument("--user", action="append", default=[], help="login:password (repeatable)")
    args = parser.parse_args(argv)
    users = dict(entry.split(":", 1) for entry in args.user) or {"alice": "wonderland"}
    backend = ImapBackend(users=users, port=args.port)
    print(f"demo IMAP backend on 127.0.0.1:{backend.port} for {', '.join(users)}", flush=True)
    backend.serve_forever()


if __name__ == "__main__":
    main()
