"""Load generator: mail clients that log in, idle, download and upload.

Modes (each prints one JSON object on stdout; ``idle`` prints two):

* ``login``: ``--concurrency`` sessions at a time, each a full POP3
  USER/PASS/QUIT or IMAP LOGIN/LOGOUT, a new one as soon as one ends, for
  ``--warmup`` + ``--duration`` seconds; sessions that end within the
  measured window count. asyncio protocols (uvloop when installed). With
  ``--rate R``, sessions start at R per second instead (at most
  ``--concurrency`` in flight; a start that finds them all busy is skipped
  and counted), so two proxies can be compared doing the same work.
* ``idle``: ``--sessions`` IMAP sessions logged in (``--concurrency`` logins
  in flight) and held; then every session sends NOOP and must get its OK
  back through the proxy. Prints ``READY {...}``, waits for a line on stdin
  (the orchestrator measures the proxy's memory meanwhile), closes all and
  prints ``DONE {...}``.
* ``download``: ``--sessions`` threads log in (POP3 or IMAP) and then RETR /
  FETCH 16 MiB messages until ``--total-mib`` have come through.
* ``upload``: ``--sessions`` threads log in with SMTP AUTH PLAIN and send
  ``--message-mib`` messages (MAIL, RCPT, DATA) until ``--total-mib``.

CPU of the proxy (``--proxy-pid`` and its descendants), of the load side
(this process and ``--load-pid``) and of both cores is sampled at the edges
of the measured window. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wire  # noqa: E402
import zerocopy  # noqa: E402
from procstat import Sampler  # noqa: E402

try:
    import uvloop
except ImportError:
    uvloop = None

HOST = "127.0.0.1"
IO_TIMEOUT = 60.0


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[index]


# --- scripted sessions (asyncio) ------------------------------------------------------

# A script is a list of (bytes to send or None, prefix the awaited line starts with).
# Lines starting with the script's ``skip`` prefix (IMAP untagged data) are passed over.


def login_script(proto: str, user: str) -> tuple[list, list, bytes | None]:
    """(login steps, logout steps, skip prefix)."""
    if proto == "pop3":
        login = [(None, b"+OK"), (b"USER %s\r\n" % user.encode(), b"+OK"),
                 (b"PASS %s\r\n" % wire.PASSWORD.encode(), b"+OK")]
        return login, [(b"QUIT\r\n", b"+OK")], None
    login = [(None, b"* OK"), (b"a1 LOGIN %s %s\r\n" % (user.encode(), wire.PASSWORD.encode()), b"a1 OK")]
    return login, [(b"a2 LOGOUT\r\n", b"a2 OK")], b"* "


class Client(asyncio.Protocol):
    """Runs ``steps`` over one connection and tells ``owner`` how it went."""

    __slots__ = ("owner", "steps", "step", "skip", "buf", "transport", "t0", "over", "close_at_end")

    def __init__(self, owner, steps: list, skip: bytes | None, close_at_end: bool) -> None:
        self.owner = owner
        self.steps = steps
        self.step = 0
        self.skip = skip
        self.buf = b""
        self.transport = None
        self.t0 = time.perf_counter()
        self.over = False
        self.close_at_end = close_at_end

    def connection_made(self, transport) -> None:
        self.transport = transport
        first = self.steps[0][0]
        if first:
            transport.write(first)

    def run_steps(self, steps: list) -> None:
        """Go on with more steps on a held session."""
        self.steps, self.step, self.over = steps, 0, False
        self.t0 = time.perf_counter()
        self.transport.write(steps[0][0])

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while not self.over:
            end = buf.find(b"\n")
            if end < 0:
                break
            line, buf = buf[:end + 1], buf[end + 1:]
            expect = self.steps[self.step][1]
            if line.startswith(expect):
                self.step += 1
                if self.step == len(self.steps):
                    self._end(True, None)
                    break
                self.transport.write(self.steps[self.step][0])
            elif self.skip is not None and line.startswith(self.skip):
                continue
            else:
                self._end(False, line[:80].decode("latin-1").strip())
                break
        self.buf = buf

    def connection_lost(self, exc) -> None:
        self.transport = None
        if not self.over:
            self.over = True
            self.owner.ended(self, False, f"connection lost ({exc})" if exc else "connection closed")

    def _end(self, ok: bool, error: str | None) -> None:
        self.over = True
        if self.close_at_end or not ok:
            self.transport.close()
        self.owner.ended(self, ok, error)


class LoginRun:
    def __init__(self, args) -> None:
        self.args = args
        login, logout, self.skip = login_script(args.proto, args.user)
        self.steps = login + logout
        self.loop = asyncio.get_running_loop()
        self.latencies: list[float] = []
        self.in_flight = 0
        self.completed = 0
        self.errors = 0
        self.error_samples: dict[str, int] = {}
        self.all_done = asyncio.Event()
        self.window = (0.0, 0.0)
        self.stop_at = 0.0
        self.skipped = 0  # paced starts that found --concurrency sessions in flight

    def start_one(self) -> None:
        self.in_flight += 1
        self.loop.create_task(self._open())

    async def _open(self) -> None:
        client = Client(self, self.steps, self.skip, True)
        try:
            await self.loop.create_connection(lambda: client, HOST, self.args.port)
        except OSError as err:
            if not client.over:
                client.over = True
                self.ended(client, False, f"connect: {err.strerror or err}")

    def ended(self, client: Client, ok: bool, error: str | None) -> None:
        now = time.perf_counter()
        self.in_flight -= 1
        if self.window[0] <= now <= self.window[1]:
            if ok:
                self.completed += 1
                self.latencies.append(now - client.t0)
            else:
                self.errors += 1
        if not ok:
            key = error or "?"
            if len(self.error_samples) < 10 or key in self.error_samples:
                self.error_samples[key] = self.error_samples.get(key, 0) + 1
        if now < self.stop_at and not self.args.rate:
            if not ok:
                # Do not spin on a refused connection: back off a little.
                self.in_flight += 1
                self.loop.call_later(0.01, self._restart)
            else:
                self.start_one()
        elif self.in_flight == 0:
            self.all_done.set()

    def _restart(self) -> None:
        self.in_flight -= 1
        self.start_one()

    async def run(self, sampler: Sampler) -> dict:
        args = self.args
        start = time.perf_counter()
        self.window = (start + args.warmup, start + args.warmup + args.duration)
        self.stop_at = self.window[1]
        if args.rate:
            self.loop.create_task(self._pace(start))
        else:
            for _ in range(args.concurrency):
                self.start_one()
        await asyncio.sleep(args.warmup)
        before = sampler.snapshot()
        await asyncio.sleep(max(0.0, self.window[1] - time.perf_counter()))
        after = sampler.snapshot()
        try:
            await asyncio.wait_for(self.all_done.wait(), 10.0)
        except asyncio.TimeoutError:
            pass
        cpu = sampler.delta(before, after)
        rate = self.completed / args.duration
        result = {
            "sessions": self.completed,
            "errors": self.errors,
            "error_samples": self.error_samples,
            "sessions_per_s": round(rate, 1),
            "p50_ms": _ms(percentile(self.latencies, 50)),
            "p90_ms": _ms(percentile(self.latencies, 90)),
            "p99_ms": _ms(percentile(self.latencies, 99)),
            "max_ms": _ms(max(self.latencies) if self.latencies else None),
            "left_in_flight": self.in_flight,
            **({"paced_per_s": args.rate, "skipped": self.skipped} if args.rate else {}),
            **cpu,
        }
        if cpu["proxy_cpu_s"] > 0 and self.completed:
            result["proxy_cpu_us_per_session"] = round(1e6 * cpu["proxy_cpu_s"] / self.completed, 1)
            result["sessions_per_cpu_s"] = round(self.completed / cpu["proxy_cpu_s"], 1)
        if cpu["proxy_core_busy_s"] and self.completed:
            # The proxy's whole core: its processes plus the kernel's loopback
            # work (softirq) done on that core, which no process is charged.
            result["sessions_per_core_s"] = round(self.completed / cpu["proxy_core_busy_s"], 1)
        return result

    async def _pace(self, start: float) -> None:
        """Start sessions at --rate per second until the window ends."""
        started = 0
        while (now := time.perf_counter()) < self.stop_at:
            due = int((now - start) * self.args.rate) - started
            while due > 0 and self.in_flight < self.args.concurrency:
                self.start_one()
                started += 1
                due -= 1
            if due > 0:
                if now >= self.window[0]:
                    self.skipped += due
                started += due
            await asyncio.sleep(0.001)
        if self.in_flight == 0:
            self.all_done.set()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 2)


# --- idle sessions --------------------------------------------------------------


class IdleRun:
    def __init__(self, args) -> None:
        self.args = args
        self.login, _, self.skip = login_script("imap", args.user)
        self.loop = asyncio.get_running_loop()
        self.held: list[Client] = []
        self.failed = 0
        self.error_samples: dict[str, int] = {}
        self.pending = 0
        self.to_open = args.sessions
        self.phase_done = asyncio.Event()
        self.phase = "open"
        self.noop_ok = 0
        self.noop_failed = 0
        self.lost_while_held = 0

    def _open_next(self) -> None:
        while self.to_open > 0 and self.pending < self.args.concurrency:
            self.to_open -= 1
            self.pending += 1
            self.loop.create_task(self._open())

    async def _open(self) -> None:
        client = Client(self, self.login, self.skip, False)
        try:
            await self.loop.create_connection(lambda: client, HOST, self.args.port)
        except OSError as err:
            if not client.over:
                client.over = True
                self.ended(client, False, f"connect: {err.strerror or err}")

    def _note(self, error: str | None) -> None:
        key = error or "?"
        if len(self.error_samples) < 10 or key in self.error_samples:
            self.error_samples[key] = self.error_samples.get(key, 0) + 1

    def ended(self, client: Client, ok: bool, error: str | None) -> None:
        if self.phase == "open":
            self.pending -= 1
            if ok:
                self.held.append(client)
            else:
                self.failed += 1
                self._note(error)
            self._open_next()
            if self.pending == 0 and self.to_open == 0:
                self.phase_done.set()
        elif self.phase == "noop":
            if ok:
                self.noop_ok += 1
            else:
                self.noop_failed += 1
                self._note(error)
            if self.noop_ok + self.noop_failed >= self.noop_expected:
                self.phase_done.set()
        elif not ok:
            self.lost_while_held += 1

    async def run(self, sampler: Sampler) -> None:
        args = self.args
        start = time.perf_counter()
        before = sampler.snapshot()
        self._open_next()
        try:
            await asyncio.wait_for(self.phase_done.wait(), args.open_timeout)
        except asyncio.TimeoutError:
            pass
        opened_at = time.perf_counter()
        after = sampler.snapshot()
        self.phase = "held"
        await asyncio.sleep(args.hold)
        # Every held session must still answer, through the proxy.
        self.phase, self.phase_done = "noop", asyncio.Event()
        live = [c for c in self.held if c.transport is not None]
        self.noop_expected = len(live)
        noop = [(b"n1 NOOP\r\n", b"n1 OK")]
        for client in live:
            client.run_steps(noop)
        if live:
            try:
                await asyncio.wait_for(self.phase_done.wait(), 60.0)
            except asyncio.TimeoutError:
                pass
        self.phase = "held"
        open_s = opened_at - start
        report = {
            "requested": args.sessions,
            "opened": len(self.held),
            "failed": self.failed,
            "alive": self.noop_ok,
            "noop_failed": self.noop_failed,
            "open_s": round(open_s, 2),
            "logins_per_s": round(len(self.held) / open_s, 1) if open_s > 0 else None,
            "error_samples": self.error_samples,
            "open_cpu": sampler.delta(before, after),
        }
        print("READY " + json.dumps(report), flush=True)
        # Hold until told (or until the orchestrator is gone).
        await self.loop.run_in_executor(None, sys.stdin.readline)
        for client in self.held:
            if client.transport is not None:
                client.over = True
                client.transport.abort()
        print("DONE " + json.dumps({"lost_while_held": self.lost_while_held}), flush=True)


# --- bulk (threads, blocking sockets) ----------------------------------------------------


class Line:
    """Blocking line reader that hands over what it read ahead."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end + 1])
                del self.buf[:end + 1]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the proxy")
            self.buf += chunk

    def expect(self, prefix: bytes, skip: bytes | None = None) -> bytes:
        while True:
            line = self.line()
            if line.startswith(prefix):
                return line
            if skip is not None and line.startswith(skip):
                continue
            raise ConnectionError(f"unexpected reply {line[:80]!r}, wanted {prefix!r}")

    def smtp_reply(self, code: bytes) -> None:
        while True:
            line = self.line()
            if not line.startswith(code):
                raise ConnectionError(f"unexpected reply {line[:80]!r}, wanted {code!r}")
            if line[3:4] != b"-":
                return

    def skip(self, size: int, tail_len: int) -> bytes:
        return zerocopy.skip(self.sock, self.buf, size, tail_len)


