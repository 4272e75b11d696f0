"""A fake auth_http server for tests (and demos).

It records every request (request line, raw header lines in order, the
connection it came on) and answers from rules::

    with FakeAuthServer(ok("127.0.0.1", 11110)) as server:
        ...  # auth_http 127.0.0.1:{server.port}/auth
        assert server.requests[0].header("Auth-User") == "alice"

``rules`` is an ``Answer``, a callable ``(request) -> Answer | None``, or a
list of those: the first rule that gives an answer is used (an ``Answer`` in
the list always does). ``ok``, ``fail``, ``wait``, ``raw`` and ``close`` build
answers; every ``Answer`` can be varied with ``.but(...)`` (a delay before
answering, HTTP/1.0, keep-alive or not, a body with or without
Content-Length, lingering with the connection open after answering).
``by_user`` and ``sequence`` build common rules.

Each connection gets a thread of its own, so hundreds of slow requests are
served at once. Run alone, it accepts the users given and sends every login to
one backend::

    python -m tests.fakes.auth_server --port 9000 --backend 127.0.0.1:11110 --user alice:wonderland
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from urllib.parse import unquote_to_bytes

Rule = Callable[["RecordedRequest"], "Answer | None"]

MAX_REQUEST_HEAD = 64 * 1024


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received."""

    method: str
    path: str
    version: str  # "HTTP/1.0" | "HTTP/1.1"
    header_lines: tuple[tuple[str, bytes], ...]  # raw name and value, in order
    raw: bytes  # the request head as received
    connection: int  # number of the connection it came on, from 1
    index: int  # number of this request on its connection, from 1
    received_at: float = 0.0  # time.monotonic()

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (any case), as text."""
        values = self.headers(name)
        return values[-1] if values else None

    def headers(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value.decode("utf-8", "surrogateescape") for key, value in self.header_lines if key.lower() == wanted]

    @property
    def names(self) -> list[str]:
        """Header names in order, as sent."""
        return [name for name, _ in self.header_lines]

    @property
    def login(self) -> str:
        """Auth-User with nginx's %XX escaping undone."""
        return _unescape(self.header("Auth-User") or "")

    @property
    def password(self) -> str:
        return _unescape(self.header("Auth-Pass") or "")


def _unescape(value: str) -> str:
    return unquote_to_bytes(value).decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Answer:
    """What to send back. ``raw`` bytes are sent verbatim instead of a
    rendered response; ``close`` closes without answering."""

    headers: tuple[tuple[str, str | bytes], ...] = ()
    status: str = "200 OK"
    version: str = "HTTP/1.1"
    body: bytes = b""
    content_length: bool | None = None  # None: sent when the connection stays open
    keep_alive: bool | None = None  # None: HTTP/1.1 keeps it, HTTP/1.0 closes
    delay: float = 0.0  # seconds before answering (or closing)
    linger: float = 0.0  # seconds to hold the connection open after answering, then close
    raw: bytes | None = None
    close: bool = False

    def but(self, **changes: object) -> Answer:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def keeps_alive(self) -> bool:
        if self.raw is not None or self.close:
            return False
        return self.version == "HTTP/1.1" if self.keep_alive is None else self.keep_alive

    def render(self) -> bytes:
        if self.raw is not None:
            return self.raw
        keep = self.keeps_alive
        lines = [f"{self.version} {self.status}".encode()]
        for name, value in self.headers:
            data = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
            lines.append(name.encode() + b": " + data)
        if self.content_length if self.content_length is not None else keep:
            lines.append(b"Content-Length: %d" % len(self.body))
        if keep and self.version == "HTTP/1.0":
            lines.append(b"Connection: keep-alive")
        elif not keep and self.version == "HTTP/1.1":
            lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


def ok(server: str = "127.0.0.1", port: int | str = 110, *, user: str | None = None,
       password: str | None = None, status: str | None = "OK", **changes: object) -> Answer:
    """Auth-Status: OK with Auth-Server/Auth-Port (and Auth-User/Auth-Pass)."""
    headers: list[tuple[str, str | bytes]] = []
    if status is not None:
        headers.append(("Auth-Status", status))
    headers += [("Auth-Server", server), ("Auth-Port", str(port))]
    if user is not None:
        headers.append(("Auth-User", user))
    if password is not None:
        headers.append(("Auth-Pass", password))
    return Answer(tuple(headers)).but(**changes)


def fail(message: str = "Invalid login or password", wait: int | None = None,
         error_code: str | None = None, **changes: object) -> Answer:
    headers: list[tuple[str, str | bytes]] = [("Auth-Status", message)]
    if wait is not None:
        headers.append(("Auth-Wait", str(wait)))
    if error_code is not None:
        headers.append(("Auth-Error-Code", error_code))
    return Answer(tuple(headers)).but(**changes)


def wait(seconds: int | None = None, **changes: object) -> Answer:
    headers: list[tuple[str, str | bytes]] = [("Auth-Status", "WAIT")]
    if seconds is not None:
        headers.append(("Auth-Wait", str(seconds)))
    return Answer(tuple(headers)).but(**changes)


def raw(data: bytes, **changes: object) -> Answer:
    """Send ``data`` verbatim, then close (after ``linger``)."""
    return Answer(raw=data).but(**changes)


def close(delay: float = 0.0) -> Answer:
    """Close the connection without answering."""
    return Answer(close=True, delay=delay)


def by_user(answers: dict[str, Answer], default: Answer | None = None) -> Rule:
    """Answer by the (unescaped) Auth-User."""
    return lambda request: answers.get(request.login, default)


