#!/usr/bin/env python3
"""Where mailgate's memory per idle IMAP session goes (tracemalloc).

    python bench/memory_probe.py [--sessions 5000] [--out bench/results/profile/imap-idle-memory.txt]

Starts the fake servers and mailgate as bench/run.py does, with
bench/memprobe on PYTHONPATH so that the worker traces its Python
allocations (tracemalloc) from when it starts serving. Takes a snapshot
after a few logins, holds ``--sessions`` logged-in IMAP sessions, takes
another, and writes the difference grouped by source line and by the
outermost mailgate frame, next to the PSS growth per session (what
tracemalloc cannot see, such as libev watchers and the kernel's socket
structures, is the rest).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from procs import BENCH, LOAD_CORE, Fakes, Proxy  # noqa: E402
from procstat import descendants, pss_kib  # noqa: E402
from run import read_tagged  # noqa: E402


def snapshot(prefix: str, n: int, timeout: float = 120.0) -> tracemalloc.Snapshot:
    Path(f"{prefix}.{n}").touch()
    path = Path(f"{prefix}.{n}.snap")
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the worker wrote no snapshot")
        time.sleep(0.1)
    return tracemalloc.Snapshot.load(str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--out", default=str(BENCH / "results" / "profile" / "imap-idle-memory.txt"))
    args = parser.parse_args()
    os.sched_setaffinity(0, {LOAD_CORE})
    workdir = Path(tempfile.mkdtemp(prefix="mailgate-memprobe-"))
    prefix = str(workdir / "trigger")
    os.environ["MAILGATE_BENCH_TRACEMALLOC"] = prefix
    os.environ["PYTHONPATH"] = str(BENCH / "memprobe") + os.pathsep + os.environ.get("PYTHONPATH", "")
    try:
        fakes = Fakes(workdir).start()
        ports = {"pop3": procs.free_port(), "imap": procs.free_port(), "smtp": procs.free_port()}
        config = procs.render_config(fakes.ports["auth"], ports["pop3"], ports["imap"], ports["smtp"])
        proxy = Proxy("mailgate", workdir, config, ports).start()
        base_argv = [procs.python(), str(BENCH / "loadgen.py")]
        warm = procs.spawn(base_argv + ["login", "--port", str(ports["imap"]), "--proto", "imap", "--concurrency",
                                        "20", "--duration", "0.5", "--warmup", "0"], LOAD_CORE,
                           stdout=subprocess.DEVNULL)
        warm.wait(60)
        time.sleep(0.5)
        before = snapshot(prefix, 0)
        pss_before = pss_kib(descendants(proxy.pid))
        gen = procs.spawn(base_argv + ["idle", "--port", str(ports["imap"]), "--sessions", str(args.sessions),
                                       "--concurrency", "100", "--hold", "0.5"],
                          LOAD_CORE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        ready = read_tagged(gen, "READY", 300.0)
        time.sleep(0.5)
        pss_after = pss_kib(descendants(proxy.pid))
        after = snapshot(prefix, 1)
        gen.stdin.write(b"close\n")
        gen.stdin.flush()
        procs.stop(gen)
        alive = ready["alive"] or 1
        lines = [f"mailgate, {ready['alive']} of {args.sessions} idle IMAP sessions alive",
                 f"PSS growth: {(pss_after - pss_before) / alive:.1f} KiB per session"
                 " (tracemalloc's own bookkeeping included: compare with bench/results/latest.md)"]
        stats = after.compare_to(before, "lineno")
        traced = sum(s.size_diff for s in stats)
        lines.append(f"Python allocations traced: {traced / 1024 / alive:.1f} KiB per session,"
                     f" {sum(s.count_diff for s in stats) / alive:.1f} blocks per session")
        lines += ["", "By source line (KiB per session, blocks per session):"]
        for stat in stats[:30]:
            frame = stat.traceback[0]
            name = frame.filename.split("site-packages/")[-1].split("/work/main/")[-1]
            lines.append(f"  {stat.size_diff / 1024 / alive:7.2f}  {stat.count_diff / alive:6.2f}  {name}:{frame.lineno}")
        # Which mailgate code path allocated it: the innermost mailgate frame.
        by_caller: dict[str, list[int]] = {}
        for stat in after.compare_to(before, "traceback"):
            where = "(no mailgate frame)"
            for frame in stat.traceback:  # innermost first
                if "/mailgate/" in frame.filename and "/bench/" not in frame.filename:
                    where = frame.filename.split("/work/main/")[-1] + f":{frame.lineno}"
                    break
            entry = by_caller.setdefault(where, [0, 0])
            entry[0] += stat.size_diff
            entry[1] += stat.count_diff
        lines += ["", "By the innermost mailgate frame that led to the allocation (KiB per session):"]
        for where, (size, count) in sorted(by_caller.items(), key=lambda kv: -kv[1][0])[:25]:
            lines.append(f"  {size / 1024 / alive:7.2f}  {count / alive:6.2f}  {where}")
        text = "\n".join(lines) + "\n"
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(text)
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
