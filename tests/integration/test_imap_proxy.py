"""IMAP through the real mailgate: logins of every kind, auth outcomes,
pipelining, IDLE across a reload, and 1,000 idle sessions in one worker."""

from __future__ import annotations

import base64
import imaplib
import resource
import signal
import socket
import time

import pytest

from tests.fakes.auth_server import FakeAuthServer, fail, ok, sequence, wait
from tests.integration.harness import alive, recv_all, recv_tagged, recv_until, wait_for

GREETING = b"* OK IMAP4 ready\r\n"
LOGGED_IN = b"* CAPABILITY IMAP4rev1 IDLE LITERAL+\r\n"


@pytest.fixture
def auth(imap_backend) -> FakeAuthServer:
    with FakeAuthServer(ok("127.0.0.1", imap_backend.port)) as server:
        yield server


@pytest.fixture
def imap(make_mailgate, auth):
    """A mailgate serving IMAP with the auth server above."""

    def make(**fields):
        return make_mailgate(auth.port, protocol="imap", **fields)

    return make


def client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert recv_until(sock, b"\r\n") == GREETING
    return sock


def command(sock: socket.socket, line: bytes, tag: bytes) -> bytes:
    sock.sendall(line)
    return recv_tagged(sock, tag)


def test_imaplib_login_select_fetch(imap, imap_backend, auth):
    mg = imap()
    conn = imaplib.IMAP4("127.0.0.1", mg.port, timeout=10)
    assert conn.capabilities == ("IMAP4", "IMAP4REV1", "UIDPLUS", "AUTH=PLAIN")
    typ, data = conn.login("alice", "wonderland")
    assert typ == "OK" and data == [b"Logged in"]
    assert conn.select("INBOX")[0] == "OK"
    typ, data = conn.fetch("1", "(BODY[])")
    assert typ == "OK" and data[0][1] == imap_backend.messages[0]
    conn.logout()
    tag = imap_backend.lines[0].split(b" ")[0]
    # mailgate logs in with synchronising literals under the client's tag (SPEC 9.4).
    assert imap_backend.lines[:3] == [tag + b" LOGIN {5}\r\n", b"alice {10}\r\n", b"wonderland\r\n"]
    assert auth.requests[0].header("Auth-Protocol") == "imap"
    mg.wait_log(r'client logged in, client: 127.0.0.1, server: .*, login: "alice", upstream: 127\.0\.0\.1:')
    mg.wait_log(r"session summary: protocol=imap .*outcome=proxied")
    assert "wonderland" not in mg.log()


@pytest.mark.parametrize(
    "login",
    [
        b"a1 LOGIN alice wonderland\r\n",
        b'a1 LOGIN "alice" "wonderland"\r\n',
        b"a1 LOGIN {5+}\r\nalice {10+}\r\nwonderland\r\n",  # new Outlook: LITERAL+
    ],
    ids=["atoms", "quoted", "non-synchronising-literals"],
)
def test_login_forms(imap, imap_backend, login):
    mg = imap()
    sock = client(mg.port)
    reply = command(sock, login, b"a1")
    assert reply == LOGGED_IN + b"a1 OK Logged in\r\n"
    assert imap_backend.logins == [("alice", "wonderland")]


def test_synchronising_literals_get_continuations(imap, imap_backend):
    mg = imap()
    sock = client(mg.port)
    assert command(sock, b"a1 LOGIN {5}\r\n", b"+") == b"+ OK\r\n"
    assert command(sock, b"alice {10}\r\n", b"+") == b"+ OK\r\n"
    assert command(sock, b"wonderland\r\n", b"a1") == LOGGED_IN + b"a1 OK Logged in\r\n"


def test_id_before_login_with_literals(imap, imap_backend):
    mg = imap()
    sock = client(mg.port)
    reply = command(sock, b'a0 ID ("name" {7+}\r\nOutlook "version" NIL)\r\n', b"a0")
    assert reply == b"* ID NIL\r\na0 OK completed\r\n"
    assert command(sock, b"a1 LOGIN alice wonderland\r\n", b"a1").endswith(b"a1 OK Logged in\r\n")


def test_authenticate_plain_with_initial_response(imap, imap_backend):
    mg = imap()
    sock = client(mg.port)
    token = base64.b64encode(b"\0alice\0wonderland")
    reply = command(sock, b"m1 AUTHENTICATE PLAIN " + token + b"\r\n", b"m1")
    assert reply == LOGGED_IN + b"m1 OK Logged in\r\n"
    assert imap_backend.lines[0] == b"m1 LOGIN {5}\r\n"


def test_auth_failure_closes(imap, auth):
    auth.rules = fail("Invalid login or password")
    mg = imap()
    sock = client(mg.port)
    sock.sendall(b"a1 LOGIN alice wrong\r\n")
    assert recv_all(sock) == b"a1 NO Invalid login or password\r\n"
    mg.wait_log(r'client login failed: "Invalid login or password" while in http auth state')


def test_auth_failure_with_wait_allows_another_try(imap, auth, imap_backend):
    auth.rules = sequence(fail("Try again", wait=1), ok("127.0.0.1", imap_backend.port))
    mg = imap()
    sock = client(mg.port)
    assert command(sock, b"a1 LOGIN alice wrong\r\n", b"a1") == b"a1 NO Try again\r\n"
    assert command(sock, b"a2 LOGIN alice wonderland\r\n", b"a2").endswith(b"a2 OK Logged in\r\n")
    assert [r.header("Auth-Login-Attempt") for r in auth.requests] == ["1", "2"]


