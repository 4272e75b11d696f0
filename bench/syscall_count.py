#!/usr/bin/env python3
"""System calls per login in each proxy's worker (strace -c), mailgate vs nginx.

    python bench/syscall_count.py [--proto pop3|imap] [--seconds 3]

Starts the fake servers and each proxy as bench/run.py does, runs the login
workload (20 at a time) and attaches ``strace -c -f`` to the worker for a
few seconds; the backend counts the sessions meanwhile. strace slows the
worker down a lot: only the counts per session mean anything here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from procs import BENCH, LOAD_CORE, Fakes, Proxy  # noqa: E402
from procstat import descendants  # noqa: E402


def backend_sessions(fakes: Fakes) -> int:
    fakes.proc.stdin.write(b"stats\n")
    fakes.proc.stdin.flush()
    line = fakes.proc.stdout.readline()
    return json.loads(line[len(b"STATS "):])["backend_sessions"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto", choices=("pop3", "imap"), default="pop3")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", default=str(BENCH / "results" / "profile"))
    args = parser.parse_args()
    if shutil.which("strace") is None:
        print("strace is missing (apt-get install strace)", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {LOAD_CORE})
    workdir = Path(tempfile.mkdtemp(prefix="mailgate-syscalls-"))
    report = [f"System calls per {args.proto} login in the proxy's worker (strace -c -f, 20 sessions at a time)", ""]
    counts: dict[str, dict[str, float]] = {}
    try:
        fakes = Fakes(workdir).start()
        ports = {"pop3": procs.free_port(), "imap": procs.free_port(), "smtp": procs.free_port()}
        config = procs.render_config(fakes.ports["auth"], ports["pop3"], ports["imap"], ports["smtp"])
        for name in ("mailgate", "nginx"):
            proxy = Proxy(name, workdir, config, ports).start()
            try:
                worker = [pid for pid in descendants(proxy.pid) if pid != proxy.pid][0]
                load = procs.spawn([procs.python(), str(BENCH / "loadgen.py"), "login", "--port", str(ports[args.proto]),
                                    "--proto", args.proto, "--concurrency", "20", "--warmup", "0",
                                    "--duration", str(args.seconds + 3)], LOAD_CORE, stdout=subprocess.DEVNULL)
                time.sleep(1.0)
                out = workdir / f"strace-{name}.txt"
                before = backend_sessions(fakes)
                tracer = procs.spawn(["strace", "-c", "-f", "-p", str(worker), "-o", str(out)], LOAD_CORE,
                                     stderr=subprocess.DEVNULL)
                time.sleep(args.seconds)
                tracer.send_signal(signal.SIGINT)
                tracer.wait(20)
                sessions = backend_sessions(fakes) - before
                load.wait(60)
            finally:
                proxy.stop()
            calls: dict[str, float] = {}
            for line in out.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
                    calls[parts[-1]] = int(parts[3]) / max(sessions, 1)
            counts[name] = calls
            report.append(f"{name}: {sessions} sessions traced, {sum(calls.values()):.1f} system calls per session")
        names = sorted(set(counts["mailgate"]) | set(counts["nginx"]),
                       key=lambda n: -max(counts["mailgate"].get(n, 0), counts["nginx"].get(n, 0)))
        report += ["", f"{'call':16s} {'mailgate':>9s} {'nginx':>9s}"]
        for call in names:
            a, b = counts["mailgate"].get(call, 0.0), counts["nginx"].get(call, 0.0)
            if max(a, b) >= 0.05:
                report.append(f"{call:16s} {a:9.2f} {b:9.2f}")
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    text = "\n".join(report) + "\n"
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.proto}-login-syscalls.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
