"""A POP3-shaped backend that, once logged in, echoes every byte back.

It stands behind mailgate in relay tests: what a client sends comes back
through both directions of the relay at once, so bulk transfers, back-pressure
and half-closes can be checked byte for byte. ``closed`` counts the sessions
whose client side (mailgate) went away.
"""

from __future__ import annotations

import socket
import socketserver
import threading


class EchoBackend:
    """A threaded server on 127.0.0.1: USER/PASS accepted, then echo."""

    greeting = b"+OK echo ready\r\n"
    logged_in = b"+OK logged in\r\n"

    def __init__(self) -> None:
        self.closed = 0
        self.lock = threading.Lock()
        backend = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                backend._serve(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> EchoBackend:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(30)
        try:
            sock.sendall(self.greeting)
            self._login(sock)
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                sock.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                self.closed += 1

    def _login(self, sock: socket.socket) -> None:
        buffered = b""
        for reply in (b"+OK\r\n", self.logged_in):
            while b"\r\n" not in buffered:
                chunk = sock.recv(1024)
                if not chunk:
                    raise ConnectionError("closed during login")
                buffered += chunk
            buffered = buffered.split(b"\r\n", 1)[1]
            sock.sendall(reply)
        if buffered:
            sock.sendall(buffered)
