"""The relay through the real mailgate: bulk both ways at once with the
client reading late (back-pressure on every hop), in the clear and over TLS;
a client that vanishes mid-transfer; and worker_connections counting logged-in
sessions, which run on the worker's event loop after their greenlet is gone."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from tests.fakes.auth_server import FakeAuthServer, ok
from tests.fakes.echo_backend import EchoBackend
from tests.integration.harness import recv_until, wait_for
from tests.integration.test_tls import ca, certs, client_context, tls_mailgate  # noqa: F401 - fixtures

SIZE = 12 * 1024 * 1024


@pytest.fixture
def echo():
    with EchoBackend() as server:
        yield server


@pytest.fixture
def echo_auth(echo):
    with FakeAuthServer(ok("127.0.0.1", echo.port)) as server:
        yield server


def login(sock: socket.socket) -> None:
    assert recv_until(sock, b"\r\n").startswith(b"+OK")
    sock.sendall(b"USER alice\r\nPASS wonderland\r\n")
    assert recv_until(sock, b"+OK logged in\r\n").endswith(b"+OK logged in\r\n")


def pipe_ids(pid: int) -> set[str]:
    """The pipes the process holds open, by identity (``pipe:[inode]``): the
    relay's splice pipes among them."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed since the listing: the relay opens and closes pipes as it goes
        if link.startswith("pipe:"):
            found.add(link)
    return found


def pipes(pid: int) -> int:
    """How many pipes the process holds open (each has two ends)."""
    return len(pipe_ids(pid))


def echo_through(sock: socket.socket, payload: bytes, read_delay: float) -> bytes:
    """Send ``payload`` from a thread while this thread reads the echo,
    starting only after ``read_delay`` so every buffer on the way fills."""
    errors: list[BaseException] = []

    def send() -> None:
        try:
            sock.sendall(payload)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    time.sleep(read_delay)
    received = bytearray()
    while len(received) < len(payload):
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    sender.join(timeout=30)
    assert not errors
    return bytes(received)


def test_bulk_both_ways_with_a_late_reader(make_mailgate, echo_auth):
    mg = make_mailgate(echo_auth.port)
    [worker] = mg.workers()
    idle_pipes = pipes(worker)
    seen: list[int] = []
    transferring = threading.Event()

    def watch() -> None:
        while transferring.is_set():
            seen.append(pipes(worker))
            time.sleep(0.005)

    payload = os.urandom(SIZE)
    with socket.create_connection(("127.0.0.1", mg.port), timeout=30) as sock:
        login(sock)
        transferring.set()
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            received = echo_through(sock, payload, read_delay=1.0)
        finally:
            transferring.clear()
            watcher.join(timeout=10)
        assert received == payload
        # Plain TCP both sides: the bulk went through splice pipes, which are
        # given back once the directions go idle.
        assert max(seen) > idle_pipes
        wait_for(lambda: pipes(worker) == idle_pipes, what="the splice pipes to be closed")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # the backend saw the EOF, closed, and the session ended
    mg.wait_log(rf"session summary: .* bytes_in={SIZE + 29} bytes_out={SIZE + 36} .* outcome=proxied")


def test_a_streaming_direction_keeps_its_pipe_through_pauses(make_mailgate, echo_auth):
    # Senders pause between bursts (a message ends, the next command waits
    # for its reply): each direction keeps the pipe it opened for the next
    # burst instead of making a new one, and gives it back only after
    # PIPE_IDLE (1 s) without one.
    mg = make_mailgate(echo_auth.port)
    [worker] = mg.workers()
    idle = pipe_ids(worker)
    payload = os.urandom(1024 * 1024)
    kept: list[set[str]] = []
    with socket.create_connection(("127.0.0.1", mg.port), timeout=30) as sock:
        login(sock)
        for _ in range(6):
            assert echo_through(sock, payload, read_delay=0.0) == payload
            time.sleep(0.1)
            kept.append(pipe_ids(worker) - idle)
        assert kept[0]
        assert all(before <= after for before, after in zip(kept, kept[1:])), kept  # none replaced
        started = time.monotonic()
        wait_for(lambda: pipe_ids(worker) == idle, what="the idle splice pipes to be closed")
        assert time.monotonic() - started < 3.0
        assert echo_through(sock, payload, read_delay=0.0) == payload  # and streams again after
    mg.wait_log(r"session summary: .* outcome=proxied")


def test_bulk_both_ways_over_tls(tls_mailgate, echo_auth, ca):  # noqa: F811 - fixtures
    mg = tls_mailgate(echo_auth, "pop3")
    payload = os.urandom(SIZE)
    raw = socket.create_connection(("127.0.0.1", mg.port), timeout=30)
    with client_context(ca).wrap_socket(raw, server_hostname="mail.test") as sock:
        login(sock)
        assert echo_through(sock, payload, read_delay=1.0) == payload
        # Small exchanges after the bulk: nothing is left in OpenSSL's buffers.
        for n in range(3):
            sock.sendall(b"NOOP %d\r\n" % n)
            assert recv_until(sock, b"\r\n") == b"NOOP %d\r\n" % n
    mg.wait_log(r"session summary: .* outcome=proxied")


def test_a_client_gone_mid_transfer_ends_the_session(make_mailgate, echo_auth, echo):
    mg = make_mailgate(echo_auth.port)
    sock = socket.create_connection(("127.0.0.1", mg.port), timeout=30)
    login(sock)
    sock.sendall(os.urandom(SIZE))  # echoed at a client that never reads
    # Closing with unread data resets the connection: mailgate's send fails.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    mg.wait_log(r"session summary: .* outcome=relay-error")
    wait_for(lambda: echo.closed == 1, what="the backend connection to close")


def test_worker_connections_counts_logged_in_sessions(make_mailgate, echo_auth):
    mg = make_mailgate(echo_auth.port, start=False)
    mg.write_config(mg.conf.read_text().replace("worker_connections 1024;", "worker_connections 2;"))
    mg.start(ports=(mg.port,))
    first = socket.create_connection(("127.0.0.1", mg.port), timeout=10)
    second = socket.create_connection(("127.0.0.1", mg.port), timeout=10)
    login(first)
    login(second)
    with socket.create_connection(("127.0.0.1", mg.port), timeout=10) as third:
        third.settimeout(1.0)
        with pytest.raises(TimeoutError):
            third.recv(1)  # in the listen queue: both slots are taken by relaying sessions
        first.close()
        third.settimeout(10)
        assert recv_until(third, b"\r\n") == EchoBackend.greeting.replace(b"echo", b"POP3")
    second.close()


def test_bytes_pipelined_after_the_login_over_tls_reach_the_backend(tls_mailgate, echo_auth, ca):  # noqa: F811
    """Sent with the login in one TLS write: part is still in OpenSSL's buffer
    (decrypted, nothing left on the socket) when the relay starts."""
    mg = tls_mailgate(echo_auth, "pop3")
    payload = b"z" * 12000 + b"\r\n"
    raw = socket.create_connection(("127.0.0.1", mg.port), timeout=30)
    with client_context(ca).wrap_socket(raw, server_hostname="mail.test") as sock:
        assert recv_until(sock, b"\r\n").startswith(b"+OK")
        sock.sendall(b"USER alice\r\nPASS wonderland\r\n" + payload)
        received = recv_until(sock, payload)
        assert received.endswith(b"+OK logged in\r\n" + payload)
