"""Signals as nginx obeys them: reload, graceful and fast stop, log reopen,
and a master that replaces dead workers without looping on broken ones."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from tests.fakes.auth_server import FakeAuthServer, fail, ok
from tests.integration.harness import alive, connectable, free_port, recv_all, recv_until, wait_for


@pytest.fixture
def auth(backend) -> FakeAuthServer:
    with FakeAuthServer(ok("127.0.0.1", backend.port)) as server:
        yield server


def logged_in(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert recv_until(sock, b"\r\n") == b"+OK POP3 ready\r\n"
    sock.sendall(b"USER alice\r\nPASS wonderland\r\n")
    assert recv_until(sock, b"+OK logged in\r\n").endswith(b"+OK logged in\r\n")
    return sock


def stat(sock: socket.socket) -> bytes:
    sock.sendall(b"STAT\r\n")
    return recv_until(sock, b"\r\n")


def test_reload_keeps_a_session_in_mid_relay(make_mailgate, auth):
    mg = make_mailgate(auth.port)
    old_workers = mg.workers()
    session = logged_in(mg.port)
    assert stat(session).startswith(b"+OK 1 ")
    mg.write_config(mg.conf.read_text().replace("timeout 10s;", "timeout 11s;"))
    result = mg.cli("reload")
    assert result.returncode == 0, result.stderr
    new_workers = wait_for(lambda: set(mg.workers()) - set(old_workers), what="new workers")
    mg.wait_log(r"signal 1 \(SIGHUP\) received from \d+, reconfiguring")
    # The old session still relays, served by the old worker...
    assert stat(session).startswith(b"+OK 1 ")
    assert all(alive(pid) for pid in old_workers)
    # ...new sessions work too...
    fresh = logged_in(mg.port)
    assert stat(fresh).startswith(b"+OK 1 ")
    fresh.close()
    # ...and the old worker leaves once its last session ends.
    session.sendall(b"QUIT\r\n")
    assert recv_all(session) == b"+OK bye\r\n"
    wait_for(lambda: not any(alive(pid) for pid in old_workers), what="the old worker to exit")
    assert set(mg.workers()) == set(new_workers)


def test_reload_adds_and_removes_listeners(make_mailgate, auth):
    mg = make_mailgate(auth.port)
    new_port = free_port()
    text = mg.conf.read_text().replace(f"listen 127.0.0.1:{mg.port};", f"listen 127.0.0.1:{new_port};")
    mg.write_config(text)
    mg.reload()
    wait_for(lambda: connectable("127.0.0.1", new_port), what="the new port")
    wait_for(lambda: not connectable("127.0.0.1", mg.port), what="the old port to close")
    stat(logged_in(new_port))


def test_broken_config_on_reload_keeps_the_old_one(make_mailgate, auth):
    mg = make_mailgate(auth.port)
    workers = mg.workers()
    good = mg.conf.read_text()
    mg.write_config(good.replace("protocol pop3;", "protocol pop3;\n        no_such_directive on;"))
    # `mailgate reload` tests first and leaves the server alone.
    result = mg.cli("reload")
    assert result.returncode == 1
    assert f'unknown directive "no_such_directive" in {mg.conf}:' in result.stderr
    # A bare HUP: the master logs the error and keeps serving.
    mg.send_signal(signal.SIGHUP)
    mg.wait_log(rf'\[emerg\] .*unknown directive "no_such_directive" in {mg.conf}:\d+')
    mg.wait_log("keeping the running configuration")
    assert mg.workers() == workers
    stat(logged_in(mg.port))


def test_reload_whose_workers_cannot_start_keeps_the_old_generation(make_mailgate, auth, tmp_path):
    mg = make_mailgate(auth.port)
    workers = mg.workers()
    # A limit no process may take: the new workers fail as they start.
    mg.write_config(mg.conf.read_text().replace("events {", "worker_rlimit_nofile 999999999;\nevents {"))
    mg.send_signal(signal.SIGHUP)
    mg.wait_log("new worker processes failed to start, keeping the running configuration")
    assert mg.workers() == workers
    stat(logged_in(mg.port))


def test_graceful_stop_waits_for_sessions_and_leaves_nothing(make_mailgate, auth):
    mg = make_mailgate(auth.port)
    processes = [mg.pid, *mg.workers()]
    session = logged_in(mg.port)
    mg.send_signal(signal.SIGQUIT)
    mg.wait_log("gracefully shutting down")
    wait_for(lambda: not connectable("127.0.0.1", mg.port), what="accepting to stop")
    assert stat(session).startswith(b"+OK 1 ")  # still served
    assert mg.proc.poll() is None
    session.sendall(b"QUIT\r\n")
    assert recv_all(session) == b"+OK bye\r\n"
    assert mg.proc.wait(timeout=20) == 0
    wait_for(lambda: not any(alive(pid) for pid in processes), what="every process to exit")
    assert not mg.pid_path.exists()


def test_worker_shutdown_timeout_cuts_idle_proxied_sessions(make_mailgate, auth):
    mg = make_mailgate(auth.port, main="worker_shutdown_timeout 1s;")
    session = logged_in(mg.port)
    mg.send_signal(signal.SIGQUIT)
    assert recv_all(session) == b""
    mg.wait_log(r"shutdown timeout while proxying, client: 127.0.0.1")
    assert mg.proc.wait(timeout=20) == 0


def test_fast_stop_cuts_sessions_and_leaves_nothing(make_mailgate, auth):
    mg = make_mailgate(auth.port, workers=2)
    processes = [mg.pid, *mg.workers()]
    session = logged_in(mg.port)
    mg.send_signal(signal.SIGTERM)
    assert recv_all(session) == b""
    assert mg.proc.wait(timeout=20) == 0
    wait_for(lambda: not any(alive(pid) for pid in processes), what="every process to exit")


def test_usr1_reopens_a_moved_log(make_mailgate, auth, tmp_path):
    mg = make_mailgate(auth.port)
    rotated = tmp_path / "error.log.1"
    os.rename(mg.log_path, rotated)
    mg.send_signal(signal.SIGUSR1)
    wait_for(mg.log_path.exists, what="a new error.log")
    # As in nginx, the line announcing the reopen goes to the old file.
    wait_for(lambda: "reopening logs" in rotated.read_text(), what="the reopen notice")
    assert stat(logged_in(mg.port)).startswith(b"+OK 1 ")
    mg.wait_log("client logged in")
    assert "client logged in" not in rotated.read_text()


def test_a_killed_worker_is_replaced(make_mailgate, auth):
    mg = make_mailgate(auth.port)
    (victim,) = mg.workers()
    os.kill(victim, signal.SIGKILL)
    mg.wait_log(rf"worker process {victim} exited on signal 9")
    replacement = wait_for(lambda: [pid for pid in mg.workers() if pid != victim], what="a new worker")
    assert replacement
    stat(logged_in(mg.port))


def test_a_worker_that_cannot_start_is_not_respawned_in_a_loop(make_mailgate, auth, tmp_path, backend):
    users = tmp_path / "users.yaml"
    users.write_text(f"defaults: {{server: 127.0.0.1, pop3: {backend.port}}}\nusers: {{}}\n")
    mg = make_mailgate(auth.port, mail="", start=False)
    mg.write_config(mg.conf.read_text().replace(f"auth_http 127.0.0.1:{auth.port}/auth;", f"auth_file {users};"))
    mg.start(ports=(mg.port,))
    (victim,) = mg.workers()
    users.write_text("users: [broken\n")
    os.kill(victim, signal.SIGKILL)
    mg.wait_log("could not start, not respawning it")
    time.sleep(1.5)
    assert mg.log().count("start worker process") == 2  # the first and one replacement only
    assert mg.proc.poll() is None


def test_pop3_greeting_delay_unaffected_by_failed_auth_logging(make_mailgate, backend):
    """A failed login logs the login but never the password (any outcome)."""
    with FakeAuthServer(fail("Invalid login or password")) as auth:
        mg = make_mailgate(auth.port)
        sock = socket.create_connection(("127.0.0.1", mg.port), timeout=10)
        recv_until(sock, b"\r\n")
        sock.sendall(b"USER alice\r\nPASS hunter2-secret\r\n")
        recv_all(sock)
        mg.wait_log("client login failed")
        assert "hunter2-secret" not in mg.log()


def test_broken_users_file_on_reload_keeps_the_old_configuration(make_mailgate, auth, tmp_path):
    mg = make_mailgate(auth.port)
    workers = mg.workers()
    users = tmp_path / "users.yaml"
    users.write_text("users: [this is not a mapping\n")
    mg.write_config(mg.conf.read_text().replace(f"auth_http 127.0.0.1:{auth.port}/auth;", f"auth_file {users};"))
    mg.send_signal(signal.SIGHUP)
    mg.wait_log(rf"\[emerg\] .* in {users}:\d+")
    mg.wait_log("keeping the running configuration")
    assert mg.workers() == workers
    stat(logged_in(mg.port))
