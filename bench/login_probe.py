#!/usr/bin/env python3
"""How cheap can a POP3 login proxy be in Python? A measured floor for mailgate's login path.

    .venv/bin/python bench/login_probe.py [--rounds 3] [--duration 8] [--only NAME ...] [--no-refs]

mailgate's worker spends ~740 µs of CPU per POP3 USER/PASS/QUIT login, nginx ~110 µs
(bench/PROFILE.md); the target, 0.5x nginx's logins per CPU-second, is ~220 µs. To judge
it against a floor rather than a guess, this runs tiny hand-written proxies (not mailgate):

  gevent-raw        StreamServer, a greenlet per session, gevent sockets: greeting, USER,
                    PASS; auth_http as one hand-built HTTP/1.1 request on a pool of
                    kept-alive sockets (minimal parse); connect to the backend's IP (no
                    resolver); USER/PASS to it; its +OK to the client; then the session
                    greenlet pumps client->backend, one spawned greenlet backend->client.
  gevent-raw-watch  the same, the relay on two libev I/O watchers (no pump greenlet).
  gevent-requests   gevent-raw with the auth call a shared requests.Session().get()
                    (keep-alive pool of 64); -noenv: with Session.trust_env = False.
  asyncio-uvloop    asyncio protocols on uvloop, hand-built kept-alive auth; asyncio:
                    the same on asyncio's own loop.
  nginx, mailgate   references from the same run (bench/procs.py's configuration).

A login is one loadgen.py session (greeting, USER, PASS, then QUIT and the backend's
+OK bye through the relay); 0 errors are required. The proxy runs alone on core 0,
bench/fakes.py and the load generator on core 1, 50 logins at a time. CPU per login is
the proxy's user+system time from /proc over the measured window divided by the logins
completed in it (loadgen.py's sampling). Variants are interleaved round by round;
figures are medians over rounds. Left out on purpose: configuration, logging, CAPA,
AUTH, APOP, header escaping, per-I/O timeouts (one deadline covers the whole login),
flow control in the asyncio relay.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

HOST = "127.0.0.1"
LOGIN_TIMEOUT = 30.0
BUF = 4096
GREETING = b"+OK POP3 ready\r\n"
AUTH_REQUEST = (b"GET /auth HTTP/1.1\r\nHost: 127.0.0.1\r\nAuth-Method: plain\r\nAuth-User: %s\r\n"
                b"Auth-Pass: %s\r\nAuth-Protocol: pop3\r\nAuth-Login-Attempt: 1\r\nClient-IP: %s\r\n\r\n")
VARIANTS = ("gevent-raw", "gevent-raw-watch", "gevent-requests", "gevent-requests-noenv", "asyncio-uvloop", "asyncio")
REFS = ("nginx", "mailgate")


def field(head: bytes, name: bytes) -> bytes | None:
    """A header's value in a response head ending with CRLF (exact case)."""
    start = head.find(b"\r\n" + name + b": ")
    if start < 0:
        return None
    start += len(name) + 4
    return head[start:head.find(b"\r\n", start)]


def target(head: bytes) -> tuple[str, int] | None:
    """(backend address, port) from an auth_http answer, None if refused."""
    server, port = field(head, b"Auth-Server"), field(head, b"Auth-Port")
    if field(head, b"Auth-Status") != b"OK" or not server or not port or not port.isdigit():
        return None
    return server.decode(), int(port)


# --- gevent -------------------------------------------------------------------------


