"""``mailgate [-c FILE] start|stop|reload|reopen|test|status|passwd``.

Like ``nginx`` and ``nginx -s``: ``start`` runs a master (daemonized unless
``--foreground`` or ``daemon off``); the others read the pid file named by the
configuration and signal that master. ``test`` prints what ``nginx -t`` prints.
This is the only module that exits the process.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from mailgate import NAME, __version__
from mailgate.errors import ConfigError, MailgateError

DEFAULT_CONFIG = "/etc/mailgate/mailgate.yaml"
# ``mailgate start`` waits this long for the daemon to say it is serving.
START_WAIT = 60.0
# LSB exit code of ``status`` for "program is not running".
NOT_RUNNING = 3


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.config = os.path.abspath(args.config or os.environ.get("MAILGATE_CONF") or DEFAULT_CONFIG)
    return COMMANDS[args.command](args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=NAME, description="IMAP, POP3 and SMTP proxy.")
    parser.add_argument("-c", "--config", help=f"configuration file (default: $MAILGATE_CONF or {DEFAULT_CONFIG})")
    parser.add_argument("-v", "--version", action="version", version=f"{NAME}/{__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    start = sub.add_parser("start", help="start the server")
    start.add_argument("--foreground", action="store_true", help="do not daemonize")
    stop = sub.add_parser("stop", help="stop the server and wait until it is gone")
    stop.add_argument("--fast", action="store_true", help="cut sessions now (SIGTERM) instead of letting them finish")
    stop.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")
    sub.add_parser("reload", help="test the configuration, then make the server load it")
    sub.add_parser("reopen", help="reopen the log files")
    sub.add_parser("test", help="test the configuration and exit")
    sub.add_parser("status", help="tell whether the server runs")
    sub.add_parser("passwd", help="print a password hash for the users file")
    return parser


def _say(message: str) -> None:
    sys.stderr.write(f"{NAME}: {message}\n")


def _load(path: str, quiet: bool = False, tls: str = "here"):  # noqa: ANN202 - Config or None
    """Load and check ``path``; None (after saying why) when it is broken.

    ``tls`` says where certificates are loaded to check them: "here", in a
    forked child ("child": this process becomes the master, which must never
    import ssl), or not at all ("no")."""
    from mailgate.checks import check
    from mailgate.config import load_with_warnings

    try:
        config, warnings = load_with_warnings(path)
        check(config)
        if tls == "here":
            _check_tls(config)
    except ConfigError as err:
        _say(f"[emerg] {err}")
        return None
    if tls == "child" and not _check_tls_in_child(config):
        return None
    if not quiet:
        for warning in warnings:
            _say(f"[warn] {warning}")
    return config


def _check_tls(config) -> None:  # noqa: ANN001
    from mailgate import tls

    tls.check(config)


def _check_tls_in_child(config) -> bool:  # noqa: ANN001
    if not any(server.uses_tls for server in config.servers):
        return True
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            _check_tls(config)
        except ConfigError as err:
            _say(f"[emerg] {err}")
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def cmd_test(args: argparse.Namespace) -> int:
    if _load(args.config) is None:
        _say(f"configuration file {args.config} test failed")
        return 1
    _say(f"the configuration file {args.config} syntax is ok")
    _say(f"configuration file {args.config} test is successful")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    config = _load(args.config, tls="child")
    if config is None:
        return 1
    from mailgate.master import pidfile

    other = pidfile.running(config.main.pid)
    if other is not None:
        _say(f"[emerg] already running with pid {other} (pid file {config.main.pid})")
        return 1
    from mailgate.master.arbiter import serve

    if args.foreground or not config.main.daemon:
        return serve(config)
    return _daemonize(config, serve)


def _daemonize(config, serve) -> int:  # noqa: ANN001
    """Classic double fork; the first parent waits for the master's word."""
    read_fd, write_fd = os.pipe()
    if os.fork() > 0:
        os.close(write_fd)
        return _await_start(read_fd)
    os.close(read_fd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o022)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os._exit(serve(config, ready_notify=write_fd))


def _await_start(read_fd: int) -> int:
    deadline = time.monotonic() + START_WAIT
    data = b""
    with os.fdopen(read_fd, "rb") as pipe:
        while time.monotonic() < deadline:
            chunk = pipe.readline()
            data += chunk
            if not chunk or chunk.endswith(b"\n"):
                break
    message = data.decode(errors="replace").strip()
    if message == "ok":
        return 0
    _say(f"[emerg] {message.removeprefix('error: ') or 'the server exited during start, see the error log'}")
    return 1


def _master_pid(args: argparse.Namespace) -> int | None:
    config = _load(args.config, quiet=True, tls="no")
    if config is None:
        return None
    from mailgate.master import pidfile

    pid = pidfile.running(config.main.pid)
    if pid is None:
        _say(f'[error] no running master: pid file "{config.main.pid}" is missing or stale')
    return pid


def _signal(args: argparse.Namespace, signo: int) -> int:
    pid = _master_pid(args)
    if pid is None:
        return 1
    os.kill(pid, signo)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    pid = _master_pid(args)
    if pid is None:
        return 1
    os.kill(pid, signal.SIGTERM if args.fast else signal.SIGQUIT)
    from mailgate.master import pidfile

    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while pidfile.alive(pid):
        if deadline is not None and time.monotonic() > deadline:
            _say(f"[error] master process {pid} still running after {args.timeout:g}s")
            return 1
        time.sleep(0.05)
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    """Test first: a broken file is reported here and the server is left alone."""
    if _load(args.config) is None:
        _say(f"configuration file {args.config} test failed, not reloading")
        return 1
    return _signal(args, signal.SIGHUP)


def cmd_reopen(args: argparse.Namespace) -> int:
    return _signal(args, signal.SIGUSR1)


def cmd_status(args: argparse.Namespace) -> int:
    config = _load(args.config, quiet=True, tls="no")
    if config is None:
        return 1
    from mailgate.master import pidfile

    pid = pidfile.running(config.main.pid)
    if pid is None:
        print(f"{NAME} is not running")
        return NOT_RUNNING
    print(f"{NAME} is running (master pid {pid})")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    from mailgate.auth_file import hash_password

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            _say("[error] the passwords differ")
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        _say("[error] empty password")
        return 1
    print(hash_password(password))
    return 0


COMMANDS = {
    "start": cmd_start,
    "stop": cmd_stop,
    "reload": cmd_reload,
    "reopen": cmd_reopen,
    "test": cmd_test,
    "status": cmd_status,
    "passwd": cmd_passwd,
}


def run() -> None:
    """Console entry point."""
    try:
        sys.exit(main())
    except MailgateError as err:
        _say(f"[emerg] {err}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
