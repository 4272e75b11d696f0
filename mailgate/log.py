"""Error logs in nginx's format, with the mail session's context.

A line looks like nginx's (SPEC 10.1)::

    2026/11/25 10:00:00 [info] 4242#0: *3 client login failed: "Bad" while in http auth state,
    client: 127.0.0.1, server: 127.0.0.1:1110, login: "bob"

(one line in the log; folded here).

``ErrorLog`` writes to every ``error_log`` target of a context, each with its
own level. Sinks are shared per destination within a process so that USR1
reopens each file once. Standard library only: the master uses this too.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass, field

from mailgate.config.model import LOG_LEVELS, LogTarget

LEVEL_RANK = {name: rank for rank, name in enumerate(LOG_LEVELS)}

# nginx truncates error log lines at NGX_MAX_ERROR_STR (2048 bytes).
MAX_LINE = 2048

# RFC 5424 6.2.1 severities and facilities, as nginx's syslog:... accepts them.
SYSLOG_SEVERITY = {"emerg": 0, "alert": 1, "crit": 2, "error": 3, "warn": 4, "notice": 5, "info": 6, "debug": 7}
SYSLOG_FACILITY = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "intern": 5, "lpr": 6, "news": 7,
    "uucp": 8, "clock": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14,
    "cron": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
    "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip


class Sink:
    """A destination for formatted lines."""

    def write(self, level: str, line: str) -> None:
        raise NotImplementedError

    def reopen(self) -> None:
        """USR1: files are reopened so logrotate can move them away."""

    def close(self) -> None:
        """Release the destination."""


class StderrSink(Sink):
    def write(self, level: str, line: str) -> None:
        try:
            os.write(2, line.encode("utf-8", "surrogateescape") + b"\n")
        except OSError:
            pass  # a closed stderr must not take the server down


class FileSink(Sink):
    """Appends to a file; opened with O_APPEND so workers' lines don't clobber."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.reopen()

    def reopen(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = fd

    def write(self, level: str, line: str) -> None:
        try:
            os.write(self.fd, line.encode("utf-8", "surrogateescape") + b"\n")
        except OSError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SyslogSink(Sink):
    """nginx's ``syslog:server=...``: RFC 3164 datagrams over UDP or a unix socket."""

    def __init__(self, target: LogTarget) -> None:
        self.target = target
        self.hostname = "" if target.nohostname else socket.gethostname()
        self.pri_base = SYSLOG_FACILITY[target.facility] * 8
        self.sock, self.address = _syslog_socket(target.server)

    def write(self, level: str, line: str) -> None:
        # The severity is the configured one, as nginx does (it does not map levels).
        pri = self.pri_base + SYSLOG_SEVERITY[self.target.severity]
        stamp = time.strftime("%b %d %H:%M:%S")
        host = f"{self.hostname} " if self.hostname else ""
        # nginx sends the message without its own date (ngx_syslog_writer).
        message = line.split(" ", 2)[2] if line[:4].isdigit() else line
        packet = f"<{pri}>{stamp} {host}{self.target.tag}: {message}"
        try:
            self.sock.sendto(packet.encode("utf-8", "surrogateescape"), self.address)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


def _syslog_socket(server: str) -> tuple[socket.socket, object]:
    if server.startswith("unix:"):
        return _non_blocking(socket.AF_UNIX), server[5:]
    host, _, port = server.rpartition(":") if server.rsplit(":", 1)[-1].isdigit() else (server, "", "514")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return _non_blocking(family), (host, int(port))


def _non_blocking(family: int) -> socket.socket:
    # A syslog daemon that does not read fills a unix socket's queue; a line
    # is then dropped (as nginx's non-blocking syslog socket drops it) rather
    # than waited for: the relay logs from the event loop, which must not block.
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    return sock


class SinkRegistry:
    """One sink per destination per process, shared by every log that names it."""

    def __init__(self) -> None:
        self.sinks: dict[tuple[str, str], Sink] = {}

    def get(self, target: LogTarget) -> Sink:
        key = (target.kind, target.path or target.server or target.kind)
        if target.kind == "syslog":
            key = ("syslog", repr(target))
        sink = self.sinks.get(key)
        if sink is None:
            sink = _make_sink(target)
            self.sinks[key] = sink
        return sink

    def reopen(self) -> None:
        for sink in self.sinks.values():
            try:
                sink.reopen()
            except OSError as err:
                os.write(2, f"mailgate: cannot reopen log: {err}\n".encode())

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()
        self.sinks.clear()


def _make_sink(target: LogTarget) -> Sink:
    if target.kind == "file":
        return FileSink(target.path)
    if target.kind == "syslog":
        return SyslogSink(target)
    return StderrSink()


def format_line(level: str, message: str, number: int | None = None) -> str:
    """``YYYY/MM/DD HH:MM:SS [level] PID#0: [*N ]message``, cut at 2048 bytes."""
    stamp = time.strftime("%Y/%m/%d %H:%M:%S")
    conn = f"*{number} " if number is not None else ""
    line = f"{stamp} [{level}] {os.getpid()}#0: {conn}{message}"
    return line[:MAX_LINE]


@dataclass
class ErrorLog:
    """The error log of one context (main, or a server): several targets."""

    targets: list[tuple[int, Sink]] = field(default_factory=list)
    # The most verbose level any target takes; asked before every line is
    # built (and several times per login), so computed once.
    max_rank: int = field(init=False, default=-1)

    def __post_init__(self) -> None:
        self.max_rank = max((rank for rank, _ in self.targets), default=-1)

    @classmethod
    def build(cls, targets: tuple[LogTarget, ...], registry: SinkRegistry) -> ErrorLog:
        return cls([(LEVEL_RANK[t.level], registry.get(t)) for t in targets])

    def enabled(self, level: str) -> bool:
        return LEVEL_RANK[level] <= self.max_rank

    def log(self, level: str, message: str, number: int | None = None) -> None:
        rank = LEVEL_RANK[level]
        if rank > self.max_rank:
            return
        line = format_line(level, message, number)
        for limit, sink in self.targets:
            if rank <= limit:
                sink.write(level, line)


@dataclass
class SessionContext:
    """What nginx appends to every line of a mail session (SPEC 10.1)."""

    number: int
    client: str
    server: str
    login: str = ""
    upstream: str = ""
    action: str = ""
    starttls: bool = False

    def suffix(self, with_action: bool = True) -> str:
        parts = []
        if with_action and self.action:
            parts.append(f" while {self.action}")
        tls = " using starttls" if self.starttls else ""
        parts.append(f", client: {self.client}{tls}, server: {self.server}")
        if self.login:
            parts.append(f', login: "{self.login}"')
        if self.upstream:
            parts.append(f", upstream: {self.upstream}")
        return "".join(parts)


class SessionLog:
    """A session's view of its server's error log: lines get ``*N`` and context."""

    def __init__(self, log: ErrorLog, context: SessionContext) -> None:
        self.errlog = log
        self.ctx = context

    def enabled(self, level: str) -> bool:
        return self.errlog.enabled(level)

    def log(self, level: str, message: str, with_action: bool = True) -> None:
        if self.errlog.enabled(level):
            self.errlog.log(level, message + self.ctx.suffix(with_action), self.ctx.number)

    def bare(self, level: str, message: str) -> None:
        """A line with ``*N`` but no context (nginx's accept line)."""
        self.errlog.log(level, message, self.ctx.number)


def stderr_log(level: str = "error") -> ErrorLog:
    """Before the configuration is known, errors go to stderr."""
    return ErrorLog([(LEVEL_RANK[level], StderrSink())])


def fatal(message: str) -> None:
    """Last-resort message when no log can be opened."""
    sys.stderr.write(f"mailgate: {message}\n")