def serve_gevent(port: int, auth_port: int, variant: str) -> None:
    from gevent import monkey
    monkey.patch_all()
    import socket
    import gevent
    from gevent.server import StreamServer

    loop = gevent.get_hub().loop

    def send(sock, data: bytes) -> None:
        sent = sock.send(data)  # gevent's sendall asks for SO_SNDBUF on every call
        if sent < len(data):
            sock.sendall(data[sent:])

    def read_line(sock, buf: bytearray) -> bytes:
        while (end := buf.find(b"\n")) < 0:
            data = sock.recv(BUF)
            if not data:
                raise EOFError("closed")
            buf += data
        line = bytes(buf[:end + 1])
        del buf[:end + 1]
        return line

    if "requests" in variant:
        import requests
        http = requests.Session()
        http.trust_env = not variant.endswith("-noenv")
        http.mount("http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=64))
        url = f"http://{HOST}:{auth_port}/auth"

        def authenticate(user: bytes, password: bytes, client_ip: str) -> tuple[str, int] | None:
            answer = http.get(url, timeout=LOGIN_TIMEOUT, headers={
                "Auth-Method": "plain", "Auth-User": user, "Auth-Pass": password, "Auth-Protocol": "pop3",
                "Auth-Login-Attempt": "1", "Client-IP": client_ip})
            if answer.headers.get("Auth-Status") != "OK":
                return None
            return answer.headers["Auth-Server"], int(answer.headers["Auth-Port"])
    else:
        idle: list = []

        def exchange(conn, request: bytes) -> bytes:
            send(conn, request)
            buf = b""
            while (end := buf.find(b"\r\n\r\n")) < 0:
                data = conn.recv(1024)
                if not data:
                    raise EOFError("auth server closed")
                buf += data
            head = buf[:end + 2]
            if len(buf) == end + 4 and field(head, b"Content-Length") == b"0":
                idle.append(conn)  # nothing of this answer left to read: keep it
            else:
                conn.close()
            return head

        def authenticate(user: bytes, password: bytes, client_ip: str) -> tuple[str, int] | None:
            request = AUTH_REQUEST % (user, password, client_ip.encode())
            if idle:
                conn = idle.pop()
                try:
                    return target(exchange(conn, request))
                except (OSError, EOFError):  # closed by the server meanwhile: once more, anew
                    conn.close()
            conn = socket.socket()
            conn.connect((HOST, auth_port))
            return target(exchange(conn, request))

    def login(client, client_ip: str):
        """The POP3 dialogue up to the backend's +OK; the backend socket."""
        buf = bytearray()
        send(client, GREETING)
        line = read_line(client, buf)
        if line[:5].upper() != b"USER ":
            raise ValueError("-ERR USER first\r\n")
        user = line[5:].strip()
        send(client, b"+OK\r\n")
        line = read_line(client, buf)
        if line[:5].upper() != b"PASS ":
            raise ValueError("-ERR PASS expected\r\n")
        where = authenticate(user, line[5:].strip(), client_ip)
        if where is None:
            raise ValueError("-ERR [AUTH] Authentication failed\r\n")
        backend = socket.socket()
        try:
            backend.connect(where)  # an IP literal: gevent skips getaddrinfo
            bbuf = bytearray()
            for command in (None, b"USER %s\r\n" % user, b"PASS " + line[5:]):
                if command:
                    send(backend, command)
                reply = read_line(backend, bbuf)
                if not reply.startswith(b"+OK"):
                    raise ValueError("-ERR backend refused\r\n")
            send(client, reply + bbuf)
            if buf:
                send(backend, bytes(buf))
        except BaseException:
            backend.close()
            raise
        return backend

    def pump(src, dst) -> None:
        try:
            while data := src.recv(BUF):
                send(dst, data)
            dst.shutdown(socket.SHUT_RDWR)  # the other pump sees EOF
        except OSError:
            pass

    class WatchRelay:
        """Both directions in hub callbacks; a greenlet only to wait out a partial write."""

        def __init__(self, client, backend) -> None:
            self.socks, self.fds = (client, backend), (client.fileno(), backend.fileno())
            self.readers = (loop.io(self.fds[0], 1), loop.io(self.fds[1], 1))
            for side in (0, 1):
                self.readers[side].start(self.move, side)

        def move(self, side: int) -> None:
            try:
                data = os.read(self.fds[side], BUF)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            try:
                sent = os.write(self.fds[1 - side], data) if data else -1
            except BlockingIOError:
                sent = 0
            except OSError:
                sent = -1
            if sent < 0:
                self.close()
            elif sent < len(data):  # the peer is slow: stop reading until it has taken the rest
                self.readers[side].stop()
                gevent.spawn(self.drain, side, data[sent:])

        def drain(self, side: int, rest: bytes) -> None:
            try:
                self.socks[1 - side].sendall(rest)
                self.readers[side].start(self.move, side)
            except OSError:
                self.close()

        def close(self) -> None:
            for watcher in self.readers:
                watcher.stop()
            for sock in self.socks:
                sock.close()

    def handle(client, address) -> None:
        backend = None
        try:
            with gevent.Timeout(LOGIN_TIMEOUT):
                backend = login(client, address[0])
        except ValueError as refusal:
            with contextlib.suppress(OSError):
                send(client, str(refusal).encode())
        except (OSError, EOFError, gevent.Timeout):
            pass
        if backend is None:
            client.close()
        elif variant.endswith("-watch"):
            WatchRelay(client, backend)
        else:
            other = gevent.spawn(pump, backend, client)
            pump(client, backend)
            other.kill()
            backend.close()
            client.close()

    class Server(StreamServer):
        def do_close(self, sock, *args) -> None:
            pass  # sessions close their sockets (the watcher relay outlives its greenlet)

    stdin = loop.io(0, 1)
    stdin.start(lambda: os.read(0, 64) or os._exit(0))  # stdin closed: the orchestrator is gone
    Server((HOST, port), handle, backlog=1024).serve_forever()


# --- asyncio --------------------------------------------------------------------------


def serve_asyncio(port: int, auth_port: int, variant: str) -> None:
    import asyncio
    idle: list = []

    class AuthConn(asyncio.Protocol):
        transport, buf, waiter = None, b"", None

        def connection_made(self, transport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.buf += data
            if (end := self.buf.find(b"\r\n\r\n")) >= 0 and self.waiter is not None:
                head, self.buf = self.buf[:end + 2], self.buf[end + 4:]
                self.waiter.set_result(head)
                self.waiter = None

        def connection_lost(self, exc) -> None:
            self.transport = None
            if self in idle:
                idle.remove(self)
            if self.waiter is not None:
                self.waiter.set_exception(EOFError("auth server closed"))

    class Session(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport, self.buf, self.state, self.backend = transport, b"", "user", None
            self.timer = loop.call_later(LOGIN_TIMEOUT, transport.abort)
            transport.write(GREETING)

        def data_received(self, data: bytes) -> None:
            if self.state == "relay":
                return self.backend.transport and self.backend.transport.write(data)
            self.buf += data
            while self.state in ("user", "pass") and (end := self.buf.find(b"\n")) >= 0:
                line, self.buf = self.buf[:end + 1], self.buf[end + 1:]
                if self.state == "user" and line[:5].upper() == b"USER ":
                    self.user, self.state = line[5:].strip(), "pass"
                    self.transport.write(b"+OK\r\n")
                elif self.state == "pass" and line[:5].upper() == b"PASS ":
                    self.state = "auth"
                    loop.create_task(self.connect(line[5:].strip()))
                else:
                    self.fail(b"-ERR USER, then PASS\r\n")

        async def connect(self, password: bytes) -> None:
            try:
                conn = idle.pop() if idle else (await loop.create_connection(AuthConn, HOST, auth_port))[1]
                conn.waiter = loop.create_future()
                conn.transport.write(AUTH_REQUEST % (self.user, password, b"127.0.0.1"))
                head = await conn.waiter
                if conn.transport is not None and not conn.buf and field(head, b"Content-Length") == b"0":
                    idle.append(conn)
                elif conn.transport is not None:
                    conn.transport.close()
                where = target(head)
                if where is None:
                    return self.fail(b"-ERR [AUTH] Authentication failed\r\n")
                await loop.create_connection(lambda: Backend(self, password), *where)
            except (OSError, EOFError):
                self.fail(b"-ERR internal error\r\n")

        def relay(self, reply: bytes, leftover: bytes) -> None:
            self.timer.cancel()
            self.state = "relay"
            self.transport.write(reply + leftover)
            if self.buf:
                self.backend.transport.write(self.buf)

        def fail(self, message: bytes) -> None:
            self.state = "closed"
            if self.transport is not None:
                self.transport.write(message)
                self.transport.close()

        def connection_lost(self, exc) -> None:
            self.transport = None
            self.timer.cancel()
            if self.backend is not None and self.backend.transport is not None:
                self.backend.transport.close()

    class Backend(asyncio.Protocol):
        def __init__(self, session: Session, password: bytes) -> None:
            self.session, self.password, self.step, self.buf = session, password, 0, b""

        def connection_made(self, transport) -> None:
            self.transport, self.session.backend = transport, self
            if self.session.transport is None:
                transport.close()

        def data_received(self, data: bytes) -> None:
            client = self.session.transport
            if self.step == 3:
                return client and client.write(data)
            self.buf += data
            while self.step < 3 and (end := self.buf.find(b"\n")) >= 0:
                line, self.buf = self.buf[:end + 1], self.buf[end + 1:]
                if not line.startswith(b"+OK") or client is None:
                    self.session.fail(b"-ERR backend refused\r\n")
                    return self.transport.close()
                self.step += 1
                if self.step < 3:
                    self.transport.write(b"USER %s\r\n" % self.session.user if self.step == 1
                                         else b"PASS %s\r\n" % self.password)
                else:
                    self.session.relay(line, self.buf)

        def connection_lost(self, exc) -> None:
            self.transport = None
            if self.session.transport is not None:
                self.session.transport.close()  # after what is buffered for the client

    async def main() -> None:
        nonlocal loop
        loop = asyncio.get_running_loop()
        loop.add_reader(0, lambda: os.read(0, 64) or os._exit(0))  # stdin closed: the orchestrator is gone
        await loop.create_server(Session, HOST, port, backlog=1024)
        await asyncio.Event().wait()

    loop = None
    if variant.endswith("uvloop"):
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())


# --- the orchestrator ------------------------------------------------------------------


def measure(name: str, fakes, workdir: Path, args) -> dict:
    import procs
    port, auth = procs.free_port(), fakes.ports["auth"]
    if name in REFS:
        config = procs.render_config(auth, port, procs.free_port(), procs.free_port())
        proc = procs.Proxy(name, workdir, config, {"pop3": port}).start().proc
    else:
        with open(workdir / "serve.log", "ab") as log:
            proc = procs.spawn([procs.python(), os.path.abspath(__file__), "serve", name, str(port), str(auth)],
                               procs.PROXY_CORE, stdin=subprocess.PIPE, stdout=log, stderr=log)
    try:
        procs.wait_until(lambda: proc.poll() is not None or procs.greets(port), 30.0, f"{name} to greet")
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {(workdir / 'serve.log').read_text()[-1500:]}")
        load = procs.spawn([procs.python(), str(procs.BENCH / "loadgen.py"), "login", "--port", str(port),
                            "--proto", "pop3", "--concurrency", str(args.concurrency), "--duration", str(args.duration),
                            "--warmup", str(args.warmup), "--proxy-pid", str(proc.pid), "--load-pid", str(fakes.pid)],
                           procs.LOAD_CORE, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = load.communicate(timeout=args.duration + args.warmup + 60)
        finally:
            procs.stop(load)
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if load.returncode != 0 or not lines:
            raise RuntimeError(f"load generator failed: {err.decode()[-1500:]}")
        return json.loads(lines[-1])
    finally:
        procs.stop(proc)


def measure_quietly(name: str, fakes, workdir: Path, args) -> dict:
    """As bench/run.py: wait (60 s at most) until other processes use < 10% of a core; take a
    measurement they disturbed by more than 15% again, twice at most; keep the least disturbed."""
    from procstat import foreign_cpu_pct
    attempts: list[dict] = []
    while len(attempts) < 3 and (not attempts or attempts[-1].get("foreign_cpu_pct", 0.0) > 15.0):
        deadline = time.monotonic() + 60.0
        while foreign_cpu_pct(os.getpid(), 1.0) >= 10.0 and time.monotonic() < deadline:
            pass
        attempts.append(measure(name, fakes, workdir, args))
    return min(attempts, key=lambda r: r.get("foreign_cpu_pct", 0.0))


def summarize(runs: list[dict]) -> dict:
    def med(fn) -> float:
        values = [v for v in map(fn, runs) if v is not None]
        return statistics.median(values) if values else float("nan")
    return {
        "rate": med(lambda r: r.get("sessions_per_s")), "us": med(lambda r: r.get("proxy_cpu_us_per_session")),
        "core_us": med(lambda r: 1e6 / r["sessions_per_core_s"] if r.get("sessions_per_core_s") else None),
        "user": med(lambda r: 100 * r["proxy_user_pct"] / r["proxy_cpu_pct"] if r.get("proxy_cpu_pct") else None),
        "p50": med(lambda r: r.get("p50_ms")), "busy": med(lambda r: r.get("proxy_core_busy_pct")),
        "load": med(lambda r: r.get("load_core_busy_pct")),
        "errors": sum(r.get("errors", 0) + r.get("left_in_flight", 0) for r in runs),
        "load_bound": any((r.get("load_core_busy_pct") or 0) >= 95 and (r.get("proxy_core_busy_pct") or 0) < 90
                          for r in runs),
        "foreign": max(r.get("foreign_cpu_pct", 0.0) for r in runs),
        "samples": {k: v for r in runs for k, v in r.get("error_samples", {}).items()},
    }


def report(results: dict[str, dict], args) -> list[str]:
    def first(path: str, prefix: str, sep: str) -> str:
        return next((line.split(sep, 1)[1].strip().strip('"') for line in open(path) if line.startswith(prefix)), "?")
    versions = ", ".join(f"{m} {metadata.version(m)}" for m in ("gevent", "greenlet", "requests", "urllib3", "uvloop"))
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    nginx_v = subprocess.run(["/usr/sbin/nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
    us = {name: s.get("us") for name, s in results.items()}
    nginx = us.get("nginx")
    out = [f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
           f"Machine: {first('/proc/cpuinfo', 'model name', ':')}, {os.cpu_count()} cores, "
           f"{first('/etc/os-release', 'PRETTY_NAME=', '=')}, Linux {platform.release()}",
           f"Python {platform.python_version()}; {versions}; nginx {nginx_v}; {len(os.environ)} environment variables",
           f"mailgate: working tree of commit {git('rev-parse', '--short', 'HEAD')}, "
           f"{len(git('status', '--porcelain', '--', 'mailgate').splitlines())} changed file(s) under mailgate/",
           "Command: " + " ".join([os.path.relpath(sys.executable), os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
           f"Proxy alone on core 0, fakes + load generator on core 1; POP3 USER/PASS/QUIT, {args.concurrency} at a "
           f"time, {args.warmup:g} s warm-up + {args.duration:g} s measured; {args.rounds} round(s), medians.", "",
           f"{'proxy':22s} {'logins/s':>9s} {'CPU µs/login':>13s} {'user %':>7s} {'core µs/login':>14s} "
           f"{'vs nginx':>9s} {'p50 ms':>7s} {'errors':>7s} {'core0 %':>8s} {'core1 %':>8s}"]
    for name, s in results.items():
        if "failed" in s:
            out.append(f"{name:22s} failed: {s['failed']}")
            continue
        ratio, mark = f"{nginx / s['us']:.2f}x" if nginx else "-", "*" if s["load_bound"] else ""
        out.append(f"{name:22s} {s['rate']:9,.0f} {s['us']:13,.0f} {s['user']:7.0f} {s['core_us']:14,.0f} {ratio:>9s} "
                   f"{s['p50']:7.1f} {s['errors']:7d} {s['busy']:8.0f} {s['load']:8.0f}{mark}")
    out += ["", "CPU µs/login: user+system CPU of the proxy's processes in the window / logins completed in it (the",
            "bench's 'sessions per CPU-second' inverted); core µs/login: busy time of core 0, loopback softirq",
            "included; vs nginx: logins per CPU-second relative to nginx in this run (the target is >= 0.5x);",
            "core0/core1 %: busy; * = a round limited by the load side (core 1 >= 95%, core 0 < 90%).",
            f"Most CPU other processes used during a kept measurement: "
            f"{max(s.get('foreign', 0.0) for s in results.values()):.0f}% of a core."]
    out += [f"0.5x nginx = {2 * nginx:.0f} µs/login."] if nginx else []
    for a, b, what in (("gevent-requests", "gevent-raw", "requests.Session.get instead of the hand-built auth call"),
                       ("gevent-requests", "gevent-requests-noenv", "of which trust_env (os.environ scans)"),
                       ("gevent-raw", "gevent-raw-watch", "a pump greenlet instead of the watcher relay"),
                       ("gevent-raw-watch", "asyncio-uvloop", "gevent (watcher relay) instead of asyncio+uvloop")):
        out += [f"{what}: {us[a] - us[b]:+.0f} µs/login."] if us.get(a) and us.get(b) else []
    out += [f"{name} uses {100 * us[name] / us['mailgate']:.0f}% of mailgate's CPU per login." for name in VARIANTS[:4]
            if us.get(name) and us.get("mailgate")]
    return out + [f"{name} error samples: {s['samples']}" for name, s in results.items() if s.get("samples")]


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve = serve_gevent if sys.argv[2].startswith("gevent") else serve_asyncio
        return serve(int(sys.argv[3]), int(sys.argv[4]), sys.argv[2]) or 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--only", nargs="+", choices=REFS + VARIANTS)
    parser.add_argument("--no-refs", action="store_true", help="skip nginx and mailgate")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "login-probe.txt"))
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import procs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that the finally below runs
    os.sched_setaffinity(0, {procs.LOAD_CORE})
    names = args.only or (VARIANTS if args.no_refs else REFS + VARIANTS)
    runs: dict[str, list] = {name: [] for name in names}
    failures: dict[str, str] = {}
    workdir = Path(tempfile.mkdtemp(prefix="mailgate-login-probe-"))
    try:
        fakes = procs.Fakes(workdir).start()
        for round_, name in ((r, n) for r in range(1, args.rounds + 1) for n in names):
            try:
                runs[name].append(result := measure_quietly(name, fakes, workdir, args))
            except RuntimeError as err:
                failures[name] = str(err)[-300:]
                print(f"round {round_} {name}: FAILED {failures[name]}", flush=True)
                continue
            print(f"round {round_} {name:22s} {result.get('sessions_per_s', 0):8,.0f}/s "
                  f"{result.get('proxy_cpu_us_per_session', 0):6,.0f} µs/login  errors {result.get('errors')}"
                  f"  (others: {result.get('foreign_cpu_pct')}% of a core)", flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    results = {name: summarize(r) if r else {"failed": failures.get(name, "no result")} for name, r in runs.items()}
    text = "\n".join(report(results, args)) + "\n"
    print("\n" + text, end="")
    Path(args.out).write_text(text)
    return 0 if all("failed" not in s and s["errors"] == 0 for s in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