def _connect(port: int) -> tuple[socket.socket, Line]:
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, Line(sock)


def download_session(args, count: int, barrier: threading.Barrier, out: dict) -> None:
    user = wire.BULK_PREFIX + "-dl"
    try:
        sock, r = _connect(args.port)
        with sock:
            if args.proto == "pop3":
                r.expect(b"+OK")
                sock.sendall(b"USER %s\r\n" % user.encode())
                r.expect(b"+OK")
                sock.sendall(b"PASS %s\r\n" % wire.PASSWORD.encode())
                r.expect(b"+OK")
                reply = len(b"+OK %d octets\r\n" % wire.DOWNLOAD_MESSAGE) + wire.DOWNLOAD_MESSAGE
                barrier.wait(IO_TIMEOUT)
                for _ in range(count):
                    sock.sendall(b"RETR 1\r\n")
                    tail = r.skip(reply + 3, 5)
                    if tail != b"\r\n.\r\n":
                        raise ConnectionError(f"RETR reply ends with {tail!r}")
                    out["bytes"] += wire.DOWNLOAD_MESSAGE
                sock.sendall(b"QUIT\r\n")
                r.expect(b"+OK")
            else:
                r.expect(b"* OK")
                sock.sendall(b"a1 LOGIN %s %s\r\n" % (user.encode(), wire.PASSWORD.encode()))
                r.expect(b"a1 OK", b"* ")
                head = len(b"* 1 FETCH (BODY[] {%d}\r\n" % wire.DOWNLOAD_MESSAGE)
                barrier.wait(IO_TIMEOUT)
                for i in range(count):
                    tag = b"f%d" % i
                    done = wire.imap_fetch_done(tag)
                    sock.sendall(tag + b" FETCH 1 BODY[]\r\n")
                    size = head + wire.DOWNLOAD_MESSAGE + 3 + len(done)
                    tail = r.skip(size, len(done))
                    if tail != done:
                        raise ConnectionError(f"FETCH reply ends with {tail!r}")
                    out["bytes"] += wire.DOWNLOAD_MESSAGE
                sock.sendall(b"a2 LOGOUT\r\n")
                r.expect(b"a2 OK", b"* ")
    except (OSError, ConnectionError, threading.BrokenBarrierError) as err:
        out["errors"].append(str(err)[:200])
        barrier.abort()


