#!/usr/bin/env python3
"""mailgate vs nginx's mail proxy, side by side, in one run.

    python bench/run.py [--quick] [--only WORKLOAD ...] [--rounds N] [--out bench/results/latest.json]

Both proxies run the same nginx-syntax configuration (bench/procs.py), one
worker each, pinned to core 0; the load generator, the auth server and the
backends (bench/loadgen.py, bench/fakes.py) are pinned to core 1. Each
measurement starts its proxy afresh, rounds alternate mailgate, nginx,
mailgate, nginx... and every ratio is the median of the per-round ratios
mailgate/nginx. The CPU of both sides is reported with every figure, so a
figure limited by the load side says so. Results go to the JSON file given
with --out and a markdown table next to it (same name, .md).

Workloads: pop3-login, imap-login, pop3-slow-auth, imap-idle, download,
smtp-upload (see WORKLOADS below). Run bench/setup.sh once first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import platform
import selectors
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
import report  # noqa: E402
import wire  # noqa: E402
from procs import BENCH, LOAD_CORE, PROXY_CORE, ROOT, Fakes, Proxy  # noqa: E402
from procstat import descendants, foreign_cpu_pct, pss_kib, rss_kib  # noqa: E402

PROXIES = ("mailgate", "nginx")

# The machine may be shared: before each measurement wait (at most QUIET_WAIT
# seconds) until other processes use less than QUIET_BELOW % of a core; a
# measurement during which they used more than DISTURBED % of a core is taken
# again (at most RETRIES more times) and the least disturbed attempt is kept.
QUIET_BELOW = 10.0
QUIET_WAIT = 20.0
DISTURBED = 15.0
RETRIES = 2
WORKLOADS = ("pop3-login", "imap-login", "pop3-slow-auth", "imap-idle", "download", "smtp-upload")


@dataclass
class Plan:
    rounds: int
    login_duration: float
    login_warmup: float
    idle_levels: tuple[int, ...]
    idle_rounds: int
    bulk_mib: int
    bulk_sessions: int = 8
    # Each 4 MiB message costs four round trips through the proxy (MAIL, RCPT,
    # DATA, the final dot), which bound a session: with 8 sessions neither
    # proxy's core was busy (nginx 70%, mailgate 55%) and the figure measured
    # those round trips. With 32, nginx's core is saturated (90% and more), so
    # the upload measures relay throughput as the downloads do with 8.
    upload_sessions: int = 32
    upload_message_mib: int = 4
    login_concurrency: int = 50
    slow_concurrency: int = 100
    idle_concurrency: int = 100
    extra: dict = field(default_factory=dict)


def full_plan(rounds: int) -> Plan:
    return Plan(rounds=rounds, login_duration=4.0, login_warmup=1.0, idle_levels=(1000, 5000, 9500),
                idle_rounds=min(rounds, 2), bulk_mib=1024)


def quick_plan(rounds: int) -> Plan:
    return Plan(rounds=rounds, login_duration=1.5, login_warmup=0.5, idle_levels=(1000,), idle_rounds=rounds,
                bulk_mib=256)


# --- running the load generator ----------------------------------------------------


def loadgen_argv(mode: str, port: int, proxy: Proxy, fakes: Fakes, *options: str) -> list[str]:
    return [procs.python(), str(BENCH / "loadgen.py"), mode, "--port", str(port), "--proxy-pid", str(proxy.pid),
            "--load-pid", str(fakes.pid), *options]


def run_loadgen(argv: list[str], timeout: float) -> dict:
    proc = procs.spawn(argv, LOAD_CORE, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        raise RuntimeError(f"load generator timed out after {timeout:g}s: {' '.join(argv[2:4])}") from None
    finally:
        procs.stop(proc)
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {err.decode()[-1500:]}")
    return json.loads(lines[-1])


def read_tagged(proc: subprocess.Popen, tag: str, timeout: float) -> dict:
    """The JSON after ``tag`` on a line of ``proc``'s stdout, waiting at most ``timeout``."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while time.monotonic() < deadline:
            if not selector.select(max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            for line in buf.split(b"\n")[:-1]:
                if line.startswith(tag.encode() + b" "):
                    return json.loads(line[len(tag) + 1:])
    finally:
        selector.close()
    raise RuntimeError(f"no {tag} from the load generator within {timeout:g}s")


def worker_fds(pid: int) -> int:
    total = 0
    for child in descendants(pid):
        try:
            total += len(os.listdir(f"/proc/{child}/fd"))
        except OSError:
            pass
    return total


# --- workloads -----------------------------------------------------------------------


def login(proxy: Proxy, fakes: Fakes, plan: Plan, proto: str, concurrency: int, user: str) -> dict:
    proxy.start()
    try:
        port = proxy.ports[proto]
        result = run_loadgen(loadgen_argv(
            "login", port, proxy, fakes, "--proto", proto, "--user", user, "--concurrency", str(concurrency),
            "--duration", str(plan.login_duration), "--warmup", str(plan.login_warmup)),
            timeout=plan.login_duration + plan.login_warmup + 60)
        result["errors_logged"] = proxy.errors_logged()
        return result
    finally:
        proxy.stop()


def idle(proxy: Proxy, fakes: Fakes, plan: Plan, sessions: int) -> dict:
    proxy.start()
    try:
        port = proxy.ports["imap"]
        # A few logins first, so that what is allocated once per worker is in the baseline.
        run_loadgen(loadgen_argv("login", port, proxy, fakes, "--proto", "imap", "--concurrency", "20",
                                 "--duration", "0.5", "--warmup", "0"), timeout=60)
        time.sleep(0.3)
        pids = descendants(proxy.pid)
        base_pss, base_rss = pss_kib(pids), rss_kib(pids)
        argv = loadgen_argv("idle", port, proxy, fakes, "--sessions", str(sessions), "--concurrency",
                            str(plan.idle_concurrency), "--hold", "1.0", "--open-timeout", "120")
        gen = procs.spawn(argv, LOAD_CORE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            ready = read_tagged(gen, "READY", 200.0)
            time.sleep(0.3)
            pids = descendants(proxy.pid)
            pss, rss = pss_kib(pids), rss_kib(pids)
            fds = worker_fds(proxy.pid)
            workers_alive = len(pids)
            gen.stdin.write(b"close\n")
            gen.stdin.flush()
            done = read_tagged(gen, "DONE", 60.0)
        finally:
            procs.stop(gen)
        alive = ready["alive"]
        result = {
            "sessions": sessions,
            "opened": ready["opened"],
            "alive": alive,
            "failed": ready["failed"],
            "all_alive": alive == sessions and done.get("lost_while_held", 0) == 0,
            "open_s": ready["open_s"],
            "logins_per_s": ready["logins_per_s"],
            "base_pss_mib": round(base_pss / 1024, 1),
            "pss_mib": round(pss / 1024, 1),
            "rss_mib": round(rss / 1024, 1),
            "kib_per_session": round((pss - base_pss) / alive, 2) if alive else None,
            "total_kib_per_session": round(pss / alive, 2) if alive else None,
            "proxy_fds": fds,
            "processes": workers_alive,
            "error_samples": ready.get("error_samples", {}),
            "open_proxy_cpu_pct": ready["open_cpu"]["proxy_cpu_pct"],
            "open_proxy_core_busy_pct": ready["open_cpu"]["proxy_core_busy_pct"],
            "open_foreign_cpu_pct": ready["open_cpu"]["foreign_cpu_pct"],
            "open_load_core_busy_pct": ready["open_cpu"]["load_core_busy_pct"],
            "errors_logged": proxy.errors_logged(),
        }
        return result
    finally:
        proxy.stop()


def download(proxy: Proxy, fakes: Fakes, plan: Plan, proto: str) -> dict:
    proxy.start()
    try:
        result = run_loadgen(loadgen_argv(
            "download", proxy.ports[proto], proxy, fakes, "--proto", proto, "--sessions", str(plan.bulk_sessions),
            "--total-mib", str(plan.bulk_mib), "--time-limit", "120"), timeout=180)
        result["errors_logged"] = proxy.errors_logged()
        return result
    finally:
        proxy.stop()


def upload(proxy: Proxy, fakes: Fakes, plan: Plan) -> dict:
    proxy.start()
    try:
        result = run_loadgen(loadgen_argv(
            "upload", proxy.ports["smtp"], proxy, fakes, "--sessions", str(plan.upload_sessions),
            "--total-mib", str(plan.bulk_mib), "--message-mib", str(plan.upload_message_mib), "--time-limit", "120"),
            timeout=180)
        result["errors_logged"] = proxy.errors_logged()
        return result
    finally:
        proxy.stop()


# What each case measures and how it compares: (metric, higher_is_better).
KEY_METRICS = {
    "login": [("sessions_per_s", True), ("sessions_per_core_s", True), ("sessions_per_cpu_s", True),
              ("p50_ms", False), ("p99_ms", False), ("proxy_core_busy_pct", None), ("proxy_cpu_pct", None),
              ("load_core_busy_pct", None)],
    "idle": [("kib_per_session", False), ("total_kib_per_session", False), ("alive", True),
             ("logins_per_s", True), ("pss_mib", None), ("proxy_fds", None)],
    "bulk": [("mib_per_s", True), ("proxy_core_ms_per_gib", False), ("proxy_cpu_ms_per_gib", False),
             ("proxy_core_busy_pct", None), ("proxy_cpu_pct", None), ("load_core_busy_pct", None)],
}


def cases(selected: list[str], plan: Plan) -> list[dict]:
    """Each case: name, kind, title, rounds, and how to run it on one proxy."""
    out = []
    for name in selected:
        if name == "pop3-login":
            out.append(dict(name=name, kind="login", rounds=plan.rounds,
                            title=f"POP3 USER/PASS/QUIT, {plan.login_concurrency} at a time",
                            run=lambda p, f, pl=plan: login(p, f, pl, "pop3", pl.login_concurrency, wire.USER)))
        elif name == "imap-login":
            out.append(dict(name=name, kind="login", rounds=plan.rounds,
                            title=f"IMAP LOGIN/LOGOUT, {plan.login_concurrency} at a time",
                            run=lambda p, f, pl=plan: login(p, f, pl, "imap", pl.login_concurrency, wire.USER)))
        elif name == "pop3-slow-auth":
            out.append(dict(name=name, kind="login", rounds=plan.rounds,
                            title=f"POP3 logins, auth answers after {wire.AUTH_DELAY * 1000:g} ms,"
                                  f" {plan.slow_concurrency} at a time",
                            run=lambda p, f, pl=plan: login(p, f, pl, "pop3", pl.slow_concurrency,
                                                            wire.SLOW_PREFIX + "-user")))
        elif name == "imap-idle":
            for level in plan.idle_levels:
                out.append(dict(name=f"imap-idle-{level}", kind="idle", rounds=plan.idle_rounds,
                                title=f"{level:,} idle IMAP sessions held",
                                run=lambda p, f, pl=plan, n=level: idle(p, f, pl, n)))
        elif name == "download":
            for proto, verb in (("pop3", "RETR"), ("imap", "FETCH")):
                out.append(dict(name=f"download-{proto}", kind="bulk", rounds=plan.rounds,
                                title=f"{plan.bulk_mib} MiB download, {proto.upper()} {verb} of 16 MiB messages,"
                                      f" {plan.bulk_sessions} sessions",
                                run=lambda p, f, pl=plan, pr=proto: download(p, f, pl, pr)))
        elif name == "smtp-upload":
            out.append(dict(name=name, kind="bulk", rounds=plan.rounds,
                            title=f"{plan.bulk_mib} MiB SMTP upload in {plan.upload_message_mib} MiB messages,"
                                  f" {plan.upload_sessions} sessions",
                            run=lambda p, f, pl=plan: upload(p, f, pl)))
    return out


def wait_quiet() -> float:
    """Wait until the rest of the machine is quiet; its last CPU use."""
    deadline = time.monotonic() + QUIET_WAIT
    while True:
        foreign = foreign_cpu_pct(os.getpid(), 1.0)
        if foreign < QUIET_BELOW or time.monotonic() >= deadline:
            return foreign


def measure(case: dict, proxy: Proxy, fakes: Fakes) -> dict:
    attempts = []
    for _ in range(1 + RETRIES):
        before = wait_quiet()
        try:
            result = case["run"](proxy, fakes)
        except Exception as err:  # noqa: BLE001 - recorded, and the run goes on
            result = {"error": f"{type(err).__name__}: {err}"[:500], "log": proxy.tail(800)}
        result["foreign_before_pct"] = before
        attempts.append(result)
        foreign = _foreign(result)
        # Memory does not depend on the CPU others use: idle cases are not
        # retried; nor is a measurement when the machine never got quiet.
        if "error" in result or case["kind"] == "idle" or foreign is None or foreign <= DISTURBED \
                or before >= QUIET_BELOW:
            break
    best = min(attempts, key=lambda r: (("error" in r), _foreign(r) or 0.0))
    best["attempts"] = len(attempts)
    if len(attempts) > 1:
        best["foreign_cpu_pct_of_attempts"] = [_foreign(r) for r in attempts]
    return best


def _foreign(result: dict) -> float | None:
    if "foreign_cpu_pct" in result:
        return result["foreign_cpu_pct"]
    return result.get("open_foreign_cpu_pct")


# --- summary -------------------------------------------------------------------------


def _median(values: list) -> float | None:
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return round(statistics.median(values), 3) if values else None


def summarize(case: dict, rounds: list[dict]) -> dict:
    metrics = KEY_METRICS[case["kind"]]
    summary: dict = {name: {} for name in PROXIES}
    summary["ratio"] = {}
    for metric, _ in metrics:
        for name in PROXIES:
            summary[name][metric] = _median([r[name].get(metric) for r in rounds if name in r])
        ratios = []
        for r in rounds:
            a = r.get("mailgate", {}).get(metric)
            b = r.get("nginx", {}).get(metric)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
                ratios.append(a / b)
        summary["ratio"][metric] = round(statistics.median(ratios), 3) if ratios else None
    flags = {}
    for name in PROXIES:
        bound = 0
        errors = 0
        for r in rounds:
            res = r.get(name, {})
            load = res.get("load_core_busy_pct") or res.get("open_load_core_busy_pct")
            proxy_busy = res.get("proxy_core_busy_pct") if "proxy_core_busy_pct" in res \
                else res.get("open_proxy_core_busy_pct")
            if load is not None and load >= 95 and (proxy_busy or 0) < 90:
                bound += 1
            errors += (res.get("errors") or 0) + (res.get("failed") or 0) + (res.get("noop_failed") or 0)
            if res.get("error"):
                errors += 1
        disturbed = sum(1 for r in rounds if (_foreign(r.get(name, {})) or 0.0) > DISTURBED)
        flags[name] = {"load_bound_rounds": bound, "errors": errors, "rounds": len(rounds),
                       "disturbed_rounds": disturbed,
                       "max_foreign_cpu_pct": max((_foreign(r.get(name, {})) or 0.0 for r in rounds), default=0.0)}
    summary["flags"] = flags
    return summary


def targets(results: dict) -> list[dict]:
    """The issue's targets, judged on this run's ratios."""
    out = []
    cases_ = results["cases"]

    def ratio(case: str, metric: str):
        return cases_.get(case, {}).get("summary", {}).get("ratio", {}).get(metric)

    for case, label in (("download-pop3", "POP3 RETR download"), ("download-imap", "IMAP FETCH download"),
                        ("smtp-upload", "SMTP upload")):
        value = ratio(case, "mib_per_s")
        if value is not None:
            out.append({"target": f"{label}: MiB/s at least 1.5x nginx", "case": case, "value": value,
                        "met": value >= 1.5})
    idle_cases = sorted((c for c in cases_ if c.startswith("imap-idle-")), key=lambda c: int(c.rsplit("-", 1)[1]))
    if idle_cases:
        case = idle_cases[-1]
        value = ratio(case, "kib_per_session")
        alive = cases_[case]["summary"]["mailgate"].get("alive")
        wanted = int(case.rsplit("-", 1)[1])
        met = value is not None and value <= 2.0 and alive == wanted
        out.append({"target": f"{wanted:,} idle IMAP sessions all alive, memory per session at most 2x nginx",
                    "case": case, "value": value, "met": met, "alive": alive})
    for case in ("pop3-login", "imap-login"):
        value = ratio(case, "sessions_per_cpu_s")
        if value is not None:
            out.append({"target": f"{case}: logins per core-second at least 0.5x nginx", "case": case,
                        "value": value, "met": value >= 0.5})
    value = ratio("pop3-slow-auth", "sessions_per_s")
    if value is not None:
        out.append({"target": "pop3-slow-auth: logins/s with the 20 ms auth server at least 0.5x nginx",
                    "case": "pop3-slow-auth", "value": value, "met": value >= 0.5})
    slow = cases_.get("pop3-slow-auth", {}).get("summary", {}).get("mailgate", {})
    fast = cases_.get("pop3-login", {}).get("summary", {}).get("mailgate", {})
    if slow.get("sessions_per_s") and fast.get("sessions_per_s"):
        # With full overlap the 20 ms answers cost no throughput: the rate stays
        # at what the CPU allows (the fast-auth rate), or at concurrency/delay.
        ceiling = min(fast["sessions_per_s"], results["plan"]["slow_concurrency"] / wire.AUTH_DELAY)
        value = round(slow["sessions_per_s"] / ceiling, 3)
        out.append({"target": "auth calls overlap fully (slow-auth rate / min(fast-auth rate, 100/20 ms))",
                    "case": "pop3-slow-auth", "value": value, "met": value >= 0.9,
                    "auth_in_flight": round(slow["sessions_per_s"] * wire.AUTH_DELAY, 1)})
    return out


# --- the machine -----------------------------------------------------------------------


def machine() -> dict:
    info = {"cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    try:
        info["mailgate_commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                                 capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "mailgate"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["mailgate_tree"] = "modified" if dirty else "clean"
    except (OSError, subprocess.SubprocessError):
        pass
    out = subprocess.run([procs.python(), "-c", "import gevent, greenlet; print(gevent.__version__, greenlet.__version__)"],
                         capture_output=True, text=True, timeout=30)
    if out.returncode == 0:
        info["gevent"], info["greenlet"] = out.stdout.split()
    try:
        import uvloop  # noqa: F401
        info["load_loop"] = "uvloop " + uvloop.__version__
    except ImportError:
        info["load_loop"] = "asyncio"
    return info


# --- main ------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="mailgate vs nginx mail proxy benchmark")
    parser.add_argument("--quick", action="store_true", help="one short round of each (a smoke test)")
    parser.add_argument("--only", action="append", choices=WORKLOADS, help="run this workload (repeatable)")
    parser.add_argument("--rounds", type=int, help="rounds per workload (default 3, --quick 1)")
    parser.add_argument("--out", default=str(BENCH / "results" / "latest.json"))
    parser.add_argument("--time-limit", type=float, default=1200.0,
                        help="stop starting new measurements after this many seconds")
    return parser.parse_args()


def _terminate(signum, frame) -> None:  # noqa: ANN001
    raise SystemExit(128 + signum)


def main() -> int:
    args = parse_args()
    if not os.path.exists(procs.NGINX) or not os.path.exists(procs.MAIL_MODULE):
        print("nginx or its mail module is missing: run bench/setup.sh first", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("the bench needs two cores (one for the proxy, one for the load)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    os.sched_setaffinity(0, {LOAD_CORE})
    rounds = args.rounds or (1 if args.quick else 3)
    plan = quick_plan(rounds) if args.quick else full_plan(rounds)
    selected = args.only or list(WORKLOADS)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="mailgate-bench-"))
    results: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "quick": args.quick,
        "plan": {k: v for k, v in plan.__dict__.items() if k != "extra"},
        "pinning": {"proxy_core": PROXY_CORE, "load_core": LOAD_CORE},
        "machine": machine(),
        "cases": {},
    }
    try:
        fakes = Fakes(workdir).start()
        ports = {"pop3": procs.free_port(), "imap": procs.free_port(), "smtp": procs.free_port()}

        def make_proxies() -> dict[str, Proxy]:
            config = procs.render_config(fakes.ports["auth"], ports["pop3"], ports["imap"], ports["smtp"])
            results["config"] = config
            return {name: Proxy(name, workdir, config, ports) for name in PROXIES}

        proxies = make_proxies()
        results["versions"] = {name: proxies[name].version() for name in PROXIES}
        for case in cases(selected, plan):
            rounds_out: list[dict] = []
            for number in range(case["rounds"]):
                this_round: dict = {}
                for name in PROXIES:
                    if time.time() - started > args.time_limit:
                        this_round[name] = {"error": "skipped: --time-limit reached"}
                        continue
                    if not fakes.alive():
                        # The fake servers died: new ones (new ports), so a new config.
                        fakes.stop()
                        fakes = Fakes(workdir).start()
                        proxies = make_proxies()
                        results.setdefault("notes", []).append(f"fake servers restarted before {case['name']}")
                    t0 = time.time()
                    this_round[name] = measure(case, proxies[name], fakes)
                    this_round[name]["seconds"] = round(time.time() - t0, 1)
                    print(f"[{time.time() - started:6.1f}s] {case['name']} round {number + 1} {name}: "
                          f"{report.one_line(case['kind'], this_round[name])}", flush=True)
                rounds_out.append(this_round)
            results["cases"][case["name"]] = {
                "title": case["title"], "kind": case["kind"], "rounds": rounds_out,
                "summary": summarize(case, rounds_out),
            }
            _save(results, out_path, started)
    except KeyboardInterrupt:
        results["interrupted"] = True
        print("interrupted: saving what was measured", file=sys.stderr)
    finally:
        procs.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
        _save(results, out_path, started)
    print(f"results: {out_path} and {out_path.with_suffix('.md')}")
    return 0


def _save(results: dict, out_path: Path, started: float) -> None:
    results["duration_s"] = round(time.time() - started, 1)
    results["targets"] = targets(results)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    out_path.with_suffix(".md").write_text(report.markdown(results))


if __name__ == "__main__":
    sys.exit(main())
