"""Lean fake servers for load: an auth_http server and POP3/IMAP/SMTP backends.

One process serves them all, on loopback ports it picks itself, and prints
``READY {"auth": port, ...}`` once listening:

* the auth server (asyncio protocol, no HTTP library) answers every request
  with Auth-Status OK and a backend chosen by Auth-Protocol and the user name:
  names starting with ``slow`` are answered after ``--auth-delay`` seconds
  (a timer, so delayed answers overlap), names starting with ``bulk`` are
  sent to the bulk backends. HTTP/1.1 requests (mailgate) keep the
  connection; HTTP/1.0 requests (nginx) get the answer and a close, as an
  HTTP/1.0 server does;
* the fast backends (asyncio) log anyone in and answer QUIT, LOGOUT, NOOP:
  what the login and idle workloads need, at a small cost per session;
* the bulk backends (one blocking thread per session, the GIL released in
  every send and receive) serve POP3 RETR and IMAP FETCH of 16 MiB messages
  (with sendfile(2)) and take SMTP DATA of any size (dropped in the kernel
  with splice(2) when MAIL FROM announced its SIZE=; bench/zerocopy.py).

The process ends when its standard input closes (the orchestrator is gone),
on SIGTERM, or after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wire  # noqa: E402
import zerocopy  # noqa: E402

try:
    import uvloop
except ImportError:  # the bench still runs, a little slower
    uvloop = None

HOST = "127.0.0.1"


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- auth_http --------------------------------------------------------------


def _header(head: bytes, name: bytes) -> bytes:
    start = head.find(b"\r\n" + name + b":")
    if start < 0:
        return b""
    start += len(name) + 3
    end = head.find(b"\r\n", start)
    return head[start:end if end >= 0 else len(head)].strip()


class Routes:
    """Precomputed answers: (protocol, bulk, http/1.1) -> response bytes."""

    def __init__(self, fast: dict[bytes, int], bulk: dict[bytes, int]) -> None:
        self.answers: dict[tuple[bytes, bool, bool], bytes] = {}
        for is_bulk, table in ((False, fast), (True, bulk)):
            for proto, port in table.items():
                fields = b"Auth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: %d\r\n" % port
                self.answers[(proto, is_bulk, True)] = b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 0\r\n\r\n"
                self.answers[(proto, is_bulk, False)] = b"HTTP/1.0 200 OK\r\n" + fields + b"\r\n"
        self.fail = b"HTTP/1.0 200 OK\r\nAuth-Status: Invalid login or password\r\n\r\n"


class AuthProtocol(asyncio.Protocol):
    routes: Routes
    delay: float
    stats: dict

    def __init__(self) -> None:
        self.buf = b""
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.stats["auth_connections"] += 1

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head, buf = buf[:end + 2], buf[end + 4:]
            self._answer(head)
        self.buf = buf

    def _answer(self, head: bytes) -> None:
        self.stats["auth_requests"] += 1
        line_end = head.find(b"\r\n")
        keep = head[:line_end].endswith(b"HTTP/1.1")
        proto = _header(head, b"Auth-Protocol")
        user = _header(head, b"Auth-User")
        answer = self.routes.answers.get((proto, user.startswith(wire.BULK_PREFIX.encode()), keep))
        if answer is None:
            answer, keep = self.routes.fail, False
        if user.startswith(wire.SLOW_PREFIX.encode()):
            asyncio.get_running_loop().call_later(self.delay, self._send, answer, keep)
        else:
            self._send(answer, keep)

    def _send(self, answer: bytes, keep: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(answer)
        if not keep:
            transport.close()

    def connection_lost(self, exc) -> None:
        self.transport = None


# --- fast backends ------------------------------------------------------------


class LineProtocol(asyncio.Protocol):
    greeting = b""
    stats: dict

    def __init__(self) -> None:
        self.buf = b""
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.stats["backend_sessions"] += 1
        transport.write(self.greeting)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while self.transport is not None:
            end = buf.find(b"\n")
            if end < 0:
                break
            line, buf = buf[:end + 1], buf[end + 1:]
            self.line(line)
        self.buf = buf

    def connection_lost(self, exc) -> None:
        self.transport = None

    def close_after(self, reply: bytes) -> None:
        self.transport.write(reply)
        self.transport.close()
        self.transport = None

    def line(self, line: bytes) -> None:
        raise NotImplementedError


class Pop3Backend(LineProtocol):
    greeting = b"+OK fake POP3 ready\r\n"

    def line(self, line: bytes) -> None:
        cmd = line[:4].upper()
        if cmd == b"USER":
            self.transport.write(b"+OK\r\n")
        elif cmd == b"PASS":
            self.transport.write(b"+OK logged in\r\n")
        elif cmd == b"QUIT":
            self.close_after(b"+OK bye\r\n")
        elif cmd == b"NOOP":
            self.transport.write(b"+OK\r\n")
        elif cmd == b"STAT":
            self.transport.write(b"+OK 0 0\r\n")
        else:
            self.transport.write(b"-ERR unknown command\r\n")


class ImapBackend(LineProtocol):
    greeting = b"* OK fake IMAP ready\r\n"

    def __init__(self) -> None:
        super().__init__()
        self.pending = b""

    def line(self, line: bytes) -> None:
        if line.endswith(b"}\r\n"):  # a synchronising literal follows
            self.pending += line
            self.transport.write(b"+ go ahead\r\n")
            return
        command, self.pending = self.pending + line, b""
        parts = command.split(b" ", 2)
        tag = parts[0]
        verb = parts[1].strip().upper() if len(parts) > 1 else b""
        if verb == b"LOGIN":
            self.transport.write(tag + b" OK LOGIN completed\r\n")
        elif verb == b"NOOP":
            self.transport.write(tag + b" OK NOOP completed\r\n")
        elif verb == b"LOGOUT":
            self.close_after(b"* BYE logging out\r\n" + tag + b" OK LOGOUT completed\r\n")
        elif verb == b"CAPABILITY":
            self.transport.write(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
        else:
            self.transport.write(tag + b" BAD unknown command\r\n")


# --- bulk backends (threads) --------------------------------------------------

SCRATCH = 1 << 20


class Reader:
    """Line reads over a blocking socket, then raw reads for SMTP DATA."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def line(self) -> bytes | None:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end + 1])
                del self.buf[:end + 1]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk

    def data_sized(self, size: int) -> int | None:
        """A DATA body the client announced with SIZE= (bench/loadgen.py
        does), dropped in the kernel; only its final dot line is read."""
        try:
            tail = zerocopy.skip(self.sock, self.buf, size, 5)
        except ConnectionError:
            return None
        if tail != b"\r\n.\r\n":
            raise ConnectionError(f"DATA of SIZE={size} ends with {tail!r}")
        return size

    def data(self, scratch: bytearray) -> int | None:
        """Consume a DATA body up to and including CRLF.CRLF; its size."""
        mark = b"\r\n.\r\n"
        tail = b"\r\n"  # the DATA command's own CRLF precedes the body
        size = 0
        if self.buf:
            pos = (tail + bytes(self.buf)).find(mark)
            if pos >= 0:
                cut = pos - len(tail) + len(mark)
                del self.buf[:cut]
                return cut
            size += len(self.buf)
            tail = bytes(self.buf[-4:])
            self.buf.clear()
        view = memoryview(scratch)
        while True:
            n = self.sock.recv_into(view)
            if n == 0:
                return None
            joined = tail + bytes(view[:4])
            pos = joined.find(mark)
            if pos < 0:
                pos = scratch.find(mark, 0, n)
                if pos >= 0:
                    pos += len(tail)
            if pos >= 0:
                cut = pos - len(tail) + len(mark)
                self.buf += view[cut:n]
                return size + cut
            size += n
            tail = bytes(view[max(0, n - 4):n]) if n >= 4 else (tail + bytes(view[:n]))[-4:]