def upload_session(args, count: int, barrier: threading.Barrier, out: dict) -> None:
    data_fd, size = out["message"]
    mail = b"MAIL FROM:<bench@example.org> SIZE=%d\r\n" % size  # the sink drops exactly this much (RFC 1870)
    try:
        sock, r = _connect(args.port)
        with sock:
            r.smtp_reply(b"220")
            sock.sendall(b"EHLO loadgen.bench\r\n")
            r.smtp_reply(b"250")
            sock.sendall(wire.smtp_auth_plain(wire.BULK_PREFIX + "-ul", wire.PASSWORD))
            r.smtp_reply(b"235")
            barrier.wait(IO_TIMEOUT)
            for _ in range(count):
                sock.sendall(mail)
                r.smtp_reply(b"250")
                sock.sendall(b"RCPT TO:<sink@example.org>\r\n")
                r.smtp_reply(b"250")
                sock.sendall(b"DATA\r\n")
                r.smtp_reply(b"354")
                zerocopy.send_file(sock, data_fd, size)
                r.smtp_reply(b"250")
                out["bytes"] += size - 3
            sock.sendall(b"QUIT\r\n")
            r.smtp_reply(b"221")
    except (OSError, ConnectionError, threading.BrokenBarrierError) as err:
        out["errors"].append(str(err)[:200])
        barrier.abort()


