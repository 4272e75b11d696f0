"""Listening forms, server selection by local address, workers and limits."""

from __future__ import annotations

import os
import poplib
import pwd
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.fakes.auth_server import FakeAuthServer, ok
from tests.integration.harness import Mailgate, free_port, recv_all, recv_until, wait_for

CONF = """\
worker_processes {workers};
error_log {dir}/error.log info;
pid {dir}/mailgate.pid;
{main}
events {{ worker_connections 1024; }}
mail {{
    auth_http 127.0.0.1:{auth};
    timeout 30s;
{servers}
}}
"""


@pytest.fixture
def auth(backend) -> FakeAuthServer:
    with FakeAuthServer(ok("127.0.0.1", backend.port)) as server:
        yield server


def start(tmp_path: Path, mailgates, auth, servers: str, *, workers: int = 1, main: str = "",
          ports: tuple[int, ...] = ()) -> Mailgate:
    text = CONF.format(dir=tmp_path, auth=auth.port, servers=servers, workers=workers, main=main)
    mg = Mailgate(tmp_path, text)
    mailgates.append(mg)
    return mg.start(ports=ports)


def pop3_login(sock: socket.socket) -> bytes:
    assert recv_until(sock, b"\r\n") == b"+OK POP3 ready\r\n"
    sock.sendall(b"USER alice\r\nPASS wonderland\r\nSTAT\r\nQUIT\r\n")
    return recv_all(sock)


def test_unix_socket_listener(tmp_path, mailgates, auth):
    path = tmp_path / "pop3.sock"
    mg = start(tmp_path, mailgates, auth, f"server {{ listen unix:{path}; protocol pop3; }}")
    wait_for(path.exists, what="the socket file")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    wait_for(lambda: sock.connect_ex(str(path)) == 0, what="the unix socket")
    assert pop3_login(sock).startswith(b"+OK\r\n+OK logged in\r\n+OK 1 ")
    mg.wait_log(rf"client unix: connected to unix:{path}")
    assert auth.requests[-1].header("Client-IP") == "unix:"
    assert mg.stop() == 0
    assert not path.exists()  # removed at exit


def test_ipv6_listener(tmp_path, mailgates, auth):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("::1 is not configured")
    port = free_port(socket.AF_INET6, "::1")
    mg = start(tmp_path, mailgates, auth, f"server {{ listen [::1]:{port}; protocol pop3; }}")
    sock = wait_for(lambda: _connect6(port), what="the IPv6 listener")
    assert pop3_login(sock).startswith(b"+OK\r\n+OK logged in\r\n")
    mg.wait_log(rf"client logged in, client: ::1, server: \[::1\]:{port}")
    assert auth.requests[-1].header("Client-IP") == "::1"


def _connect6(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("::1", port), timeout=10)
    except OSError:
        return None


def test_wildcard_and_specific_addresses_share_one_socket(tmp_path, mailgates, auth):
    """nginx binds only *:port and picks the server by the local address."""
    port, other = free_port(), free_port()
    servers = f"""
    server {{ listen {port}; protocol pop3; pop3_capabilities WILDCARD; }}
    server {{ listen 127.0.0.2:{port}; protocol pop3; pop3_capabilities SPECIFIC; }}
    server {{ listen 127.0.0.3:{other} bind; protocol pop3; pop3_capabilities BOUND; }}
    """
    mg = start(tmp_path, mailgates, auth, servers)
    targets = (("127.0.0.1", port, b"WILDCARD"), ("127.0.0.2", port, b"SPECIFIC"), ("127.0.0.3", other, b"BOUND"))
    for address, target, capability in targets:
        sock = wait_for(lambda a=address, t=target: _connect4(a, t), what=f"{address}:{target}")
        assert recv_until(sock, b"\r\n") == b"+OK POP3 ready\r\n"
        sock.sendall(b"CAPA\r\n")
        assert capability in recv_until(sock, b".\r\n")
        sock.close()
    mg.wait_log(rf"connected to 127.0.0.2:{port}")
    mg.wait_log(rf"connected to 0.0.0.0:{port}")
    mg.wait_log(rf"connected to 127.0.0.3:{other}")
    # Only the wildcard and the "bind" address got sockets of their own.
    assert listening_addresses(port) == ["00000000"]
    assert listening_addresses(other) == ["0300007F"]


def listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as /proc shows them) of TCP sockets in LISTEN on ``port``."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, _, hex_port = fields[1].partition(":")
        if int(hex_port, 16) == port and fields[3] == "0A":
            found.append(address)
    return found


def _connect4(address: str, port: int) -> socket.socket | None:
    try:
        return socket.create_connection((address, port), timeout=10)
    except OSError:
        return None


def test_host_name_listener(tmp_path, mailgates, auth):
    port = free_port()
    start(tmp_path, mailgates, auth, f"server {{ listen localhost:{port}; protocol pop3; }}", ports=(port,))
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert pop3_login(sock).startswith(b"+OK\r\n+OK logged in\r\n")


def test_two_workers_both_serve(tmp_path, mailgates, auth):
    port = free_port()
    mg = start(tmp_path, mailgates, auth, f"server {{ listen 127.0.0.1:{port}; protocol pop3; }}", workers=2,
               ports=(port,))
    assert len(mg.workers()) == 2
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        assert pop3_login(sock).startswith(b"+OK\r\n+OK logged in\r\n")
    titles = {Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] for pid in mg.workers()}
    assert titles == {b"mailgate: worker process"}
    assert Path(f"/proc/{mg.pid}/cmdline").read_bytes().startswith(b"mailgate: master process ")


def test_worker_limits_and_user(tmp_path, mailgates, auth):
    main = "worker_rlimit_nofile 2048; env HOME;"
    is_root = os.geteuid() == 0
    if is_root:
        main += " user nobody;"
    port = free_port()
    mg = start(tmp_path, mailgates, auth, f"server {{ listen 127.0.0.1:{port}; protocol pop3; }}", main=main,
               ports=(port,))
    (worker,) = mg.workers()
    environ = dict(item.split(b"=", 1) for item in Path(f"/proc/{worker}/environ").read_bytes().split(b"\0") if item)
    # nginx's rule: workers keep TZ and what ``env`` lists, nothing else. (Only
    # removals show in /proc; what is kept or set is checked in test_worker_env.)
    assert set(environ) <= {b"TZ", b"HOME"}
    limits = Path(f"/proc/{worker}/limits").read_text()
    assert any(line.startswith("Max open files") and "2048" in line for line in limits.splitlines())
    if is_root:
        uid = int(next(line for line in Path(f"/proc/{worker}/status").read_text().splitlines()
                       if line.startswith("Uid:")).split()[1])
        assert uid == pwd.getpwnam("nobody").pw_uid
        assert Path(f"/proc/{mg.pid}/status").read_text().count("Uid:\t0") == 1  # the master stays root
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert pop3_login(sock).startswith(b"+OK\r\n+OK logged in\r\n")


def test_200_concurrent_sessions_in_one_worker_with_a_slow_auth_server(tmp_path, mailgates, auth, backend):
    """Auth calls overlap: 200 logins that each wait 1 s for the auth server
    finish in far less than the 200 s a worker blocked by one call would take."""
    auth.rules = ok("127.0.0.1", backend.port).but(delay=1.0)
    port = free_port()
    mg = start(tmp_path, mailgates, auth, f"server {{ listen 127.0.0.1:{port}; protocol pop3; }}", ports=(port,))
    results: list[bytes] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            pop = poplib.POP3("127.0.0.1", port, timeout=60)
            pop.user("alice")
            reply = pop.pass_("wonderland")
            pop.stat()
            pop.quit()
            with lock:
                results.append(reply)
        except BaseException as err:  # noqa: BLE001 - reported below
            with lock:
                errors.append(err)

    threads = [threading.Thread(target=one) for _ in range(200)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    for thread in threads:
        thread.join(timeout=max(deadline - time.monotonic(), 0.1))
    assert not errors, errors[:3]
    assert results == [b"+OK logged in"] * 200
    assert len(mg.workers()) == 1
    assert len(auth.requests) == 200
