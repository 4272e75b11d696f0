"""Moving bulk bytes on the load side without copying them through Python.

On a two-core machine the load generator and the fake backends share one core,
and in the bulk workloads they copy every byte twice (the backend into the
kernel, the client out of it) while a proxy that splices copies it at most
once: the load side runs out of CPU first and the proxy's figure is only a
lower bound. Here the backends send messages with sendfile(2) from a memfd and
the receivers drop what they need not look at with splice(2) into /dev/null,
reading only the last bytes of each message to check it ended as it should.
Linux only, like the bench.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import threading

IO_TIMEOUT = 60.0
PIPE_SIZE = 1 << 20

_local = threading.local()
_devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)


def memfile(data: bytes) -> int:
    """A file descriptor whose file holds ``data`` (for sendfile)."""
    fd = os.memfd_create("bench-message", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return fd


def _wait(sock: socket.socket, write: bool) -> None:
    ready = select.select([], [sock], [], IO_TIMEOUT) if write else select.select([sock], [], [], IO_TIMEOUT)
    if not any(ready):
        raise TimeoutError("bulk transfer stalled")


def send_file(sock: socket.socket, fd: int, size: int) -> None:
    """Send the first ``size`` bytes of ``fd`` (works on sockets with or without a timeout)."""
    offset = 0
    while offset < size:
        try:
            sent = os.sendfile(sock.fileno(), fd, offset, size - offset)
        except BlockingIOError:
            _wait(sock, True)
            continue
        if sent == 0:
            raise ConnectionError("peer closed during sendfile")
        offset += sent


def _pipe() -> tuple[int, int]:
    pipe = getattr(_local, "pipe", None)
    if pipe is None:
        pipe = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            pass  # the default 64 KiB pipe works, with more calls
        _local.pipe = pipe
    return pipe


def discard(sock: socket.socket, size: int) -> None:
    """Read ``size`` bytes from ``sock`` and drop them, in the kernel."""
    read_end, write_end = _pipe()
    while size > 0:
        try:
            moved = os.splice(sock.fileno(), write_end, min(size, PIPE_SIZE))
        except BlockingIOError:
            _wait(sock, False)
            continue
        if moved == 0:
            raise ConnectionError(f"closed with {size} bytes still to come")
        size -= moved
        while moved:
            moved -= os.splice(read_end, _devnull, moved)


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes (a message's last few, to check them)."""
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
        except BlockingIOError:
            _wait(sock, False)
            continue
        if not chunk:
            raise ConnectionError("closed before the end of the message")
        data += chunk
    return data


def skip(sock: socket.socket, buf: bytearray, size: int, tail_len: int) -> bytes:
    """Consume ``size`` bytes, first from ``buf`` (what a line reader read
    ahead), the rest from ``sock`` with all but the last ``tail_len`` bytes
    dropped in the kernel; returns those last bytes."""
    taken = bytes(buf[:size])
    del buf[:size]
    rest = size - len(taken)
    if rest <= tail_len:
        return (taken + recv_exact(sock, rest))[-tail_len:]
    discard(sock, rest - tail_len)
    return recv_exact(sock, tail_len)
