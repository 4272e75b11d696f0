"""AuthHttpClient against the fake auth server, over real loopback sockets."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailgate import auth
from mailgate.auth import AuthRequest
from mailgate.auth_http import AuthHttpClient
from mailgate.config.model import AuthHttpUrl
from mailgate.protocol.base import Credentials
from tests.fakes.auth_server import Answer, FakeAuthServer, by_user, close, fail, ok, raw, sequence, wait

ROOT = Path(__file__).resolve().parents[2]
REQUEST = AuthRequest(Credentials("plain", "john doe ", "my secret"), "pop3", 1, "127.0.0.1")


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def client() -> Iterator[AuthHttpClient]:
    with AuthHttpClient(pool_size=8) as instance:
        yield instance


@pytest.fixture
def server() -> Iterator[FakeAuthServer]:
    with FakeAuthServer(ok("127.0.0.1", 11110)) as instance:
        yield instance


def ask(client: AuthHttpClient, server: FakeAuthServer, timeout: float = 5.0,
        request: AuthRequest = REQUEST, extra: tuple[tuple[str, str], ...] = ()) -> auth.AuthResult:
    return client.authenticate(server.model_url(), request, extra, timeout)


def timed(call):  # noqa: ANN001, ANN201
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


# --- answers ----------------------------------------------------------------------


def test_ok_and_the_request_on_the_wire(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = ok("127.0.0.2", 1110, user="john", password="backend")
    result = ask(client, server, extra=(("X-Auth-Key", "secret string"),))
    assert (result.outcome, result.server, result.port, result.login, result.password) == (
        auth.OK, "127.0.0.2", 1110, "john", "backend")
    (recorded,) = server.requests
    assert recorded.raw == (
        b"GET /auth HTTP/1.1\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: john%20doe%20\r\n"
        b"Auth-Pass: my%20secret\r\nAuth-Protocol: pop3\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n"
        b"X-Auth-Key: secret string\r\n\r\n"
    )
    assert (recorded.login, recorded.password) == ("john doe ", "my secret")


def test_uri_and_host_header_exactly_as_configured(client: AuthHttpClient, server: FakeAuthServer) -> None:
    url = AuthHttpUrl("localhost:x/a%7e b", "inet", "127.0.0.1", server.port, "/a%7e?x=1&y=%2F", "localhost")
    assert client.authenticate(url, REQUEST, (), 5).outcome == auth.OK
    assert server.requests[0].path == "/a%7e?x=1&y=%2F"
    assert server.requests[0].header("Host") == "localhost"


def test_duplicate_extra_headers_are_all_sent(client: AuthHttpClient, server: FakeAuthServer) -> None:
    ask(client, server, extra=(("X-A", "1"), ("X-A", "2"), ("Host", "other")))
    assert server.requests[0].headers("X-A") == ["1", "2"]
    assert server.requests[0].headers("Host") == ["127.0.0.1", "other"]


def test_fail(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = fail("Invalid login or password", wait=3)
    result = ask(client, server)
    assert (result.outcome, result.message, result.wait) == (auth.FAIL, "Invalid login or password", 3)


def test_smtp_fail_with_code(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = fail("Temporary problem", error_code="451 4.3.0")
    smtp = AuthRequest(Credentials("plain", "a", "b"), "smtp", 2, "127.0.0.1", client_host="[UNAVAILABLE]")
    result = ask(client, server, request=smtp)
    assert (result.outcome, result.error_code) == (auth.FAIL, "451 4.3.0")
    assert server.requests[0].header("Client-Host") == "[UNAVAILABLE]"
    assert server.requests[0].header("Auth-Login-Attempt") == "2"


def test_wait_then_ok(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = sequence(wait(1), ok("127.0.0.1", 110))
    first, second = ask(client, server), ask(client, server)
    assert (first.outcome, first.wait) == (auth.WAIT, 1)
    assert second.outcome == auth.OK


def test_rules_by_user(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = by_user({"john doe ": ok("10.0.0.1", 110)}, default=fail("who?"))
    assert ask(client, server).server == "10.0.0.1"
    other = AuthRequest(Credentials("plain", "eve", "x"), "pop3", 1, "127.0.0.1")
    assert ask(client, server, request=other).message == "who?"


def test_status_code_is_ignored(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = ok(status="OK").but(status="500 Internal Server Error")
    assert ask(client, server).outcome == auth.OK


# --- connections ---------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(client: AuthHttpClient, server: FakeAuthServer) -> None:
    for _ in range(3):
        assert ask(client, server).outcome == auth.OK
    assert server.connections == 1
    assert [(r.connection, r.index) for r in server.requests] == [(1, 1), (1, 2), (1, 3)]


def test_small_body_with_length_is_drained_and_connection_kept(client: AuthHttpClient,
                                                               server: FakeAuthServer) -> None:
    server.rules = ok(body=b"<html>ok</html>", content_length=True)
    assert ask(client, server).outcome == auth.OK
    assert ask(client, server).outcome == auth.OK
    assert server.connections == 1


def test_http10_keep_alive_is_honoured(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = ok(version="HTTP/1.0", keep_alive=True)
    ask(client, server)
    ask(client, server)
    assert server.connections == 1


def test_http10_close(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = ok(version="HTTP/1.0")  # no Content-Length, closes
    assert ask(client, server).outcome == auth.OK
    assert ask(client, server).outcome == auth.OK
    assert server.connections == 2


@pytest.mark.parametrize("answer", [
    ok(version="HTTP/1.0", body=b"x" * 100, linger=10),  # no Content-Length, the server keeps the socket open
    ok(body=b"partial", keep_alive=False, content_length=False, linger=10),
    raw(b"HTTP/1.1 200 OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 110\r\nContent-Length: 1000000\r\n\r\nab",
        linger=10),
    raw(b"HTTP/1.1 200 OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 110\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        linger=10),
])
def test_never_waits_for_a_body(client: AuthHttpClient, server: FakeAuthServer, answer: Answer) -> None:
    server.rules = answer
    result, elapsed = timed(lambda: ask(client, server, timeout=5))
    assert result.outcome == auth.OK
    assert elapsed < 1.0
    assert ask(client, server, timeout=5).outcome == auth.OK  # and the pool still works


def test_announced_body_that_never_comes_does_not_delay_much(client: AuthHttpClient,
                                                            server: FakeAuthServer) -> None:
    server.rules = raw(b"HTTP/1.1 200 OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 110\r\nContent-Length: 10\r\n\r\nab",
                       linger=10)
    result, elapsed = timed(lambda: ask(client, server, timeout=5))
    assert result.outcome == auth.OK
    assert elapsed < 1.5


def test_no_status_line(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = raw(b"Auth-Status: OK\r\nAuth-Server: 127.0.0.3\r\nAuth-Port: 995\r\n\r\n")
    result = ask(client, server)
    assert (result.outcome, result.server, result.port) == (auth.OK, "127.0.0.3", 995)


def test_status_line_http_client_would_refuse(client: AuthHttpClient, server: FakeAuthServer) -> None:
    for status in (b"HTTP/2.0 200 OK", b"HTTP/1.0", b"HTTP/1.1 20 OK", b"HTTP/1.1 100 Continue"):
        server.rules = raw(status + b"\nAuth-Server: 127.0.0.1\nAuth-Port: 110\n\n", linger=5)
        result, elapsed = timed(lambda: ask(client, server))
        assert result.outcome == auth.OK, status
        assert elapsed < 1.0


def test_invalid_header(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = raw(b"HTTP/1.0 200 OK\r\nAuth_Status: OK\r\n\r\n")
    result = ask(client, server)
    assert (result.outcome, result.log_message) == (
        auth.ERROR, f"auth http server {server.address} sent invalid header in response")


def test_invalid_header_is_seen_before_the_line_ends(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = raw(b"HTTP/1.0 200 OK\r\nAuth_", linger=10)
    result, elapsed = timed(lambda: ask(client, server))
    assert result.log_message.endswith("sent invalid header in response")
    assert elapsed < 1.0


def test_invalid_response(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = raw(b"HTTP/1.0 200 OK\rAuth-Status: OK\r\n\r\n")
    assert ask(client, server).log_message == f"auth http server {server.address} sent invalid response"


def test_garbage(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = raw(b"<html><body>Bad Gateway</body></html>\r\n")
    assert ask(client, server).log_message.endswith("sent invalid header in response")


def test_head_longer_than_1024_bytes(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = ok(headers=(("X-Filler", "a" * 1100), ("Auth-Server", "127.0.0.1"), ("Auth-Port", "110")))
    result, elapsed = timed(lambda: ask(client, server))
    assert (result.outcome, result.log_level) == (auth.ERROR, "debug")
    assert elapsed < 1.0
    server.rules = ok()
    assert ask(client, server).outcome == auth.OK


def test_closed_before_the_head_ends(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = raw(b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n")
    assert (ask(client, server).outcome, ask(client, server).log_level) == (auth.ERROR, "debug")
    server.rules = close()
    result = ask(client, server)
    assert (result.outcome, result.log_level) == (auth.ERROR, "debug")


def test_server_closing_a_kept_alive_connection_is_retried_once(client: AuthHttpClient,
                                                                server: FakeAuthServer) -> None:
    server.rules = lambda request: close() if request.index > 1 else ok()
    for _ in range(3):
        assert ask(client, server).outcome == auth.OK
    assert [(r.connection, r.index) for r in server.requests] == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1)]


def test_idle_connection_closed_by_the_server(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = ok(linger=0.0, keep_alive=True)
    ask(client, server)
    server.rules = ok()
    # Drop the server's side of the kept connection while it is idle.
    server.stop()
    with FakeAuthServer(ok(), port=server.port) as again:
        assert ask(client, again).outcome == auth.OK


# --- failures ---------------------------------------------------------------------------


def test_connection_refused(client: AuthHttpClient) -> None:
    port = unused_port()
    url = AuthHttpUrl(f"127.0.0.1:{port}/auth", "inet", "127.0.0.1", port, "/auth", "127.0.0.1")
    result = client.authenticate(url, REQUEST, (), 5)
    assert (result.outcome, result.log_message) == (
        auth.ERROR, f"connect() to 127.0.0.1:{port} failed (111: Connection refused)")


def test_slow_server_times_out_within_the_bound(client: AuthHttpClient, server: FakeAuthServer) -> None:
    server.rules = ok(delay=5)
    result, elapsed = timed(lambda: ask(client, server, timeout=0.5))
    assert (result.outcome, result.log_message) == (
        auth.ERROR, f"auth http server {server.address} timed out (110: Connection timed out)")
    assert 0.4 < elapsed < 1.0
    server.rules = ok()
    assert ask(client, server).outcome == auth.OK


def test_slow_drip_is_bounded_by_the_whole_exchange(client: AuthHttpClient) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def drip() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                for byte in b"HTTP/1.0 200 OK\r\nX-Slow: " + b"a" * 100:
                    try:
                        conn.sendall(bytes((byte,)))
                    except OSError:
                        return
                    time.sleep(0.1)

        with ThreadPoolExecutor(1) as pool:
            pool.submit(drip)
            url = AuthHttpUrl("x", "inet", "127.0.0.1", port, "/", "127.0.0.1")
            result, elapsed = timed(lambda: client.authenticate(url, REQUEST, (), 0.8))
    assert result.log_message == f"auth http server 127.0.0.1:{port} timed out (110: Connection timed out)"
    assert elapsed < 1.3


def test_passwords_never_in_log_messages(client: AuthHttpClient, server: FakeAuthServer) -> None:
    secret = AuthRequest(Credentials("plain", "u", "s3cr3t\r\nInjected: 1"), "pop3", 1, "127.0.0.1")
    server.rules = raw(b"HTTP/1.0 200 OK\r\nAuth-Pass: s3cr3t\r\nAuth_X: 1\r\n\r\n")
    result = ask(client, server, request=secret)
    assert "s3cr3t" not in result.log_message and "s3cr3t" not in repr(result)
    assert server.requests[0].header("Auth-Pass") == "s3cr3t%0D%0AInjected:%201"


# --- unix sockets ------------------------------------------------------------------------


def test_unix_socket_server(client: AuthHttpClient) -> None:
    with FakeAuthServer(ok("127.0.0.1", 143), unix=True) as server:
        for _ in range(2):
            result = ask(client, server)
            assert (result.outcome, result.port) == (auth.OK, 143)
        assert server.connections == 1
        assert server.requests[0].header("Host") == "localhost"
        assert server.auth_http == f"unix:{server.unix_path}:/auth"


def test_unix_socket_missing(client: AuthHttpClient, tmp_path: Path) -> None:
    path = str(tmp_path / "none.sock")
    url = AuthHttpUrl(f"unix:{path}", "unix", path, 0, "/", "localhost")
    result = client.authenticate(url, REQUEST, (), 5)
    assert result.log_message == f"connect() to unix:{path} failed (2: No such file or directory)"


def test_unix_socket_slow(client: AuthHttpClient) -> None:
    with FakeAuthServer(ok(delay=5), unix=True) as server:
        result, elapsed = timed(lambda: ask(client, server, timeout=0.3))
        assert result.log_message == f"auth http server unix:{server.unix_path} timed out (110: Connection timed out)"
        assert elapsed < 1.0


# --- load and gevent ------------------------------------------------------------------------


def test_200_concurrent_slow_requests(server: FakeAuthServer) -> None:
    server.rules = lambda request: ok(port=1000 + int(request.login), delay=0.5)

    def one(number: int) -> int:
        mine = AuthRequest(Credentials("plain", str(number), "pw"), "pop3", 1, "127.0.0.1")
        return ask(shared, server, timeout=10, request=mine).port

    with AuthHttpClient(pool_size=50) as shared, ThreadPoolExecutor(200) as pool:
        start = time.monotonic()
        results = list(pool.map(one, range(200)))
        elapsed = time.monotonic() - start
    assert results == [1000 + number for number in range(200)]
    assert elapsed < 5
    assert len(server.requests) == 200


GEVENT_SCRIPT = textwrap.dedent("""\
    from gevent import monkey
    monkey.patch_all()
    import time
    import gevent
    from mailgate.auth import AuthRequest
    from mailgate.auth_http import AuthHttpClient
    from mailgate.protocol.base import Credentials
    from tests.fakes.auth_server import FakeAuthServer, ok

    request = AuthRequest(Credentials("plain", "a", "b"), "pop3", 1, "127.0.0.1")
    client = AuthHttpClient(pool_size=4)
    with FakeAuthServer(ok(delay=3)) as server:
        url = server.model_url()
        start = time.monotonic()
        try:
            with gevent.Timeout(0.3):
                client.authenticate(url, request, (), 10)
            print("no timeout")
        except gevent.Timeout:
            print("timeout", round(time.monotonic() - start, 1))
        server.rules = ok()
        print(client.authenticate(url, request, (), 5).outcome)
        jobs = [gevent.spawn(client.authenticate, url, request, (), 5) for _ in range(50)]
        gevent.joinall(jobs, timeout=10)
        print(sorted({job.value.outcome for job in jobs}))
        # Each greenlet has its own exchange: different requests, different answers.
        server.rules = lambda r: ok(port=1000 + int(r.login[4:]), delay=0.05)
        def one(i):
            mine = AuthRequest(Credentials("plain", f"user{i}", "pw"), "pop3", 1, "127.0.0.1")
            return client.authenticate(url, mine, (), 5).port == 1000 + i
        jobs = [gevent.spawn(one, i) for i in range(50)]
        gevent.joinall(jobs, timeout=10)
        print(all(job.value for job in jobs))
