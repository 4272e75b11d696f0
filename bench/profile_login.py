#!/usr/bin/env python3
"""Profile mailgate's worker under the login (or download) workload, with py-spy.

    python bench/profile_login.py [--proto pop3|imap] [--workload login|download] [--seconds 12]
                                  [--gil] [--native] [--out DIR]

Starts the fake servers and mailgate as bench/run.py does (the worker on core
0, the load on core 1), runs the login workload (50 at a time) and records
the worker with ``py-spy record --nonblocking`` meanwhile. Writes the
collapsed stacks (``<proto>-login.collapsed``), a flame graph
(``<proto>-login.svg``) and a summary (``<proto>-login.txt``): the functions
with the most samples on top of the stack (self) and anywhere on it
(inclusive), and the time by package. bench/PROFILE.md says what it found.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
import wire  # noqa: E402
from procs import BENCH, LOAD_CORE, ROOT, Fakes, Proxy  # noqa: E402
from procstat import descendants  # noqa: E402

PY_SPY = Path(procs.python()).parent / "py-spy"
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse(collapsed: Path) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            m = FRAME.match(frame)
            frames.append((m.group("func"), m.group("file")) if m else (frame, ""))
        stacks.append((frames, int(count)))
    return stacks


def package(func: str, path: str) -> str:
    if not path:
        return "no Python frame (native: libev loop, GIL, syscalls)" if not func.strip() else "native"
    top = path.split("/", 1)[0] if "/" in path else path
    names = {"mailgate": "mailgate", "gevent": "gevent", "requests": "requests", "urllib3": "urllib3",
             "http": "http.client, http.cookiejar (stdlib)", "greenlet": "greenlet", "logging": "logging (stdlib)"}
    return names.get(top, "other stdlib / other")


def short(path: str) -> str:
    for marker in ("/site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def summarize(stacks: list, top: int = 30) -> str:
    total = sum(count for _, count in stacks) or 1
    self_time: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    by_package: collections.Counter = collections.Counter()
    for frames, count in stacks:
        # py-spy lists the outermost frame first.
        leaf = frames[-1]
        self_time[(leaf[0], short(leaf[1]))] += count
        by_package[package(leaf[0], leaf[1])] += count
        for seen in {(f, short(p)) for f, p in frames}:
            incl[seen] += count
    out = [f"{total} samples", "", "Self time by package (leaf frame):"]
    for name, count in by_package.most_common():
        out.append(f"  {100.0 * count / total:5.1f}%  {name}")
    out += ["", f"Top {top} functions by self time:"]
    for (func, path), count in self_time.most_common(top):
        out.append(f"  {100.0 * count / total:5.1f}%  {func}  ({path})")
    out += ["", f"Top {top} functions by inclusive time:"]
    for (func, path), count in incl.most_common(top):
        out.append(f"  {100.0 * count / total:5.1f}%  {func}  ({path})")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proto", choices=("pop3", "imap"), default="pop3")
    parser.add_argument("--workload", choices=("login", "download"), default="login")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="include C frames (slower sampling)")
    parser.add_argument("--gil", action="store_true", help="only samples of the thread holding the GIL")
    parser.add_argument("--user", default=wire.USER)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--out", default=str(BENCH / "results" / "profile"))
    args = parser.parse_args()
    if not PY_SPY.exists():
        print("py-spy is missing: run bench/setup.sh", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {LOAD_CORE})
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{args.proto}-{args.workload}" + ("-native" if args.native else "") + ("-gil" if args.gil else "")
    workdir = Path(tempfile.mkdtemp(prefix="mailgate-profile-"))
    try:
        fakes = Fakes(workdir).start()
        ports = {"pop3": procs.free_port(), "imap": procs.free_port(), "smtp": procs.free_port()}
        config = procs.render_config(fakes.ports["auth"], ports["pop3"], ports["imap"], ports["smtp"])
        proxy = Proxy("mailgate", workdir, config, ports).start()
        workers = [pid for pid in descendants(proxy.pid) if pid != proxy.pid]
        if len(workers) != 1:
            raise RuntimeError(f"expected one worker, found {workers}")
        if args.workload == "login":
            work = ["login", "--port", str(ports[args.proto]), "--proto", args.proto, "--user", args.user,
                    "--concurrency", str(args.concurrency), "--warmup", "1", "--duration", str(args.seconds + 1)]
        else:
            # Enough data to keep the relay busy for the whole recording.
            work = ["download", "--port", str(ports[args.proto]), "--proto", args.proto, "--sessions", "8",
                    "--total-mib", str(int(600 * (args.seconds + 2))), "--time-limit", str(args.seconds + 30)]
        load = procs.spawn([procs.python(), str(BENCH / "loadgen.py"), *work, "--proxy-pid", str(proxy.pid),
                            "--load-pid", str(fakes.pid)],
                           LOAD_CORE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.0)
        for fmt, suffix in (("raw", ".collapsed"), ("flamegraph", ".svg")):
            if fmt == "flamegraph":
                # The flame graph comes from a second, shorter recording.
                seconds = max(2, int(args.seconds / 4))
            else:
                seconds = max(2, int(args.seconds * 3 / 4))
            cmd = [str(PY_SPY), "record", "--pid", str(workers[0]), "--duration", str(seconds), "--rate",
                   str(args.rate), "--nonblocking", "--format", fmt, "--output", str(out_dir / (stem + suffix))]
            if args.native:
                cmd.append("--native")
            if args.gil:
                cmd.append("--gil")
            subprocess.run(cmd, check=True, timeout=seconds + 60, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, preexec_fn=procs.pinned(LOAD_CORE))
        result, _ = load.communicate(timeout=args.seconds + 90)
        procs.stop(load)
        summary = summarize(parse(out_dir / (stem + ".collapsed")))
        what = f"login workload ({args.concurrency} at a time)" if args.workload == "login" else \
            "download workload (8 sessions, 16 MiB messages)"
        header = (f"mailgate worker, {args.proto} {what}, py-spy"
                  f" {args.rate} Hz{' --native' if args.native else ''}{' --gil' if args.gil else ''}\nload generator: {result.decode().strip()}\n\n")
        (out_dir / (stem + ".txt")).write_text(header + summary)
        print(header + summary)
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
