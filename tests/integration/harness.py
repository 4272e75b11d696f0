"""Run the real ``mailgate`` (master and workers) in a subprocess for tests.

Everything is on loopback or unix sockets, every wait is bounded, and the
whole process group is killed at teardown so no process outlives a test.
"""

from __future__ import annotations

import os
import re
import signal as signals
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WAIT = 20.0  # seconds: the bound on every wait in these tests


def free_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = WAIT, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def connectable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def greets(host: str, port: int) -> bool:
    """A worker (not just the master's listen backlog) answers on ``port``."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.settimeout(1)
            return bool(sock.recv(1))
    except OSError:
        return False


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (zombies excluded), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Mailgate:
    """One mailgate instance with its own directory, config, log and pid file."""

    def __init__(self, directory: Path, config: str, name: str = "mailgate.conf") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / name
        self.log_path = self.dir / "error.log"
        self.pid_path = self.dir / "mailgate.pid"
        self.stderr_path = self.dir / "stderr.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config(config)

    # --- config and commands --------------------------------------------------

    def write_config(self, text: str) -> None:
        self.conf.write_text(text)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("MAILGATE_CONF", None)
        return env

    def cli(self, *args: str, timeout: float = WAIT, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mailgate", "-c", str(self.conf), *args],
            capture_output=True, text=True, timeout=timeout, env=self.env(), input=stdin, cwd=self.dir,
        )

    def start(self, ports: tuple[int, ...] = ()) -> Mailgate:
        """Start in the foreground as a child; wait for the pid file and ports."""
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailgate", "-c", str(self.conf), "start", "--foreground"],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=self.env(), cwd=self.dir,
                start_new_session=True,
            )
        wait_for(lambda: self.pid_path.exists() or self.proc.poll() is not None, what="the pid file")
        assert self.proc.poll() is None, f"mailgate exited: {self.stderr()}{self.log()}"
        for port in ports:
            wait_for(lambda p=port: greets("127.0.0.1", p), what=f"a greeting on port {port}")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def workers(self) -> list[int]:
        return children(self.pid)

    def send_signal(self, signo: int) -> None:
        os.kill(self.pid, signo)

    def reload(self) -> list[int]:
        """HUP and wait until the new generation is serving; returns its pids."""
        before = set(self.workers())
        starts = self.log().count("start worker process")
        self.send_signal(signals.SIGHUP)
        wait_for(lambda: self.log().count("start worker process") > starts, what="new workers")
        new = wait_for(lambda: set(self.workers()) - before, what="new worker pids")
        return sorted(new)  # type: ignore[arg-type]

    def stop(self, signo: int = signals.SIGQUIT, timeout: float = WAIT) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.send_signal(signo)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """Teardown: whatever is left of the process group goes."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signals.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            pass

    # --- logs -----------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        regex = re.compile(pattern)
        return wait_for(lambda: regex.search(self.log()), timeout, what=f"log line {pattern!r}")  # type: ignore[return-value]


def recv_until(sock: socket.socket, end: bytes, timeout: float = WAIT) -> bytes:
    """Read until the data ends with ``end`` (or EOF); bounded."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(end) and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_tagged(sock: socket.socket, tag: bytes, timeout: float = WAIT) -> bytes:
    """Read until a complete line starting with ``tag`` + SP (an IMAP tagged
    reply, or ``+`` for a continuation) has arrived; bounded."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    prefix = tag + b" "
    while time.monotonic() < deadline:
        lines = data.split(b"\r\n")
        if any(line.startswith(prefix) for line in lines[:-1]):
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_all(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """Read until EOF; bounded."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data