""")


def test_gevent_timeout_propagates_and_pool_stays_usable() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", GEVENT_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["timeout 0.3", "ok", "['ok']", "True"], done.stdout + done.stderr


def test_every_dead_kept_connection_is_replaced_before_use(server: FakeAuthServer) -> None:
    # Several kept connections, then the auth server restarts: each one is
    # found closed when taken from the pool (not sent on, not an error).
    server.rules = ok(delay=0.2)
    with AuthHttpClient(pool_size=8) as shared, ThreadPoolExecutor(4) as pool:
        assert {r.outcome for r in pool.map(lambda _: ask(shared, server), range(4))} == {auth.OK}
        assert server.connections == 4
        server.stop()
        with FakeAuthServer(ok(), port=server.port) as again:
            for _ in range(4):
                assert ask(shared, again).outcome == auth.OK
            assert again.connections == 1  # the four dead ones were dropped, one new one kept
            assert [r.index for r in again.requests] == [1, 2, 3, 4]


# --- the worker's bound: auth_http_timeout, with no gevent.Timeout around the call ---------

WORKER_TIMEOUT_SCRIPT = textwrap.dedent("""\
    from gevent import monkey
    monkey.patch_all()
    import socket, threading, time
    from types import SimpleNamespace
    import gevent
    from mailgate.auth import AuthRequest
    from mailgate.config.model import AuthHttpUrl
    from mailgate.protocol.base import Credentials
    from mailgate.worker.authenticators import Authenticators
    from tests.fakes.auth_server import FakeAuthServer, ok, raw

    request = AuthRequest(Credentials("plain", "a", "b"), "pop3", 1, "127.0.0.1")

    def ask(url, timeout=0.5):
        server = SimpleNamespace(auth_http=url, auth_http_header=(), auth_http_timeout=timeout, auth_file=None)
        auths = Authenticators(SimpleNamespace(main=SimpleNamespace(worker_connections=4), servers=[server]))
        start = time.monotonic()
        result = auths.authenticate(server, request)
        return result, time.monotonic() - start, url.address

    def report(name, result, elapsed, address):
        print(name, result.outcome, result.log_level, repr(result.log_message.replace(address, "ADDR")),
              0.45 < elapsed < 0.8)

    # An answer that comes too late; an answer dripping a byte at a time.
    with FakeAuthServer(ok(delay=3)) as server:
        report("slow", *ask(server.model_url()))
        server.rules = raw(b"HTTP/1.0 200 OK\\r\\nX-Slow: " + b"a" * 500, linger=3)
        report("unfinished", *ask(server.model_url()))
    # A server whose accept queue takes the connection and that never reads.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        url = AuthHttpUrl("x", "inet", "127.0.0.1", port, "/", "127.0.0.1")
        report("hung", *ask(url))
    # The same over a UNIX socket.
    with FakeAuthServer(ok(delay=3), unix=True) as server:
        report("unix", *ask(server.model_url()))
    # Other greenlets keep running meanwhile.
    with FakeAuthServer(ok(delay=3)) as server:
        ticks = []
        ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.05)) for _ in range(8)])
        ask(server.model_url())
        ticker.join()
        print("others ran", len(ticks) == 8)
""")


def test_worker_auth_is_bounded_by_auth_http_timeout() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", WORKER_TIMEOUT_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    timed_out = "error 'auth http server ADDR timed out (110: Connection timed out)' True"
    assert done.stdout.splitlines() == [
        f"slow {auth.ERROR} {timed_out}",
        f"unfinished {auth.ERROR} {timed_out}",
        f"hung {auth.ERROR} {timed_out}",
        f"unix {auth.ERROR} {timed_out}",
        "others ran True",
    ], done.stdout + done.stderr
