"""POP3 through the real mailgate: auth_http outcomes, backend login, relay."""

from __future__ import annotations

import poplib
import re
import socket
import time

import pytest

from tests.fakes.auth_server import FakeAuthServer, by_user, close, fail, ok, raw, sequence, wait
from tests.fakes.pop3_backend import Pop3Backend
from tests.integration.harness import free_port, recv_all, recv_until


@pytest.fixture
def auth() -> FakeAuthServer:
    with FakeAuthServer(fail()) as server:
        yield server


def route(auth: FakeAuthServer, backend: Pop3Backend, **users) -> None:
    """alice -> backend; other users as given; everyone else fails."""
    answers = {"alice": ok("127.0.0.1", backend.port)}
    answers.update(users)
    auth.rules = by_user(answers, fail())


def client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert recv_until(sock, b"\r\n") == b"+OK POP3 ready\r\n"
    return sock


def talk(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line)
    return recv_until(sock, b"\r\n")


def test_login_fetch_and_logs(make_mailgate, backend, auth):
    route(auth, backend)
    mg = make_mailgate(auth.port)
    pop = poplib.POP3("127.0.0.1", mg.port, timeout=10)
    assert pop.user("alice") == b"+OK"
    assert pop.pass_("wonderland") == b"+OK logged in"  # the backend's own reply
    assert pop.stat() == (1, len(backend.messages[0]))
    assert b"Hello from the backend." in b"\r\n".join(pop.retr(1)[1])
    pop.quit()
    assert backend.lines[:2] == [b"USER alice\r\n", b"PASS wonderland\r\n"]
    request = auth.requests[-1]
    # nginx's headers in nginx's order (SPEC 8.2), nothing else.
    assert request.names == [
        "Host", "Auth-Method", "Auth-User", "Auth-Pass", "Auth-Protocol", "Auth-Login-Attempt", "Client-IP",
    ]
    assert request.header("Auth-Method") == "plain" and request.header("Client-IP") == "127.0.0.1"
    mg.wait_log(r"session summary: protocol=pop3 .*login=\"alice\" .*outcome=proxied")
    log = mg.log()
    assert f'client logged in, client: 127.0.0.1, server: 127.0.0.1:{mg.port}, login: "alice", upstream: 127.0.0.1:{backend.port}' in log
    assert "proxied session done, client: 127.0.0.1" in log
    assert "wonderland" not in log


def test_auth_failure_without_wait_closes(make_mailgate, backend, auth):
    route(auth, backend, bob=fail("Nope, not you"))
    mg = make_mailgate(auth.port)
    sock = client(mg.port)
    talk(sock, b"USER bob\r\n")
    sock.sendall(b"PASS secret\r\n")
    assert recv_all(sock) == b"-ERR Nope, not you\r\n"
    mg.wait_log(r'client login failed: "Nope, not you" while in http auth state, client: 127.0.0.1, server: .*, login: "bob"')
    assert "secret" not in mg.log()


def test_auth_wait_then_retry_in_the_same_session(make_mailgate, backend, auth):
    auth.rules = sequence(fail("Try again", wait=1), ok("127.0.0.1", backend.port))
    mg = make_mailgate(auth.port)
    sock = client(mg.port)
    talk(sock, b"USER alice\r\n")
    started = time.monotonic()
    assert talk(sock, b"PASS wrong\r\n") == b"-ERR Try again\r\n"
    assert time.monotonic() - started >= 0.9  # Auth-Wait delays the error
    # Back in the initial state: PASS alone is refused, USER/PASS works.
    assert talk(sock, b"PASS again\r\n") == b"-ERR invalid command\r\n"
    talk(sock, b"USER alice\r\n")
    assert talk(sock, b"PASS wonderland\r\n") == b"+OK logged in\r\n"
    attempts = [r.header("Auth-Login-Attempt") for r in auth.requests]
    assert attempts == ["1", "2"]
    sock.close()


def test_auth_status_wait_asks_again_with_the_same_attempt(make_mailgate, backend, auth):
    auth.rules = sequence(wait(1), ok("127.0.0.1", backend.port))
    mg = make_mailgate(auth.port)
    sock = client(mg.port)
    talk(sock, b"USER alice\r\n")
    assert talk(sock, b"PASS wonderland\r\n") == b"+OK logged in\r\n"
    assert [r.header("Auth-Login-Attempt") for r in auth.requests] == ["1", "1"]
    assert auth.requests[1].received_at - auth.requests[0].received_at >= 0.9
    sock.close()


