"""The error log: nginx's line format, levels per target, syslog, reopen."""

from __future__ import annotations

import os
import re
import socket

from mailgate.config.model import LogTarget
from mailgate.log import MAX_LINE, ErrorLog, SessionContext, SessionLog, SinkRegistry, format_line

LINE = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] (\d+)#0: (.*)$")


def test_format_line_is_nginx_format():
    line = format_line("info", "client logged in", 7)
    match = LINE.match(line)
    assert match is not None
    assert match.group(1) == "info"
    assert int(match.group(2)) == os.getpid()
    assert match.group(3) == "*7 client logged in"


def test_lines_are_cut_at_2048_bytes():
    assert len(format_line("error", "x" * 5000)) == MAX_LINE


def test_each_target_filters_by_its_own_level(tmp_path):
    registry = SinkRegistry()
    errors, everything = tmp_path / "errors.log", tmp_path / "all.log"
    log = ErrorLog.build(
        (LogTarget("file", "error", str(errors)), LogTarget("file", "debug", str(everything))), registry
    )
    log.log("info", "an info line")
    log.log("error", "an error line")
    assert "an info line" not in errors.read_text()
    assert "an error line" in errors.read_text()
    assert "an info line" in everything.read_text() and "an error line" in everything.read_text()
    assert log.enabled("debug") and not ErrorLog.build((LogTarget("stderr"),), registry).enabled("info")


def test_one_sink_per_file_per_process(tmp_path):
    registry = SinkRegistry()
    target = LogTarget("file", "info", str(tmp_path / "e.log"))
    ErrorLog.build((target,), registry)
    ErrorLog.build((target,), registry)
    assert len(registry.sinks) == 1


def test_session_context_suffix_matches_nginx():
    ctx = SessionContext(number=3, client="127.0.0.1", server="127.0.0.1:12110", login="john doe ",
                         upstream="127.0.0.1:11110", action="reading response from upstream")
    assert ctx.suffix() == (
        ' while reading response from upstream, client: 127.0.0.1, server: 127.0.0.1:12110,'
        ' login: "john doe ", upstream: 127.0.0.1:11110'
    )
    ctx.starttls = True
    ctx.login = ""
    assert ctx.suffix(with_action=False) == ", client: 127.0.0.1 using starttls, server: 127.0.0.1:12110, upstream: 127.0.0.1:11110"


def test_session_log_writes_number_and_context(tmp_path):
    path = tmp_path / "e.log"
    log = ErrorLog.build((LogTarget("file", "info", str(path)),), SinkRegistry())
    slog = SessionLog(log, SessionContext(number=5, client="10.0.0.1", server="0.0.0.0:110", action="in auth state"))
    slog.log("info", "client timed out (110: Connection timed out)")
    slog.bare("info", "client 10.0.0.1:5000 connected to 0.0.0.0:110")
    lines = path.read_text().splitlines()
    assert lines[0].endswith(
        "*5 client timed out (110: Connection timed out) while in auth state, client: 10.0.0.1, server: 0.0.0.0:110"
    )
    assert lines[1].endswith("*5 client 10.0.0.1:5000 connected to 0.0.0.0:110")


def test_reopen_follows_a_moved_file(tmp_path):
    path = tmp_path / "e.log"
    registry = SinkRegistry()
    log = ErrorLog.build((LogTarget("file", "info", str(path)),), registry)
    log.log("info", "before")
    os.rename(path, tmp_path / "e.log.1")
    log.log("info", "still old")
    registry.reopen()
    log.log("info", "after")
    assert "still old" in (tmp_path / "e.log.1").read_text()
    assert "after" in path.read_text() and "before" not in path.read_text()


def test_syslog_target_sends_rfc3164_datagrams():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    target = LogTarget("syslog", "info", server=f"127.0.0.1:{port}", facility="mail", tag="mg", severity="error",
                       nohostname=True)
    ErrorLog.build((target,), SinkRegistry()).log("error", "auth http server 127.0.0.1:9000 timed out", 4)
    packet = receiver.recv(4096).decode()
    receiver.close()
    # facility mail (2) * 8 + severity error (3) = 19
    assert re.match(r"^<19>\w{3} [ \d]\d \d\d:\d\d:\d\d mg: \[error\] \d+#0: \*4 auth http server", packet), packet


def test_syslog_lines_are_dropped_not_waited_for_when_the_daemon_stops_reading(tmp_path):
    path = str(tmp_path / "log.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)  # never read: its queue fills up
    target = LogTarget("syslog", "info", server=f"unix:{path}", facility="mail", tag="mg", severity="error",
                       nohostname=True)
    log = ErrorLog.build((target,), SinkRegistry())
    for n in range(5000):  # far more than a unix datagram queue holds
        log.log("error", f"line {n}", n)
    receiver.settimeout(5)
    assert receiver.recv(4096).endswith(b"line 0")  # the first ones went through
    receiver.close()