def test_auth_status_wait_asks_again(imap, auth, imap_backend):
    auth.rules = sequence(wait(1), ok("127.0.0.1", imap_backend.port))
    mg = imap()
    sock = client(mg.port)
    assert command(sock, b"a1 LOGIN alice wonderland\r\n", b"a1").endswith(b"a1 OK Logged in\r\n")
    assert len(auth.requests) == 2


def test_auth_server_error_is_an_untagged_bad(imap, auth):
    auth.rules = ok("not-an-address", 143)
    mg = imap()
    sock = client(mg.port)
    sock.sendall(b"a1 LOGIN alice wonderland\r\n")
    assert recv_all(sock) == b"* BAD internal server error\r\n"
    mg.wait_log(r'sent invalid server address:"not-an-address"')


def test_backend_refusing_the_login(imap, imap_backend):
    imap_backend.users["alice"] = "other"
    mg = imap()
    sock = client(mg.port)
    sock.sendall(b"a1 LOGIN alice wonderland\r\n")
    assert recv_all(sock) == b"* BAD internal server error\r\n"
    mg.wait_log(r'\[error\] .*upstream sent invalid response: "NO \[AUTHENTICATIONFAILED\] bad" while reading response')


def test_backend_refusal_relayed_with_proxy_pass_error_message(imap, imap_backend):
    imap_backend.users["alice"] = "other"
    mg = imap(server="        proxy_pass_error_message on;")
    sock = client(mg.port)
    sock.sendall(b"a1 LOGIN alice wonderland\r\n")
    assert recv_all(sock) == b"a1 NO [AUTHENTICATIONFAILED] bad\r\n"


def test_backend_preauth_greeting_is_refused(imap, imap_backend):
    imap_backend.greeting = b"* PREAUTH already in\r\n"
    mg = imap()
    sock = client(mg.port)
    sock.sendall(b"a1 LOGIN alice wonderland\r\n")
    assert recv_all(sock) == b"* BAD internal server error\r\n"
    mg.wait_log(r'upstream sent invalid response: "\* PREAUTH already in"')


def test_commands_pipelined_after_login_follow_it_in_order(imap, imap_backend):
    mg = imap()
    sock = client(mg.port)
    sock.sendall(b"a1 LOGIN alice wonderland\r\na2 SELECT INBOX\r\na3 NOOP\r\na4 LOGOUT\r\n")
    replies = recv_all(sock)
    assert replies.startswith(LOGGED_IN + b"a1 OK Logged in\r\n")
    assert replies.index(b"a2 OK") < replies.index(b"a3 OK") < replies.index(b"a4 OK")
    tags = [line.split(b" ")[0] for line in imap_backend.lines[3:]]
    assert tags == [b"a2", b"a3", b"a4"]


def test_idle_receives_exists_and_survives_a_reload(imap, imap_backend):
    mg = imap(server="        proxy_timeout 3s;")
    old_workers = mg.workers()
    sock = client(mg.port)
    assert command(sock, b"a1 LOGIN alice wonderland\r\n", b"a1").endswith(b"a1 OK Logged in\r\n")
    assert command(sock, b"a2 SELECT INBOX\r\n", b"a2").endswith(b"a2 OK [READ-WRITE] SELECT completed\r\n")
    assert command(sock, b"a3 IDLE\r\n", b"+") == b"+ idling\r\n"
    imap_backend.wait_idling(1)
    mg.reload()
    # Backend-to-client traffic alone keeps the session alive past proxy_timeout.
    for count in range(2, 6):
        time.sleep(1)
        assert imap_backend.notify_all(b"* %d EXISTS\r\n" % count) == 1
        assert recv_until(sock, b"\r\n") == b"* %d EXISTS\r\n" % count
    assert command(sock, b"DONE\r\n", b"a3") == b"a3 OK IDLE terminated\r\n"
    assert all(alive(pid) for pid in old_workers)  # the old worker still serves it
    sock.sendall(b"a4 LOGOUT\r\n")
    assert b"a4 OK" in recv_all(sock)
    wait_for(lambda: not any(alive(pid) for pid in old_workers), what="the old worker to leave")


def test_1000_idle_sessions_in_one_worker(imap, imap_backend):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 8192:
        pytest.skip("needs 8192 open files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 8192), hard))
    mg = imap(main="worker_rlimit_nofile 8192;")
    assert len(mg.workers()) == 1
    sessions = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(("127.0.0.1", mg.port), timeout=30)
            sock.sendall(b"a1 LOGIN alice wonderland\r\n")
            sessions.append(sock)
        for sock in sessions:
            assert recv_until(sock, b"a1 OK Logged in\r\n", timeout=30).endswith(b"a1 OK Logged in\r\n")
        imap_backend.wait_for(lambda: imap_backend.sessions_open >= 1000, 30, "1000 backend sessions")
        for sock in sessions[::50]:  # all alive: a sample answers
            assert command(sock, b"n1 NOOP\r\n", b"n1") == b"n1 OK NOOP completed\r\n"
    finally:
        for sock in sessions:
            sock.close()
    wait_for(lambda: imap_backend.sessions_open == 0, 30, "the sessions to close")
    assert mg.log().count("client logged in") == 1000


def test_fast_stop_with_idle_sessions(imap, imap_backend):
    mg = imap()
    sock = client(mg.port)
    command(sock, b"a1 LOGIN alice wonderland\r\n", b"a1")
    mg.send_signal(signal.SIGTERM)
    assert recv_all(sock) == b""
    assert mg.proc.wait(timeout=20) == 0