@pytest.mark.parametrize(
    ("answer", "log"),
    [
        (ok("127.0.0.1", 110, status=None).but(headers=(("Auth-Status", "OK"),)), "did not send server or port"),
        (ok("mail.example.com", 110), 'sent invalid server address:"mail.example.com"'),
        (ok("127.0.0.1", "99999"), 'sent invalid server port:"99999"'),
        (raw(b"HTTP/1.0 200 OK\r\nAuth_Status: OK\r\n\r\n"), "sent invalid header in response"),
        (close(), "auth http server"),
    ],
    ids=["no-server", "hostname", "bad-port", "bad-header", "closed"],
)
def test_auth_server_errors_are_internal_errors(make_mailgate, auth, answer, log):
    auth.rules = answer
    mg = make_mailgate(auth.port)
    sock = client(mg.port)
    talk(sock, b"USER alice\r\n")
    sock.sendall(b"PASS wonderland\r\n")
    assert recv_all(sock) == b"-ERR internal server error\r\n"
    if log != "auth http server":
        mg.wait_log(rf"\[error\] .*auth http server 127.0.0.1:{auth.port} {log} while in http auth state")
    mg.wait_log(r"outcome=auth-error")


def test_auth_server_down(make_mailgate):
    dead = free_port()
    mg = make_mailgate(dead)
    sock = client(mg.port)
    talk(sock, b"USER alice\r\n")
    sock.sendall(b"PASS wonderland\r\n")
    assert recv_all(sock) == b"-ERR internal server error\r\n"
    mg.wait_log(rf"\[error\] .*connect\(\) to 127.0.0.1:{dead} failed \(111: Connection refused\) while in http auth state")


def test_slow_auth_server_times_out(make_mailgate, backend, auth):
    auth.rules = ok("127.0.0.1", backend.port).but(delay=5)
    mg = make_mailgate(auth.port, auth_timeout="1s")
    sock = client(mg.port)
    talk(sock, b"USER alice\r\n")
    started = time.monotonic()
    sock.sendall(b"PASS wonderland\r\n")
    assert recv_all(sock) == b"-ERR internal server error\r\n"
    assert time.monotonic() - started < 4.5  # bounded by auth_http_timeout, not the slow answer
    mg.wait_log(rf"auth http server 127.0.0.1:{auth.port} timed out \(110: Connection timed out\) while in http auth state")


def test_auth_user_and_pass_override_the_backend_login(make_mailgate, backend, auth):
    backend.users["real-alice"] = "backend-secret"
    auth.rules = ok("127.0.0.1", backend.port, user="real-alice", password="backend-secret")
    mg = make_mailgate(auth.port)
    pop = poplib.POP3("127.0.0.1", mg.port, timeout=10)
    pop.user("alice")
    assert pop.pass_("client-password") == b"+OK logged in"
    pop.quit()
    assert backend.lines[:2] == [b"USER real-alice\r\n", b"PASS backend-secret\r\n"]
    mg.wait_log('login: "real-alice"')
    assert "backend-secret" not in mg.log() and "client-password" not in mg.log()


def test_backend_refusing_the_login(make_mailgate, backend, auth):
    route(auth, backend)
    backend.users["alice"] = "something-else"
    mg = make_mailgate(auth.port)
    sock = client(mg.port)
    talk(sock, b"USER alice\r\n")
    sock.sendall(b"PASS wonderland\r\n")
    assert recv_all(sock) == b"-ERR internal server error\r\n"
    mg.wait_log(r'\[error\] .*upstream sent invalid response: "-ERR \[AUTH\] bad password" while reading response from upstream'
                rf', client: 127.0.0.1, server: 127.0.0.1:{mg.port}, login: "alice", upstream: 127.0.0.1:{backend.port}')


def test_backend_refusal_relayed_with_proxy_pass_error_message(make_mailgate, backend, auth):
    route(auth, backend)
    backend.users["alice"] = "something-else"
    mg = make_mailgate(auth.port, server="        proxy_pass_error_message on;")
    sock = client(mg.port)
    talk(sock, b"USER alice\r\n")
    sock.sendall(b"PASS wonderland\r\n")
    assert recv_all(sock) == b"-ERR [AUTH] bad password\r\n"
    mg.wait_log(r'\[info\] .*upstream sent invalid response: "-ERR \[AUTH\] bad password"')


def test_backend_down(make_mailgate, auth):
    dead = free_port()
    auth.rules = ok("127.0.0.1", dead)
    mg = make_mailgate(auth.port)
    sock = client(mg.port)
    talk(sock, b"USER alice\r\n")
    sock.sendall(b"PASS wonderland\r\n")
    assert recv_all(sock) == b"-ERR internal server error\r\n"
    mg.wait_log(rf"connect\(\) to 127.0.0.1:{dead} failed \(111: Connection refused\) while connecting to upstream")
    mg.wait_log(r"outcome=backend-error")


