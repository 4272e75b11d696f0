"""The master process: binds, forks workers, reaps them, and obeys signals.

Signals are nginx's (SPEC 11): HUP reload, QUIT graceful stop, TERM/INT fast
stop, USR1 reopen logs. They are blocked and collected with sigtimedwait() in
one loop, so no handler runs in the middle of other work and the sender's pid
is known for the log line, as nginx prints it. The master never imports
gevent, requests or ssl: a worker imports them after fork.
"""

from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass, field

from mailgate import NAME, __version__
from mailgate.checks import check
from mailgate.config import load
from mailgate.config.model import Config
from mailgate.errors import ConfigError, MailgateError, StartupError
from mailgate.log import ErrorLog, SinkRegistry
from mailgate.master import pidfile
from mailgate.master.listeners import Listeners, Prepared
from mailgate.master.process_title import set_title

SIGNALS = (signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD)

# What nginx logs after "signal N (SIG...) received from PID, ...".
SIGNAL_ACTIONS = {
    signal.SIGHUP: "reconfiguring",
    signal.SIGQUIT: "shutting down",
    signal.SIGTERM: "exiting",
    signal.SIGINT: "exiting",
    signal.SIGUSR1: "reopening logs",
}

# A worker that cannot start (log file, users file, privileges...) exits with
# this code; it is not respawned, so a broken setup does not loop.
WORKER_BOOT_ERROR = 3
# A new worker generation must report ready within this many seconds.
BOOT_DEADLINE = 15.0
# A worker that dies sooner than this after its start is respawned no sooner
# than this after its death: a crash at every start must not spin the CPU.
RESPAWN_HOLDOFF = 1.0
# Fast stop: workers still alive this long after SIGTERM get SIGKILL.
FAST_STOP_GRACE = 5.0


@dataclass
class WorkerProc:
    pid: int
    generation: int
    started: float
    ready_fd: int = -1
    ready: bool = False


