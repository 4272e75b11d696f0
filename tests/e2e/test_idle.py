"""IMAP IDLE through mailgate: a message submitted through mailgate reaches
Postfix, lands in the maildir, and Dovecot's EXISTS reaches the idling
client through mailgate. Also: a logged-in session outlives the pre-login
`timeout`, and Dovecot's COMPRESS=DEFLATE works through mailgate."""

from __future__ import annotations

import socket
import time
import uuid
import zlib

from tests.e2e import clients, messages
from tests.e2e.conftest import CLIENT_ADDRESS, Stack
from tests.integration.harness import recv_tagged, recv_until

USER = "bob"


def submit(stack: Stack, to: str, subject: str) -> bytes:
    data = messages.message(subject, messages.tricky_body(), to=f"{to}@e2e.test",
                            message_id=f"<{uuid.uuid4().hex}@e2e.test>")
    conn = clients.smtp(stack.submission_port, source=CLIENT_ADDRESS)
    try:
        conn.login("alice", stack.password("alice"))
        assert conn.sendmail("alice@e2e.test", [f"{to}@e2e.test"], data) == {}
    finally:
        conn.quit()
    return data


def test_idle_sees_a_new_message_arrive(e2e: Stack) -> None:
    conn = clients.imap(e2e.imap_port)
    try:
        assert conn.login(USER, e2e.password(USER))[0] == "OK"
        typ, data = conn.select("INBOX")
        assert typ == "OK"
        before = int(data[0])
        idle = clients.Idle(conn)
        assert idle.start().startswith(b"+")
        sent = submit(e2e, USER, "arrives while idling")
        idle.wait_exists(before + 1, timeout=30)
        assert idle.done().startswith(b"IDLE1 OK"), idle.lines
        typ, data = conn.fetch(str(before + 1), "(BODY.PEEK[])")
        assert typ == "OK", data
        copy = data[0][1]
        assert messages.body_of(copy) == messages.body_of(sent)
        assert messages.message_id(copy) == messages.message_id(sent)
        assert f"[{CLIENT_ADDRESS}]".encode() in messages.headers_of(copy)
        assert conn.logout()[0] == "BYE"
    finally:
        clients.close_imap(conn)


def test_idle_sees_a_message_dropped_into_the_maildir(e2e: Stack) -> None:
    """Without Postfix in the way: a delivery agent's rename into new/."""
    conn = clients.imap(e2e.imap_port)
    try:
        assert conn.login(USER, e2e.password(USER))[0] == "OK"
        before = int(conn.select("INBOX")[1][0])
        idle = clients.Idle(conn, tag=b"I2")
        idle.start()
        data = messages.message("dropped in", b"straight into the maildir\r\n",
                                message_id=f"<{uuid.uuid4().hex}@e2e.test>")
        e2e.maildirs.add(USER, data)
        idle.wait_exists(before + 1, timeout=30)
        assert idle.done().startswith(b"I2 OK"), idle.lines
        typ, fetched = conn.fetch(str(before + 1), "(BODY.PEEK[])")
        assert typ == "OK" and fetched[0][1] == data
        conn.logout()
    finally:
        clients.close_imap(conn)


def test_idle_outlasts_the_pre_login_timeout(e2e: Stack) -> None:
    """``timeout`` (2 s on this server) bounds the time to log in, not a
    logged-in session: IDLE goes on past it and still gets EXISTS."""
    conn = clients.imap(e2e.imap_short_port)
    try:
        assert conn.login(USER, e2e.password(USER))[0] == "OK"
        before = int(conn.select("INBOX")[1][0])
        idle = clients.Idle(conn, tag=b"I3")
        idle.start()
        time.sleep(3)
        e2e.maildirs.add(USER, messages.message("after the deadline", b"late\r\n",
                                                message_id=f"<{uuid.uuid4().hex}@e2e.test>"))
        idle.wait_exists(before + 1, timeout=30)
        assert idle.done().startswith(b"I3 OK"), idle.lines
        conn.logout()
    finally:
        clients.close_imap(conn)


class Deflate:
    """Both directions of an IMAP connection after COMPRESS DEFLATE (RFC 4978)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = zlib.compressobj(wbits=-15)
        self.inp = zlib.decompressobj(wbits=-15)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.out.compress(data) + self.out.flush(zlib.Z_SYNC_FLUSH))

    def read_tagged(self, tag: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while not any(line.startswith(tag + b" ") for line in self.buffer.split(b"\r\n")[:-1]):
            if time.monotonic() > deadline:
                raise TimeoutError(self.buffer[-300:])
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(self.buffer[-300:])
            self.buffer += self.inp.decompress(chunk)
        data, self.buffer = self.buffer, b""
        return data


def test_compress_deflate_after_login_is_relayed(e2e: Stack) -> None:
    """After login mailgate relays bytes untouched, so Dovecot's COMPRESS
    (imap_zlib) works end to end."""
    data = messages.large(1024 * 1024, seed=9, subject="compressed", to=f"{USER}@e2e.test")
    e2e.maildirs.add(USER, data)
    with socket.create_connection(("127.0.0.1", e2e.imap_port), timeout=30) as sock:
        assert recv_until(sock, b"\r\n").startswith(b"* OK")
        sock.sendall(b'z1 LOGIN %s "%s"\r\n' % (USER.encode(), e2e.password(USER).encode()))
        login = recv_tagged(sock, b"z1")
        assert b"z1 OK" in login and b"COMPRESS=DEFLATE" in login, login
        sock.sendall(b"z2 COMPRESS DEFLATE\r\n")
        assert recv_tagged(sock, b"z2").startswith(b"z2 OK")
        stream = Deflate(sock)
        stream.send(b"z3 SELECT INBOX\r\n")
        assert b"z3 OK" in stream.read_tagged(b"z3")
        stream.send(b'z4 UID SEARCH HEADER Message-ID "%s"\r\n' % messages.message_id(data))
        uid = stream.read_tagged(b"z4").split(b"* SEARCH ")[1].split()[0]
        stream.send(b"z5 UID FETCH %s (BODY.PEEK[])\r\n" % uid)
        fetched = stream.read_tagged(b"z5")
        assert b"{%d}\r\n" % len(data) + data + b")\r\n" in fetched
        stream.send(b"z6 LOGOUT\r\n")
        assert b"z6 OK" in stream.read_tagged(b"z6")