def test_backend_that_never_answers_hits_the_timeout(make_mailgate, auth):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        auth.rules = ok("127.0.0.1", silent.getsockname()[1])
        mg = make_mailgate(auth.port, timeout="1s")
        sock = client(mg.port)
        talk(sock, b"USER alice\r\n")
        sock.sendall(b"PASS wonderland\r\n")
        assert recv_all(sock) == b"-ERR internal server error\r\n"
        mg.wait_log(r"\[info\] .*upstream timed out \(110: Connection timed out\) while reading response from upstream")
    finally:
        silent.close()


def test_pre_auth_timeout_closes_silently(make_mailgate, auth):
    mg = make_mailgate(auth.port, timeout="1s")
    sock = client(mg.port)
    assert talk(sock, b"NOOP\r\n") == b"+OK\r\n"
    assert recv_all(sock) == b""  # closed without a word (SPEC 4.6)
    mg.wait_log(r"client timed out \(110: Connection timed out\) while in auth state, client: 127.0.0.1")


def test_max_errors_closes_after_the_fifth_invalid_command(make_mailgate, auth):
    mg = make_mailgate(auth.port)
    sock = client(mg.port)
    sock.sendall(b"STAT\r\n" * 5)
    assert recv_all(sock) == b"-ERR invalid command\r\n" * 5
    mg.wait_log("client sent too many invalid commands while in auth state")


def test_commands_pipelined_after_pass_reach_the_backend(make_mailgate, backend, auth):
    route(auth, backend)
    mg = make_mailgate(auth.port)
    sock = client(mg.port)
    sock.sendall(b"USER alice\r\nPASS wonderland\r\nSTAT\r\nQUIT\r\n")
    replies = recv_all(sock)
    assert replies == b"+OK\r\n+OK logged in\r\n+OK 1 %d\r\n+OK bye\r\n" % len(backend.messages[0])
    assert backend.lines == [b"USER alice\r\n", b"PASS wonderland\r\n", b"STAT\r\n", b"QUIT\r\n"]


def test_half_close_keeps_the_reply_in_flight(make_mailgate, backend, auth):
    """A client that sends RETR then shuts its write side still gets the
    message (nginx would cut it: SPEC 9.7; mailgate propagates half-close)."""
    route(auth, backend)
    backend.messages = [b"Subject: big\r\n\r\n" + b"x" * 200_000 + b"\r\n"]
    mg = make_mailgate(auth.port)
    sock = client(mg.port)
    talk(sock, b"USER alice\r\n")
    assert talk(sock, b"PASS wonderland\r\n") == b"+OK logged in\r\n"
    sock.sendall(b"RETR 1\r\n")
    sock.shutdown(socket.SHUT_WR)
    data = recv_all(sock)
    assert data.startswith(b"+OK\r\nSubject: big") and data.endswith(b"\r\n.\r\n")
    assert len(data) > 200_000


def test_proxy_timeout_counts_both_directions(make_mailgate, backend, auth):
    route(auth, backend)
    mg = make_mailgate(auth.port, server="        proxy_timeout 1s;")
    sock = client(mg.port)
    talk(sock, b"USER alice\r\n")
    talk(sock, b"PASS wonderland\r\n")
    for _ in range(3):  # activity keeps it alive past proxy_timeout
        time.sleep(0.5)
        assert talk(sock, b"NOOP\r\n") == b"+OK\r\n"
    assert recv_all(sock, timeout=5) == b""  # then idle: cut
    mg.wait_log(r"client timed out \(110: Connection timed out\) while proxying")
    mg.wait_log("outcome=proxy-timeout")


def test_auth_sasl_plain_reaches_the_backend_as_user_pass(make_mailgate, backend, auth):
    import base64

    route(auth, backend)
    mg = make_mailgate(auth.port)
    sock = client(mg.port)
    token = base64.b64encode(b"\0alice\0wonderland")
    assert talk(sock, b"AUTH PLAIN " + token + b"\r\n") == b"+OK logged in\r\n"
    assert backend.lines[:2] == [b"USER alice\r\n", b"PASS wonderland\r\n"]
    sock.close()


def test_debug_log_follows_the_session_without_the_password(make_mailgate, backend, auth):
    route(auth, backend)
    mg = make_mailgate(auth.port, level="debug")
    pop = poplib.POP3("127.0.0.1", mg.port, timeout=10)
    pop.user("alice")
    pop.pass_("wonderland")
    pop.quit()
    mg.wait_log("outcome=proxied")
    log = mg.log()
    for line in (
        r"\[debug\] .*worker serving 1 listeners",
        r"\[debug\] .*\*\d+ client sent 12 bytes while in auth state",
        r"\[debug\] .*auth method plain, attempt 1: ok after [\d.]+s, upstream 127\.0\.0\.1:\d+ while in http auth state",
        r"\[debug\] .*\d+ bytes to upstream while sending password to upstream",
        r"\[debug\] .*relay starts: 15 bytes to the client, 0 pipelined bytes to the backend",
    ):
        assert re.search(line, log), line
    assert "wonderland" not in log
