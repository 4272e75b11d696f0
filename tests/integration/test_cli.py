"""The command line: test, start (daemonized), status, reload, reopen, stop,
passwd; and the shipped configuration serving a first login."""

from __future__ import annotations

import os
import poplib
import re
import shutil
import subprocess
import sys

from tests.fakes.auth_server import FakeAuthServer, ok
from tests.integration.harness import ROOT, Mailgate, alive, free_port, greets, wait_for


def test_test_command_reports_like_nginx_t(make_mailgate):
    mg = make_mailgate(free_port(), start=False)
    result = mg.cli("test")
    assert result.returncode == 0
    assert result.stderr == (
        f"mailgate: the configuration file {mg.conf} syntax is ok\n"
        f"mailgate: configuration file {mg.conf} test is successful\n"
    )
    mg.write_config(mg.conf.read_text().replace("timeout 10s;", "timeout ten;"))
    result = mg.cli("test")
    assert result.returncode == 1
    assert re.search(rf'mailgate: \[emerg\] "timeout" directive invalid value in {mg.conf}:\d+\n', result.stderr)
    assert result.stderr.endswith(f"mailgate: configuration file {mg.conf} test failed\n")


def test_mailgate_conf_environment_variable(make_mailgate):
    mg = make_mailgate(free_port(), start=False)
    env = mg.env() | {"MAILGATE_CONF": str(mg.conf)}
    result = subprocess.run([sys.executable, "-m", "mailgate", "test"], capture_output=True, text=True,
                            env=env, timeout=30)
    assert result.returncode == 0 and str(mg.conf) in result.stderr


def test_missing_config_file_is_a_clear_error(tmp_path):
    mg = Mailgate(tmp_path, "")
    mg.conf.unlink()
    result = mg.cli("test")
    assert result.returncode == 1
    assert f'open() "{mg.conf}" failed (2: No such file or directory)' in result.stderr


def test_daemon_start_status_reload_reopen_stop(make_mailgate, backend):
    with FakeAuthServer(ok("127.0.0.1", backend.port)) as auth:
        mg = make_mailgate(auth.port, start=False)
        result = mg.cli("start")
        assert result.returncode == 0, result.stderr
        try:
            wait_for(lambda: greets("127.0.0.1", mg.port), what="the daemon to serve")
            pid = int(mg.pid_path.read_text())
            assert os.getppid() != pid and alive(pid)
            status = mg.cli("status")
            assert status.returncode == 0 and f"running (master pid {pid})" in status.stdout
            # A second start refuses rather than fighting over the pid file.
            again = mg.cli("start")
            assert again.returncode == 1 and "already running" in again.stderr
            assert mg.cli("reload").returncode == 0
            mg.wait_log(r"signal 1 \(SIGHUP\) received")
            assert mg.cli("reopen").returncode == 0
            mg.wait_log(r"signal 10 \(SIGUSR1\) received")
            pop = poplib.POP3("127.0.0.1", mg.port, timeout=10)
            pop.user("alice")
            assert pop.pass_("wonderland") == b"+OK logged in"
            pop.quit()
            stop = mg.cli("stop", "--timeout", "20")
            assert stop.returncode == 0, stop.stderr
            assert not alive(pid) and not mg.pid_path.exists()
            status = mg.cli("status")
            assert status.returncode == 3 and "not running" in status.stdout
        finally:
            if mg.pid_path.exists():
                os.kill(int(mg.pid_path.read_text()), 9)


def test_daemon_start_reports_a_bind_failure(make_mailgate):
    mg = make_mailgate(free_port(), start=False)
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", mg.port))
    taken.listen(1)
    try:
        result = mg.cli("start")
        assert result.returncode == 1
        assert f"bind() to 127.0.0.1:{mg.port} failed (98: Address already in use)" in result.stderr
    finally:
        taken.close()


def test_stop_without_a_running_server(make_mailgate):
    mg = make_mailgate(free_port(), start=False)
    result = mg.cli("stop")
    assert result.returncode == 1 and "no running master" in result.stderr


def test_passwd_prints_a_hash_the_users_file_accepts(tmp_path):
    from mailgate.auth_file import verify_password

    result = subprocess.run([sys.executable, "-m", "mailgate", "passwd"], input="s3cret\n", capture_output=True,
                            text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert hashed.startswith("$pbkdf2-sha256$") and verify_password("s3cret", hashed)
    assert "s3cret" not in result.stdout


def test_shipped_configs_serve_a_first_login(tmp_path, mailgates):
    """etc/mailgate.yaml and etc/mailgate.conf with etc/users.yaml, on free
    ports: a login as the README's demo user reaches the demo backend."""
    from tests.fakes.pop3_backend import Pop3Backend

    for name in ("mailgate.yaml", "mailgate.conf"):
        etc = tmp_path / name / "etc"
        shutil.copytree(ROOT / "etc", etc)
        port = free_port()
        with Pop3Backend() as backend:
            users = (etc / "users.yaml").read_text().replace("pop3: 11110", f"pop3: {backend.port}")
            (etc / "users.yaml").write_text(users)
            text = (etc / name).read_text().replace("1110", str(port))
            text = text.replace("stderr info", f"{etc}/error.log info")
            mg = Mailgate(etc, text, name=name)
            mg.log_path = etc / "error.log"
            mg.pid_path = tmp_path / name / "run" / "mailgate.pid"
            mailgates.append(mg)
            assert mg.cli("test").returncode == 0
            mg.start(ports=(port,))
            pop = poplib.POP3("127.0.0.1", port, timeout=10)
            pop.user("alice")
            assert pop.pass_("wonderland") == b"+OK logged in"
            pop.quit()
            assert mg.stop() == 0
            assert not mg.pid_path.exists()