def run_bulk(args, sampler: Sampler) -> dict:
    if args.mode == "download":
        message = wire.DOWNLOAD_MESSAGE
        target = download_session
    else:
        message = args.message_mib * wire.MIB
        target = upload_session
    total = args.total_mib * wire.MIB
    per_session = max(1, total // message // args.sessions)
    marks: dict = {}

    def started() -> None:
        marks["t0"] = time.perf_counter()
        marks["before"] = sampler.snapshot()

    barrier = threading.Barrier(args.sessions, action=started)
    outs = []
    threads = []
    shared_message = None
    if args.mode == "upload":
        data = wire.smtp_data(message)
        shared_message = (zerocopy.memfile(data), len(data))
    for _ in range(args.sessions):
        out = {"bytes": 0, "errors": [], "message": shared_message}
        outs.append(out)
        threads.append(threading.Thread(target=target, args=(args, per_session, barrier, out), daemon=True))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + args.time_limit
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    t1 = time.perf_counter()
    after = sampler.snapshot()
    moved = sum(out["bytes"] for out in outs)
    errors = [e for out in outs for e in out["errors"]]
    unfinished = sum(thread.is_alive() for thread in threads)
    result = {"sessions": args.sessions, "message_mib": message / wire.MIB, "bytes": moved,
              "errors": len(errors) + unfinished, "error_samples": errors[:5], "unfinished": unfinished}
    if "t0" in marks:
        wall = t1 - marks["t0"]
        result["mib_per_s"] = round(moved / wire.MIB / wall, 1)
        cpu = sampler.delta(marks["before"], after)
        result.update(cpu)
        if cpu["proxy_cpu_s"] > 0 and moved:
            result["proxy_cpu_ms_per_gib"] = round(1e3 * cpu["proxy_cpu_s"] / (moved / (1 << 30)), 1)
        if cpu["proxy_core_busy_s"] and moved:
            result["proxy_core_ms_per_gib"] = round(1e3 * cpu["proxy_core_busy_s"] / (moved / (1 << 30)), 1)
    return result


# --- main ----------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("login", "idle", "download", "upload"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--proto", choices=("pop3", "imap", "smtp"), default="pop3")
    parser.add_argument("--user", default=wire.USER)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rate", type=float, default=0.0, help="login: sessions started per second (0: closed loop)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--hold", type=float, default=1.0)
    parser.add_argument("--open-timeout", type=float, default=120.0)
    parser.add_argument("--total-mib", type=int, default=1024)
    parser.add_argument("--message-mib", type=int, default=4)
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--proxy-pid", type=int, default=0)
    parser.add_argument("--load-pid", type=int, action="append", default=[])
    args = parser.parse_args()
    raise_nofile()
    sampler = Sampler(args.proxy_pid or None, args.load_pid)

    if args.mode in ("download", "upload"):
        print(json.dumps(run_bulk(args, sampler)), flush=True)
        return
    if uvloop is not None:
        uvloop.install()

    async def go() -> None:
        if args.mode == "login":
            print(json.dumps(await LoginRun(args).run(sampler)), flush=True)
        else:
            await IdleRun(args).run(sampler)

    asyncio.run(go())


if __name__ == "__main__":
    main()
