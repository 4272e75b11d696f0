"""A small POP3 server to stand behind mailgate in tests and demos.

It records every line it receives, so tests can check what mailgate sent on
the client's behalf. Run it alone for a first login through mailgate:

    python -m tests.fakes.pop3_backend --port 11110 --user alice:wonderland
"""

from __future__ import annotations

import argparse
import socketserver
import threading
from dataclasses import dataclass, field


@dataclass
class Pop3Backend:
    """A threaded POP3 server on 127.0.0.1 (port 0 picks a free one)."""

    users: dict[str, str] = field(default_factory=lambda: {"alice": "wonderland"})
    messages: list[bytes] = field(default_factory=lambda: [b"Subject: hello\r\n\r\nHello from the backend.\r\n"])
    port: int = 0
    greeting: bytes = b"+OK fake POP3 ready\r\n"
    pass_reply: bytes = b"+OK logged in\r\n"
    fail_reply: bytes = b"-ERR [AUTH] bad password\r\n"
    lines: list[bytes] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        backend = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                backend._serve(self)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler, bind_and_activate=False)
        self.server.request_queue_size = 1024  # socketserver's 5 would drop bursts of logins
        self.server.daemon_threads = True
        self.server.allow_reuse_address = True
        self.server.server_bind()
        self.server.server_activate()
        self.port = self.server.server_address[1]
        self.thread: threading.Thread | None = None

    def start(self) -> Pop3Backend:
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Pop3Backend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the dialogue ---------------------------------------------------------

    def _serve(self, handler: socketserver.StreamRequestHandler) -> None:
        with self.lock:
            self.connections += 1
        out = handler.wfile
        out.write(self.greeting)
        user: str | None = None
        logged_in = False
        for raw in handler.rfile:
            with self.lock:
                self.lines.append(raw)
            verb, _, arg = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape").partition(" ")
            verb = verb.upper()
            if verb == "QUIT":
                out.write(b"+OK bye\r\n")
                return
            if not logged_in:
                user, logged_in = self._login(out, verb, arg, user)
            else:
                self._transaction(out, verb, arg)

    def _login(self, out, verb: str, arg: str, user: str | None) -> tuple[str | None, bool]:  # noqa: ANN001
        if verb == "USER":
            out.write(b"+OK\r\n")
            return arg, False
        if verb == "PASS" and user is not None and self.users.get(user) == arg:
            out.write(self.pass_reply)
            return user, True
        out.write(self.fail_reply if verb == "PASS" else b"-ERR not logged in\r\n")
        return None, False

    def _transaction(self, out, verb: str, arg: str) -> None:  # noqa: ANN001
        if verb == "STAT":
            out.write(b"+OK %d %d\r\n" % (len(self.messages), sum(map(len, self.messages))))
        elif verb == "LIST":
            out.write(b"+OK\r\n" + b"".join(b"%d %d\r\n" % (i + 1, len(m)) for i, m in enumerate(self.messages)) + b".\r\n")
        elif verb == "RETR" and arg.isdigit() and 0 < int(arg) <= len(self.messages):
            out.write(b"+OK\r\n" + _dot_stuff(self.messages[int(arg) - 1]) + b".\r\n")
        elif verb == "NOOP":
            out.write(b"+OK\r\n")
        else:
            out.write(b"-ERR unknown command\r\n")


def _dot_stuff(message: bytes) -> bytes:
    """RFC 1939 3: lines starting with '.' get another; end with CRLF."""
    lines = message.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="A demo POP3 backend for mailgate.")
    parser.add_argument("--port", type=int, default=11110)
    parser.add_argument("--user", action="append", default=[], help="login:password (repeatable)")
    args = parser.parse_args()
    users = dict(entry.split(":", 1) for entry in args.user) or {"alice": "wonderland"}
    backend = Pop3Backend(users=users, port=args.port)
    print(f"demo POP3 backend on 127.0.0.1:{backend.port} for {', '.join(users)}", flush=True)
    try:
        backend.server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

