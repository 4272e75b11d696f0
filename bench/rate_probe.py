#!/usr/bin/env python3
"""CPU per login of mailgate and nginx at the same login rate, not only at full load.

    python bench/rate_probe.py [--rounds 3] [--duration 4] [--fraction 0.8]

The pop3-login workload keeps 50 sessions in flight and lets each proxy go as
fast as it can: nginx then runs with its load generator, auth server and
backend busy all the time, mailgate (four to seven times slower per login)
with them mostly idle. On a virtual machine the difference costs: a send to a
peer that sleeps on another core wakes it (an inter-processor interrupt,
taken by the hypervisor), a send to a peer already running does not. So
"sessions per CPU-second at full load" compares nginx's cheapest operating
point with mailgate's dearest.

This probe measures, in each round, both proxies at full load (closed loop,
50 at a time) and then both paced at the same rate (``--fraction`` of
mailgate's full-load rate in that round, at most 50 in flight), and reports
CPU per login of each. Pinning, fakes and CPU accounting are bench/run.py's.
Results: bench/results/rate-probe.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from procs import BENCH, LOAD_CORE, Fakes, Proxy  # noqa: E402
from procstat import foreign_cpu_pct  # noqa: E402

PROXIES = ("mailgate", "nginx")


def measure(name: str, fakes: Fakes, workdir: Path, args, rate: float = 0.0) -> dict:
    """One login measurement of ``name``; closed loop, or paced at ``rate``."""
    deadline = time.monotonic() + 30.0
    while foreign_cpu_pct(os.getpid(), 1.0) >= 10.0 and time.monotonic() < deadline:
        pass  # let another process on the machine finish its burst first
    ports = {"pop3": procs.free_port(), "imap": procs.free_port(), "smtp": procs.free_port()}
    config = procs.render_config(fakes.ports["auth"], ports["pop3"], ports["imap"], ports["smtp"])
    proxy = Proxy(name, workdir, config, ports).start()
    try:
        argv = [procs.python(), str(BENCH / "loadgen.py"), "login", "--port", str(ports["pop3"]), "--proto", "pop3",
                "--concurrency", "50", "--warmup", "1", "--duration", str(args.duration),
                "--proxy-pid", str(proxy.pid), "--load-pid", str(fakes.pid)]
        if rate:
            argv += ["--rate", f"{rate:.0f}"]
        load = procs.spawn(argv, LOAD_CORE, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = load.communicate(timeout=args.duration + 60)
        finally:
            procs.stop(load)
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if load.returncode != 0 or not lines:
            raise RuntimeError(f"load generator failed: {err.decode()[-1500:]}")
        result = json.loads(lines[-1])
    finally:
        proxy.stop()
    how = f"paced at {rate:,.0f}/s" if rate else "full load"
    print(f"  {name:8s} {how:18s} {result['sessions_per_s']:8,.0f} logins/s  "
          f"{result.get('proxy_cpu_us_per_session', float('nan')):6.0f} us CPU/login  "
          f"load core {result['load_core_busy_pct']:.0f}%  errors {result['errors']}"
          f"{'  skipped ' + str(result['skipped']) if result.get('skipped') else ''}", flush=True)
    return result


def median(runs: list[dict], key: str) -> float:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--fraction", type=float, default=0.8, help="paced rate / mailgate's full-load rate")
    parser.add_argument("--out", default=str(BENCH / "results" / "rate-probe.txt"))
    args = parser.parse_args()
    os.sched_setaffinity(0, {LOAD_CORE})
    workdir = Path(tempfile.mkdtemp(prefix="mailgate-rateprobe-"))
    full: dict[str, list[dict]] = {name: [] for name in PROXIES}
    paced: dict[str, list[dict]] = {name: [] for name in PROXIES}
    rates: list[float] = []
    try:
        fakes = Fakes(workdir).start()
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}", flush=True)
            for name in PROXIES:
                full[name].append(measure(name, fakes, workdir, args))
            rate = args.fraction * full["mailgate"][-1]["sessions_per_s"]
            rates.append(rate)
            for name in PROXIES:
                paced[name].append(measure(name, fakes, workdir, args, rate))
    finally:
        procs.stop_all()
    text = report(full, paced, rates, args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


def report(full: dict, paced: dict, rates: list[float], args) -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=BENCH).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    lines = [
        "bench/rate_probe.py: CPU per POP3 login (USER/PASS/QUIT) at full load and at the same paced rate",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {cpu}, {os.cpu_count()} cores; "
        f"mailgate at {head}",
        f"{args.rounds} rounds of {args.duration:g} s; paced rate = {args.fraction:g} x mailgate's full-load rate "
        f"of the round (median {statistics.median(rates):,.0f}/s), at most 50 in flight; medians over rounds.",
        "",
        f"{'proxy':10s} {'full load: logins/s':>20s} {'us CPU/login':>13s} {'load core %':>12s}"
        f" {'paced: logins/s':>16s} {'us CPU/login':>13s} {'load core %':>12s}",
    ]
    for name in PROXIES:
        lines.append(
            f"{name:10s} {median(full[name], 'sessions_per_s'):20,.0f} "
            f"{median(full[name], 'proxy_cpu_us_per_session'):13.0f} {median(full[name], 'load_core_busy_pct'):12.0f}"
            f" {median(paced[name], 'sessions_per_s'):16,.0f} {median(paced[name], 'proxy_cpu_us_per_session'):13.0f}"
            f" {median(paced[name], 'load_core_busy_pct'):12.0f}")
    ratios = {
        kind: statistics.median(n["proxy_cpu_us_per_session"] / m["proxy_cpu_us_per_session"]
                                for m, n in zip(runs["mailgate"], runs["nginx"]))
        for kind, runs in (("full", full), ("paced", paced))
    }
    lines += [
        "",
        "mailgate/nginx in logins per CPU-second (median of per-round ratios):",
        f"  each at full load:       {ratios['full']:.2f}x",
        f"  both at the same rate:   {ratios['paced']:.2f}x",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