def _bulk_pop3(sock: socket.socket, ctx: dict) -> None:
    reader = Reader(sock)
    sock.sendall(b"+OK fake POP3 bulk ready\r\n")
    while True:
        line = reader.line()
        if line is None:
            return
        cmd = line[:4].upper()
        if cmd == b"RETR":
            zerocopy.send_file(sock, *ctx["pop3_retr"])
        elif cmd == b"QUIT":
            sock.sendall(b"+OK bye\r\n")
            return
        elif cmd in (b"USER", b"PASS", b"NOOP"):
            sock.sendall(b"+OK\r\n")
        else:
            sock.sendall(b"-ERR unknown command\r\n")


def _bulk_imap(sock: socket.socket, ctx: dict) -> None:
    reader = Reader(sock)
    sock.sendall(b"* OK fake IMAP bulk ready\r\n")
    pending = b""
    while True:
        line = reader.line()
        if line is None:
            return
        if line.endswith(b"}\r\n"):
            pending += line
            sock.sendall(b"+ go ahead\r\n")
            continue
        command, pending = pending + line, b""
        parts = command.split(b" ", 2)
        tag = parts[0]
        verb = parts[1].strip().upper() if len(parts) > 1 else b""
        if verb == b"FETCH":
            zerocopy.send_file(sock, *ctx["imap_fetch"])
            sock.sendall(wire.imap_fetch_done(tag))
        elif verb == b"LOGOUT":
            sock.sendall(b"* BYE logging out\r\n" + tag + b" OK LOGOUT completed\r\n")
            return
        else:
            sock.sendall(tag + b" OK " + verb + b" completed\r\n")


