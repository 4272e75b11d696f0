"""Socket helpers for the login phase (the session driver and the upstream
login), where replies are short and nearly always leave in one ``send``."""

from __future__ import annotations

import socket


def send_all(sock: socket.socket, data: bytes) -> None:
    """``sendall`` that first tries one plain ``send``. gevent's ``sendall``
    asks the kernel for SO_SNDBUF on every call (one extra system call per
    reply) and slices in chunks; a one-line reply needs neither. Honours the
    socket's timeout like ``sendall``."""
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])
