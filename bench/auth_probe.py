#!/usr/bin/env python3
"""CPU per auth_http exchange in mailgate's client, against a fast local server.

    .venv/bin/python bench/auth_probe.py [--calls 20000] [--greenlets 50] [--rounds 3] [--close]

A fast auth server (an asyncio protocol, no HTTP library, keep-alive,
answering every request with a fixed OK) runs in a child process pinned to
one core; this process, monkey-patched by gevent like a worker and pinned to
the other core, asks it through ``Authenticators.authenticate`` exactly as
the worker does (``gevent.Timeout`` included, if the worker still uses one),
with a POP3 USER/PASS request. It reports the process CPU (user + system,
``time.process_time``) per call and the calls per second:

* sequential: one greenlet, ``--calls`` calls in a row (one kept connection);
* concurrent: ``--greenlets`` greenlets sharing the worker's client, the same
  number of calls in all (one kept connection per greenlet).

With ``--close`` the server answers as a typical nginx-style auth script
does (HTTP/1.0, no Content-Length, then closes), so every call opens a new
connection.

Each figure is the median over ``--rounds`` rounds, after a warm-up. Only
this process's CPU is counted; the server's is in the other process.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and "--serve" not in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ANSWER = (
    b"HTTP/1.1 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 110\r\n"
    b"Content-Length: 0\r\n\r\n"
)
# --close: nginx-style, one connection per request.
ANSWER_CLOSE = b"HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: 127.0.0.1\r\nAuth-Port: 110\r\n\r\n"
CLIENT_CORE, SERVER_CORE = 0, 1


# --- the auth server (child process) ------------------------------------------------


class AuthProtocol(asyncio.Protocol):
    close = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answers = self.buffer.count(b"\r\n\r\n")
        if answers and self.close:
            self.transport.write(ANSWER_CLOSE)  # type: ignore[attr-defined]
            self.transport.close()
        elif answers:
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4 :]
            self.transport.write(ANSWER * answers)  # type: ignore[attr-defined]


async def serve(close: bool) -> None:
    AuthProtocol.close = close
    loop = asyncio.get_running_loop()
    server = await loop.create_server(AuthProtocol, "127.0.0.1", 0, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    # Ends when the parent closes our stdin (or dies).
    await loop.run_in_executor(None, sys.stdin.read)


def pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > core:  # type: ignore[operator]
        os.sched_setaffinity(0, {core})


# --- the client (this process) ------------------------------------------------------


def measure(calls: int, greenlets: int, rounds: int, port: int) -> None:
    import gevent

    from mailgate import auth
    from mailgate.auth import AuthRequest
    from mailgate.config.model import AuthHttpUrl
    from mailgate.protocol.base import Credentials
    from mailgate.worker.authenticators import Authenticators

    url = AuthHttpUrl(f"127.0.0.1:{port}/auth", "inet", "127.0.0.1", port, "/auth", "127.0.0.1")
    server = SimpleNamespace(auth_http=url, auth_http_header=(("X-Auth-Key", "secret string"),),
                             auth_http_timeout=60.0, auth_file=None)
    config = SimpleNamespace(main=SimpleNamespace(worker_connections=512), servers=[server])
    authenticators = Authenticators(config)  # type: ignore[arg-type]
    request = AuthRequest(Credentials("plain", "alice", "wonderland"), "pop3", 1, "192.0.2.7")

    def run(n: int) -> None:
        for _ in range(n):
            result = authenticators.authenticate(server, request)  # type: ignore[arg-type]
            if result.outcome != auth.OK:
                raise SystemExit(f"unexpected answer: {result}")

    def sequential() -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        run(calls)
        return time.process_time() - cpu, time.perf_counter() - wall

    def concurrent() -> tuple[float, float]:
        each = calls // greenlets
        cpu, wall = time.process_time(), time.perf_counter()
        jobs = [gevent.spawn(run, each) for _ in range(greenlets)]
        gevent.joinall(jobs, raise_error=True)
        return time.process_time() - cpu, time.perf_counter() - wall

    run(500)  # warm-up: connections, imports, caches
    gevent.joinall([gevent.spawn(run, 10) for _ in range(greenlets)], raise_error=True)
    for name, how, n in (("sequential", sequential, calls),
                         (f"{greenlets} greenlets", concurrent, calls // greenlets * greenlets)):
        cpus, rates = [], []
        for _ in range(rounds):
            cpu, wall = how()
            cpus.append(cpu / n * 1e6)
            rates.append(n / wall)
        print(f"{name:>14}: {statistics.median(cpus):7.1f} us CPU/call  {statistics.median(rates):8.0f} calls/s"
              f"   (rounds: {', '.join(f'{c:.1f}' for c in cpus)} us)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--greenlets", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--close", action="store_true", help="the server closes after each answer")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        pin(SERVER_CORE)
        asyncio.run(serve(args.close))
        return 0
    server_argv = [sys.executable, __file__, "--serve"] + (["--close"] if args.close else [])
    child = subprocess.Popen(server_argv, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())  # type: ignore[union-attr]
        pin(CLIENT_CORE)
        print(f"python {sys.version.split()[0]}, {args.calls} calls, {args.rounds} rounds, "
              f"{'a new connection per call' if args.close else 'keep-alive'}, "
              f"client on core {CLIENT_CORE}, server on core {SERVER_CORE}", flush=True)
        measure(args.calls, args.greenlets, args.rounds, port)
    finally:
        child.stdin.close()  # type: ignore[union-attr]
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