def _bulk_smtp(sock: socket.socket, ctx: dict) -> None:
    reader = Reader(sock)
    scratch = bytearray(SCRATCH)
    announced = 0  # MAIL FROM's SIZE=
    sock.sendall(b"220 fake ESMTP bulk ready\r\n")
    while True:
        line = reader.line()
        if line is None:
            return
        cmd = line[:4].upper()
        if cmd in (b"EHLO", b"HELO"):
            sock.sendall(b"250-fake\r\n250-PIPELINING\r\n250-SIZE\r\n250 8BITMIME\r\n")
        elif cmd == b"DATA":
            sock.sendall(b"354 go ahead\r\n")
            size = reader.data_sized(announced) if announced else reader.data(scratch)
            if size is None:
                return
            ctx["stats"]["smtp_bytes"] += size
            sock.sendall(b"250 2.0.0 queued\r\n")
        elif cmd == b"QUIT":
            sock.sendall(b"221 2.0.0 bye\r\n")
            return
        elif cmd == b"MAIL":
            found = re.search(rb" SIZE=(\d+)", line, re.IGNORECASE)
            announced = int(found.group(1)) if found else 0
            sock.sendall(b"250 2.0.0 ok\r\n")
        elif cmd in (b"RCPT", b"RSET", b"NOOP"):
            sock.sendall(b"250 2.0.0 ok\r\n")
        elif cmd == b"XCLI":
            sock.sendall(b"220 fake ESMTP bulk ready\r\n")
        else:
            sock.sendall(b"502 5.5.2 unknown command\r\n")


def _serve_bulk(listener: socket.socket, handler, ctx: dict) -> None:
    def session(sock: socket.socket) -> None:
        try:
            with sock:
                handler(sock, ctx)
        except OSError:
            pass

    while True:
        try:
            sock, _ = listener.accept()
        except OSError:
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=session, args=(sock,), daemon=True).start()


def _listener(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(4096)
    return sock


# --- main -----------------------------------------------------------------------


async def serve(args) -> None:
    loop = asyncio.get_running_loop()
    stats = {"auth_connections": 0, "auth_requests": 0, "backend_sessions": 0, "smtp_bytes": 0}
    LineProtocol.stats = stats
    AuthProtocol.stats = stats
    AuthProtocol.delay = args.auth_delay

    fast = {}
    servers = []
    for name, proto in ((b"pop3", Pop3Backend), (b"imap", ImapBackend)):
        sock = _listener()
        servers.append(await loop.create_server(proto, sock=sock, backlog=4096))
        fast[name] = sock.getsockname()[1]

    ctx = {"stats": stats}
    if not args.no_bulk:
        for key, reply in (("pop3_retr", wire.pop3_retr_reply(wire.DOWNLOAD_MESSAGE)),
                           ("imap_fetch", wire.imap_fetch_reply(wire.DOWNLOAD_MESSAGE))):
            ctx[key] = (zerocopy.memfile(reply), len(reply))  # sent with sendfile(2)
    bulk = {}
    for name, handler in ((b"pop3", _bulk_pop3), (b"imap", _bulk_imap), (b"smtp", _bulk_smtp)):
        sock = _listener()
        bulk[name] = sock.getsockname()[1]
        threading.Thread(target=_serve_bulk, args=(sock, handler, ctx), daemon=True).start()
    # SMTP logins only ever go to the bulk backend (the upload workload).
    fast[b"smtp"] = bulk[b"smtp"]

    AuthProtocol.routes = Routes(fast, bulk)
    auth_sock = _listener()
    servers.append(await loop.create_server(AuthProtocol, sock=auth_sock, backlog=4096))

    ports = {
        "auth": auth_sock.getsockname()[1],
        "pop3": fast[b"pop3"], "imap": fast[b"imap"],
        "bulk_pop3": bulk[b"pop3"], "bulk_imap": bulk[b"imap"], "bulk_smtp": bulk[b"smtp"],
    }
    print("READY " + json.dumps(ports), flush=True)

    done = asyncio.Event()

    def stdin_ready() -> None:
        line = sys.stdin.buffer.readline()
        if not line:
            done.set()
        elif line.strip() == b"stats":
            print("STATS " + json.dumps(stats), flush=True)

    loop.add_reader(sys.stdin.fileno(), stdin_ready)
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)
    try:
        await asyncio.wait_for(done.wait(), args.max_seconds)
    except asyncio.TimeoutError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auth-delay", type=float, default=wire.AUTH_DELAY)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--no-bulk", action="store_true", help="do not build the 16 MiB messages")
    args = parser.parse_args()
    raise_nofile()
    if uvloop is not None:
        uvloop.install()
    asyncio.run(serve(args))
    os._exit(0)  # bulk threads may still be blocked in a socket call


if __name__ == "__main__":
    main()
