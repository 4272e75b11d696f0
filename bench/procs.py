"""Starting and stopping what the bench runs: the proxies, the fakes, the load.

Every process is started in a session of its own, pinned to a core, and
registered; ``stop_all`` (called on every exit path of the orchestrator)
ends each registered process group by its id. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
NGINX = "/usr/sbin/nginx"
MAIL_MODULE = "/usr/lib/nginx/modules/ngx_mail_module.so"

PROXY_CORE = 0
LOAD_CORE = 1

_started: list[subprocess.Popen] = []


def python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def pinned(core: int):
    def pin() -> None:
        os.sched_setaffinity(0, {core})
    return pin


def spawn(argv: list[str], core: int, **kw) -> subprocess.Popen:
    proc = subprocess.Popen(argv, preexec_fn=pinned(core), start_new_session=True, **kw)
    _started.append(proc)
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
    """Signal the process group, wait, then kill what is left of it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # workers the master left behind, if any
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5.0)
    except subprocess.TimeoutExpired:
        pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    if proc in _started:
        _started.remove(proc)
    return proc.returncode


def stop_all() -> None:
    for proc in list(_started):
        stop(proc, timeout=3.0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.settimeout(1.0)
            return bool(sock.recv(64))
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")


# --- the fake servers ----------------------------------------------------------------


class Fakes:
    """bench/fakes.py on the load core; ends when its stdin closes."""

    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "fakes.log"
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}

    def start(self) -> Fakes:
        err = open(self.log, "ab")
        self.proc = spawn([python(), str(BENCH / "fakes.py")], LOAD_CORE, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=err)
        err.close()
        deadline = time.monotonic() + 30.0
        line = b""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line or line.startswith(b"READY "):
                break
        if not line.startswith(b"READY "):
            raise RuntimeError(f"fake servers did not start: {self.log.read_text()[-2000:]}")
        self.ports = json.loads(line[6:])
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


# --- the proxies -------------------------------------------------------------------

CONFIG = """\
# The one configuration both proxies run, each from a directory of its own:
# nginx -p DIR/ -c DIR/proxy.conf, mailgate -c DIR/proxy.conf start --foreground.
# Relative paths start from DIR in both.
load_module {module};
user root;
worker_processes 1;
daemon off;
worker_rlimit_nofile 19900;
error_log error.log warn;
pid proxy.pid;

events {{
    worker_connections 19800;
}}

mail {{
    server_name bench.local;
    auth_http 127.0.0.1:{auth}/auth;
    proxy_pass_error_message on;

    server {{
        listen 127.0.0.1:{pop3};
        protocol pop3;
    }}
    server {{
        listen 127.0.0.1:{imap};
        protocol imap;
    }}
    server {{
        listen 127.0.0.1:{smtp};
        protocol smtp;
        smtp_auth plain login;
        xclient off;
    }}
}}
"""


def render_config(auth: int, pop3: int, imap: int, smtp: int) -> str:
    return CONFIG.format(module=MAIL_MODULE, auth=auth, pop3=pop3, imap=imap, smtp=smtp)


class Proxy:
    """One proxy under test, started afresh for each measurement."""

    def __init__(self, name: str, workdir: Path, config: str, ports: dict[str, int]) -> None:
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "proxy.conf"
        self.conf.write_text(config)
        self.ports = ports
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def argv(self) -> list[str]:
        if self.name == "nginx":
            return [NGINX, "-p", f"{self.dir}/", "-c", str(self.conf), "-e", str(self.dir / "error.log")]
        return [python(), "-m", "mailgate", "-c", str(self.conf), "start", "--foreground"]

    def start(self) -> Proxy:
        pid_file = self.dir / "proxy.pid"
        pid_file.unlink(missing_ok=True)
        out = open(self.dir / "stderr.log", "ab")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("MAILGATE_CONF", None)
        self.proc = spawn(self.argv(), PROXY_CORE, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                          cwd=self.dir, env=env)
        out.close()
        self.starts += 1
        try:
            wait_until(lambda: pid_file.exists() or self.proc.poll() is not None, 30.0, f"{self.name}'s pid file")
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            for port in self.ports.values():
                wait_until(lambda p=port: greets(p), 30.0, f"{self.name} greeting on port {port}")
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            # Fast stop for both (TERM): the sessions are the bench's own.
            stop(self.proc, signal.SIGTERM)
            self.proc = None

    def tail(self, size: int = 1500) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            path = self.dir / name
            if path.exists():
                text += f"[{name}] " + path.read_text(errors="replace")[-size:]
        return text

    def errors_logged(self) -> int:
        """Lines at [error] or worse in the proxy's error log."""
        path = self.dir / "error.log"
        if not path.exists():
            return 0
        bad = ("[error]", "[crit]", "[alert]", "[emerg]")
        return sum(1 for line in path.read_text(errors="replace").splitlines() if any(b in line for b in bad))

    def version(self) -> str:
        if self.name == "nginx":
            out = subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=10)
            return (out.stderr or out.stdout).strip().split("/")[-1]
        out = subprocess.run([python(), "-c", "import importlib.metadata as m; print(m.version('mailgate'))"],
                             capture_output=True, text=True, timeout=30, cwd=ROOT)
        return out.stdout.strip()