@dataclass
class Arbiter:
    config: Config
    registry: SinkRegistry = field(default_factory=SinkRegistry)
    listeners: Listeners = field(default_factory=Listeners)
    workers: dict[int, WorkerProc] = field(default_factory=dict)
    generation: int = 0
    stopping: str = ""  # "", "graceful" or "fast"
    stop_deadline: float = 0.0
    respawn_at: float = 0.0
    boot_failed: bool = False
    ready_notify: int = -1  # fd to tell ``mailgate start`` we are up

    def __post_init__(self) -> None:
        self.log = ErrorLog.build(self.config.main.error_log, self.registry)

    # --- start and main loop --------------------------------------------------

    def run(self) -> int:
        """Serve until stopped; returns the process exit code."""
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            self._open_server_logs(self.config)
            self.listeners.bind_all(self.config)
            pidfile.write(self.config.main.pid)
        except (MailgateError, OSError) as err:
            self.log.log("emerg", str(err))
            self._notify(f"error: {err}")
            return 1
        set_title(f"{NAME}: master process {' '.join(_argv())}")
        self.log.log("notice", f"{NAME}/{__version__}")
        self.log.log("notice", f"using the configuration file {self.config.path}")
        self._start_generation(self.listeners.sockets)
        if not self._await_ready(self.generation):
            self.log.log("emerg", "worker processes failed to start, exiting")
            self._notify("error: worker processes failed to start, see the error log")
            self._shutdown_now()
            return 1
        self._notify("ok")
        return self._loop()

    def _loop(self) -> int:
        while True:
            info = signal.sigtimedwait(SIGNALS, 0.5)
            if info is not None:
                self._dispatch(info)
            self._reap()
            if self.stopping and not self.workers:
                break
            if self.stopping == "fast" and time.monotonic() > self.stop_deadline:
                self._signal_workers(signal.SIGKILL)
            if not self.stopping:
                self._maintain()
        self._cleanup()
        return 0

    def _dispatch(self, info: signal.struct_siginfo) -> None:
        signo = info.si_signo
        if signo == signal.SIGCHLD:
            return
        name = signal.Signals(signo).name
        self.log.log("notice", f"signal {signo} ({name}) received from {info.si_pid}, {SIGNAL_ACTIONS[signo]}")
        handler = {
            signal.SIGHUP: self.handle_hup,
            signal.SIGQUIT: self.handle_quit,
            signal.SIGTERM: self.handle_term,
            signal.SIGINT: self.handle_term,
            signal.SIGUSR1: self.handle_usr1,
        }[signo]
        handler()

    # --- signal handlers ------------------------------------------------------

    def handle_hup(self) -> None:
        """Reload; any failure keeps the old configuration serving (SPEC 11)."""
        if self.stopping:
            return
        try:
            new = load(self.config.path)
            check(new)
        except ConfigError as err:
            self.log.log("emerg", str(err))
            self.log.log("notice", "configuration reload failed, keeping the running configuration")
            return
        try:
            self._open_server_logs(new)
            prepared = self.listeners.prepare(new)
        except (MailgateError, OSError) as err:
            self.log.log("emerg", str(err))
            self.log.log("notice", "configuration reload failed, keeping the running configuration")
            return
        self._switch(new, prepared)

    def _switch(self, new: Config, prepared: Prepared) -> None:
        """Start a generation on ``new``; only once it serves, retire the old one."""
        old_config, old_generation = self.config, self.generation
        self.config = new
        self._start_generation(prepared.sockets)
        if not self._await_ready(self.generation):
            self.log.log("alert", "new worker processes failed to start, keeping the running configuration")
            self._signal_generation(self.generation, signal.SIGKILL)
            self.listeners.rollback(prepared)
            self.config, self.generation, self.boot_failed = old_config, old_generation, False
            return
        self.listeners.commit(prepared)
        self.log = ErrorLog.build(new.main.error_log, self.registry)
        self._signal_generation(old_generation, signal.SIGQUIT, below=True)

    def handle_quit(self) -> None:
        self.stopping = self.stopping or "graceful"
        self._signal_workers(signal.SIGQUIT)
        # New connections are refused rather than queued for nobody, as
        # nginx's master closes its listening sockets on QUIT.
        self.listeners.close_all(unlink=True)

    def handle_term(self) -> None:
        self.stopping = "fast"
        self.stop_deadline = time.monotonic() + FAST_STOP_GRACE
        self._signal_workers(signal.SIGTERM)
        self.listeners.close_all(unlink=True)

    def handle_usr1(self) -> None:
        self.registry.reopen()
        _chown_logs(self.registry, self.config)
        self._signal_workers(signal.SIGUSR1)

    # --- workers --------------------------------------------------------------

    def _start_generation(self, sockets: dict) -> None:
        self.generation += 1
        self.boot_failed = False
        for _ in range(self.config.main.worker_processes):
            self._spawn(sockets)

    def _spawn(self, sockets: dict) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            os.close(read_fd)
            self._become_worker(sockets, write_fd)
        os.close(write_fd)
        self.workers[pid] = WorkerProc(pid, self.generation, time.monotonic(), read_fd)
        self.log.log("notice", f"start worker process {pid}")

    def _become_worker(self, sockets: dict, ready_fd: int) -> None:  # pragma: no cover - child
        code = 1
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            self._close_foreign_fds(sockets)
            from mailgate.worker.boot import run_worker

            code = run_worker(self.config, sockets, self.registry, os.getppid(), ready_fd)
        except BaseException as err:  # noqa: BLE001 - a worker must never return into the master's loop
            try:
                self.log.log("alert", f"worker process failed: {err!r}")
            finally:
                code = WORKER_BOOT_ERROR
        finally:
            os._exit(code)

    def _close_foreign_fds(self, sockets: dict) -> None:  # pragma: no cover - child
        """A worker keeps only its own listeners: an inherited socket of another
        generation would keep a removed address listening after a reload."""
        keep = {id(sock) for sock in sockets.values()}
        for sock in self.listeners.sockets.values():
            if id(sock) not in keep:
                sock.close()
        for worker in self.workers.values():
            if worker.ready_fd >= 0:
                os.close(worker.ready_fd)
        if self.ready_notify >= 0:
            os.close(self.ready_notify)

    def _await_ready(self, generation: int) -> bool:
        """Wait until every worker of ``generation`` is serving or has died."""
        deadline = time.monotonic() + BOOT_DEADLINE
        while time.monotonic() < deadline:
            # A worker has answered once its pipe is closed: "R" when it
            # serves, EOF when it died first.
            pending = [w for w in self.workers.values() if w.generation == generation and w.ready_fd >= 0]
            if not pending:
                break
            readable, _, _ = select.select([w.ready_fd for w in pending], [], [], 0.2)
            for worker in pending:
                if worker.ready_fd in readable:
                    worker.ready = os.read(worker.ready_fd, 1) == b"R"
                    os.close(worker.ready_fd)
                    worker.ready_fd = -1
            self._reap()
        return any(w.ready for w in self.workers.values() if w.generation == generation)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            if worker.ready_fd >= 0:
                os.close(worker.ready_fd)
            self._log_exit(pid, status)
            self._after_exit(worker, status)

    def _log_exit(self, pid: int, status: int) -> None:
        if os.WIFSIGNALED(status):
            self.log.log("alert", f"worker process {pid} exited on signal {os.WTERMSIG(status)}")
        else:
            code = os.waitstatus_to_exitcode(status)
            level = "notice" if code == 0 else "alert"
            self.log.log(level, f"worker process {pid} exited with code {code}")

    def _after_exit(self, worker: WorkerProc, status: int) -> None:
        if self.stopping or worker.generation != self.generation:
            return
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == WORKER_BOOT_ERROR:
            self.boot_failed = True
            self.log.log("alert", f"worker process {worker.pid} could not start, not respawning it")
            return
        if time.monotonic() - worker.started < RESPAWN_HOLDOFF:
            self.respawn_at = time.monotonic() + RESPAWN_HOLDOFF

    def _maintain(self) -> None:
        """Keep ``worker_processes`` workers of the current generation running."""
        if self.boot_failed or time.monotonic() < self.respawn_at:
            return
        current = sum(1 for w in self.workers.values() if w.generation == self.generation)
        for _ in range(self.config.main.worker_processes - current):
            self._spawn(self.listeners.sockets)

    def _signal_generation(self, generation: int, signo: int, below: bool = False) -> None:
        for worker in list(self.workers.values()):
            if worker.generation == generation or (below and worker.generation < generation):
                _kill(worker.pid, signo)

    def _signal_workers(self, signo: int) -> None:
        for worker in list(self.workers.values()):
            _kill(worker.pid, signo)

    # --- exit -----------------------------------------------------------------

    def _shutdown_now(self) -> None:
        self._signal_workers(signal.SIGKILL)
        deadline = time.monotonic() + FAST_STOP_GRACE
        while self.workers and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        self._cleanup()

    def _cleanup(self) -> None:
        self.listeners.close_all(unlink=True)
        pidfile.remove(self.config.main.pid)
        self.log.log("notice", "exit")

    def _open_server_logs(self, config: Config) -> None:
        """Open every error_log of ``config`` here, so workers inherit them open
        (they may run as an unprivileged ``user`` that cannot open them)."""
        ErrorLog.build(config.main.error_log, self.registry)
        for server in config.servers:
            ErrorLog.build(server.error_log, self.registry)
        _chown_logs(self.registry, config)

    def _notify(self, message: str) -> None:
        if self.ready_notify < 0:
            return
        try:
            os.write(self.ready_notify, message.encode() + b"\n")
            os.close(self.ready_notify)
        except OSError:
            pass
        self.ready_notify = -1


def _kill(pid: int, signo: int) -> None:
    """Signal a worker; one that is gone or out of reach must not take the
    master down (a sandbox without CAP_KILL answers EPERM)."""
    try:
        os.kill(pid, signo)
    except (ProcessLookupError, PermissionError):
        pass


def _argv() -> list[str]:
    import sys

    return sys.argv


def _chown_logs(registry: SinkRegistry, config: Config) -> None:
    """Log files belong to the worker ``user`` so workers can reopen them (nginx does the same)."""
    if config.main.user is None or os.geteuid() != 0:
        return
    from mailgate.master.privileges import lookup_user

    uid, _gid = lookup_user(config.main.user)
    for sink in registry.sinks.values():
        path = getattr(sink, "path", None)
        if path:
            try:
                os.chown(path, uid, -1)
            except OSError:
                pass


def serve(config: Config, ready_notify: int = -1) -> int:
    """Run a master in this process until it is stopped."""
    arbiter = Arbiter(config, ready_notify=ready_notify)
    try:
        return arbiter.run()
    except StartupError as err:
        arbiter.log.log("emerg", str(err))
        return 1