def sequence(*answers: Answer) -> Rule:
    """The n-th request gets the n-th answer; the last one repeats."""
    lock = threading.Lock()
    count = [0]

    def rule(request: RecordedRequest) -> Answer:
        with lock:
            count[0] += 1
            return answers[min(count[0], len(answers)) - 1]

    return rule


NO_RULE = fail("no rule matched")


@dataclass
class FakeAuthServer:
    """A threaded auth_http server on 127.0.0.1 (``port`` 0: a free one), or
    on a UNIX socket (``unix=True``: in a fresh temporary directory, or at
    ``unix_path``). ``rules`` may be replaced while it runs."""

    rules: object = field(default_factory=lambda: ok())
    port: int = 0
    unix: bool = False
    unix_path: str | None = None
    uri: str = "/auth"
    requests: list[RecordedRequest] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._tmpdir: str | None = None
        if self.unix and not self.unix_path:
            self._tmpdir = tempfile.mkdtemp(prefix="fake-auth-")
            self.unix_path = os.path.join(self._tmpdir, "auth.sock")
        if self.unix_path is not None:
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(self.unix_path)
        else:
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(("127.0.0.1", self.port))
            self.port = self._listener.getsockname()[1]
        self._listener.listen(1024)
        self._listener.settimeout(0.05)
        self._thread: threading.Thread | None = None

    # --- addresses ----------------------------------------------------------

    @property
    def address(self) -> str:
        """How nginx names it in log lines: ``127.0.0.1:PORT`` or ``unix:/path``."""
        return f"unix:{self.unix_path}" if self.unix_path else f"127.0.0.1:{self.port}"

    @property
    def auth_http(self) -> str:
        """The ``auth_http`` directive's argument."""
        return f"unix:{self.unix_path}:{self.uri}" if self.unix_path else f"127.0.0.1:{self.port}{self.uri}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.uri}" if not self.unix_path else self.auth_http

    def model_url(self, host_header: str | None = None):  # noqa: ANN201 - mailgate.config.model.AuthHttpUrl
        """The parsed ``auth_http`` model pointing here."""
        from mailgate.config.model import AuthHttpUrl

        if self.unix_path:
            return AuthHttpUrl(self.auth_http, "unix", self.unix_path, 0, self.uri, host_header or "localhost")
        return AuthHttpUrl(self.auth_http, "inet", "127.0.0.1", self.port, self.uri, host_header or "127.0.0.1")

    # --- life cycle ---------------------------------------------------------

    def start(self) -> FakeAuthServer:
        self._thread = threading.Thread(target=self._accept_loop, name="fake-auth-accept", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        self._listener.close()
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            _close(sock)
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)
        if self._tmpdir:
            os.rmdir(self._tmpdir)

    def __enter__(self) -> FakeAuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.requests)} auth requests, expected {count}")
            time.sleep(0.01)
        return list(self.requests)

    # --- serving ------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                self._open.add(conn)
            threading.Thread(target=self._serve, args=(conn, number), name=f"fake-auth-{number}", daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(None)
        buffer = b""
        index = 0
        try:
            while not self._stopping.is_set():
                head, buffer = _read_head(conn, buffer)
                if head is None:
                    return
                index += 1
                request = _parse_request(head, number, index)
                with self._lock:
                    self.requests.append(request)
                answer = self._answer(request)
                if answer.delay and self._stopping.wait(answer.delay):
                    return
                if answer.close:
                    return
                conn.sendall(answer.render())
                if not answer.keeps_alive:
                    if answer.linger:
                        self._stopping.wait(answer.linger)
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._open.discard(conn)
            _close(conn)

    def _answer(self, request: RecordedRequest) -> Answer:
        rules = self.rules
        if isinstance(rules, Answer) or callable(rules):
            rules = [rules]
        for rule in rules:  # type: ignore[union-attr]
            answer = rule if isinstance(rule, Answer) else rule(request)
            if answer is not None:
                return answer
        return NO_RULE


def _read_head(conn: socket.socket, buffer: bytes) -> tuple[bytes | None, bytes]:
    """The next request head (through its empty line), or None at EOF."""
    while True:
        for separator in (b"\r\n\r\n", b"\n\n"):
            end = buffer.find(separator)
            if end >= 0:
                return buffer[: end + len(separator)], buffer[end + len(separator) :]
        if len(buffer) > MAX_REQUEST_HEAD:
            return None, b""
        data = conn.recv(65536)
        if not data:
            return None, b""
        buffer += data


def _parse_request(head: bytes, connection: int, index: int) -> RecordedRequest:
    lines = head.split(b"\n")
    request_line = lines[0].rstrip(b"\r").decode("latin-1")
    method, _, rest = request_line.partition(" ")
    path, _, version = rest.rpartition(" ")
    headers = []
    for line in lines[1:]:
        line = line.rstrip(b"\r")
        if not line:
            break
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1"), value[1:] if value.startswith(b" ") else value))
    return RecordedRequest(method, path, version, tuple(headers), head, connection, index, time.monotonic())


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake nginx auth_http server.")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--backend", default="127.0.0.1:11110", help="host:port sent as Auth-Server/Auth-Port")
    parser.add_argument("--user", action="append", default=[], help="login:password (repeatable)")
    args = parser.parse_args(argv)
    users = dict(item.split(":", 1) for item in args.user)
    host, _, port = args.backend.rpartition(":")

    def rule(request: RecordedRequest) -> Answer:
        if users.get(request.login) == request.password and request.header("Auth-Method") == "plain":
            return ok(host, port)
        return fail(wait=3)

    with FakeAuthServer(rule, port=args.port) as server:
        print(f"auth_http {server.auth_http}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
