"""The markdown table of a bench run (bench/results/*.md), from its JSON.

    python bench/report.py bench/results/latest.json   # rewrites latest.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _ratio(value) -> str:
    return "–" if value is None else f"{value:.2f}x"


def one_line(kind: str, result: dict) -> str:
    """A progress line for one measurement."""
    if "error" in result:
        return "ERROR " + result["error"]
    if kind == "login":
        return (f"{_fmt(result.get('sessions_per_s'))} sessions/s, p50 {_fmt(result.get('p50_ms'), 2)} ms,"
                f" p99 {_fmt(result.get('p99_ms'), 2)} ms, errors {result.get('errors')},"
                f" proxy core {_fmt(result.get('proxy_core_busy_pct'))}%, load core {_fmt(result.get('load_core_busy_pct'))}%")
    if kind == "idle":
        return (f"{result.get('alive')}/{result.get('sessions')} alive, {_fmt(result.get('kib_per_session'), 2)}"
                f" KiB/session (PSS {_fmt(result.get('base_pss_mib'))} -> {_fmt(result.get('pss_mib'))} MiB),"
                f" {_fmt(result.get('logins_per_s'))} logins/s, fds {result.get('proxy_fds')}")
    return (f"{_fmt(result.get('mib_per_s'))} MiB/s, errors {result.get('errors')},"
            f" proxy core {_fmt(result.get('proxy_core_busy_pct'))}%, load core {_fmt(result.get('load_core_busy_pct'))}%")


# (metric, label, digits) shown per kind in the main table.
ROWS = {
    "login": [("sessions_per_s", "sessions/s", 0),
              ("sessions_per_core_s", "sessions per busy second of the proxy's core", 0),
              ("sessions_per_cpu_s", "sessions per CPU-second of the proxy's processes", 0),
              ("p50_ms", "p50 latency, ms", 2), ("p99_ms", "p99 latency, ms", 2),
              ("proxy_core_busy_pct", "proxy core busy, %", 0), ("proxy_cpu_pct", "proxy processes' CPU, %", 0),
              ("load_core_busy_pct", "load core busy, %", 0)],
    "idle": [("alive", "sessions alive", 0), ("kib_per_session", "PSS per session, KiB (above idle baseline)", 1),
             ("total_kib_per_session", "PSS per session, KiB (whole proxy / sessions)", 1),
             ("pss_mib", "proxy PSS, MiB (all processes)", 1), ("logins_per_s", "logins/s while opening", 0)],
    "bulk": [("mib_per_s", "MiB/s", 0), ("proxy_core_ms_per_gib", "proxy core busy, ms per GiB", 0),
             ("proxy_cpu_ms_per_gib", "proxy processes' CPU, ms per GiB", 0),
             ("proxy_core_busy_pct", "proxy core busy, %", 0), ("proxy_cpu_pct", "proxy processes' CPU, %", 0),
             ("load_core_busy_pct", "load core busy, %", 0)],
}


# Load indicators: shown for both, not compared.
NO_RATIO = {"proxy_core_busy_pct", "proxy_cpu_pct", "load_core_busy_pct"}


def _target_for(results: dict, case: str) -> dict | None:
    for t in results.get("targets", []):
        if t["case"] == case:
            return t
    return None


def compact(results: dict) -> list[str]:
    """One or two rows per workload: the headline figures and the targets."""
    cases = results.get("cases", {})
    rows = ["| Workload | Figure | mailgate | nginx | mailgate/nginx | Target | Met |",
            "|---|---|---:|---:|---:|---|:---:|"]

    def row(case: str, label: str, metric: str, digits: int = 0, target: str = "", met: str = "") -> None:
        s = cases[case]["summary"]
        rows.append(f"| {case} | {label} | {_fmt(s['mailgate'].get(metric), digits)} |"
                    f" {_fmt(s['nginx'].get(metric), digits)} | {_ratio(s['ratio'].get(metric))} | {target} | {met} |")

    def met(case: str) -> str:
        t = _target_for(results, case)
        return "" if t is None else ("yes" if t["met"] else "**no**")

    for case in ("pop3-login", "imap-login"):
        if case in cases:
            row(case, "sessions/s", "sessions_per_s")
            row(case, "sessions per CPU-second", "sessions_per_cpu_s", target=">= 0.5x", met=met(case))
            row(case, "p99 latency, ms", "p99_ms", 1)
    if "pop3-slow-auth" in cases:
        t = next((t for t in results.get("targets", []) if "auth_in_flight" in t), None)
        overlap = "" if t is None else f"overlap {t['value']:.2f} (auth calls in flight: {t['auth_in_flight']})"
        row("pop3-slow-auth", "sessions/s", "sessions_per_s", target=">= 0.5x" + (f"; {overlap}" if overlap else ""),
            met=met("pop3-slow-auth"))
    for case in sorted((c for c in cases if c.startswith("imap-idle-")), key=lambda c: int(c.rsplit("-", 1)[1])):
        last = _target_for(results, case)
        row(case, "sessions alive", "alive")
        row(case, "PSS KiB per session", "kib_per_session", 1, target="<= 2x" if last else "",
            met=met(case) if last else "")
    for case in ("download-pop3", "download-imap", "smtp-upload"):
        if case in cases:
            row(case, "MiB/s", "mib_per_s", target=">= 1.5x", met=met(case))
    return rows


def markdown(results: dict) -> str:
    m = results.get("machine", {})
    v = results.get("versions", {})
    plan = results.get("plan", {})
    lines = [
        "# mailgate vs nginx mail proxy" + (" (quick pass)" if results.get("quick") else ""),
        "",
        f"Run {results.get('started', '?')}, {results.get('duration_s', '?')} s in all."
        f" Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB,"
        f" {m.get('os', '?')}, Linux {m.get('kernel', '?')}.",
        f"mailgate {v.get('mailgate', '?')} (commit {m.get('mailgate_commit', '?')},"
        f" {m.get('mailgate_tree', '?')} tree; Python {m.get('python', '?')}, gevent {m.get('gevent', '?')}),"
        f" nginx {v.get('nginx', '?')} (Debian, libnginx-mod-mail). Load side: Python, {m.get('load_loop', '?')}.",
        "",
        "One worker each, pinned to core 0, both run the same nginx-syntax config; load generator, auth server"
        " and backends pinned to core 1. Rounds alternate mailgate, nginx, mailgate, nginx...;"
        f" {plan.get('rounds', '?')} rounds ({plan.get('idle_rounds', '?')} for idle sessions), each proxy started"
        " afresh per measurement. Figures are medians over rounds; **mailgate/nginx is the median of the"
        " per-round ratios**.",
        "",
    ]
    lines += compact(results) + ["", "Every figure:", "",
                                 "| Workload | Metric | mailgate | nginx | mailgate/nginx |",
                                 "|---|---|---:|---:|---:|"]
    notes = []
    for name, case in results.get("cases", {}).items():
        summary = case["summary"]
        first = True
        for metric, label, digits in ROWS[case["kind"]]:
            a = summary["mailgate"].get(metric)
            b = summary["nginx"].get(metric)
            r = summary["ratio"].get(metric)
            title = f"**{name}**: {case['title']}" if first else ""
            first = False
            shown = "" if metric in NO_RATIO else _ratio(r)
            lines.append(f"| {title} | {label} | {_fmt(a, digits)} | {_fmt(b, digits)} | {shown} |")
        idle = case["kind"] == "idle"
        rate = "logins/s while opening" if idle else "rate"
        for proxy, flags in summary.get("flags", {}).items():
            if flags["load_bound_rounds"]:
                notes.append(f"{name}: {proxy} was limited by the load side in {flags['load_bound_rounds']} of"
                             f" {flags['rounds']} rounds (load core at 95% or more, proxy below 90% of its core):"
                             f" its {rate} is a lower bound"
                             + ("." if idle else "; compare per CPU-second."))
            if flags.get("disturbed_rounds"):
                notes.append(f"{name}: other processes on the machine used up to {flags['max_foreign_cpu_pct']:.0f}%"
                             f" of a core during {flags['disturbed_rounds']} of {flags['rounds']} {proxy} rounds"
                             " (after retries): " + ("its logins/s while opening is less reliable (memory is not"
                                                     " affected)." if idle else "its rate is less reliable than its"
                                                     " CPU per session or per GiB."))
            if flags["errors"]:
                notes.append(f"{name}: {proxy} had {flags['errors']} failed sessions or measurements"
                             " (see the JSON for samples).")
    lines.append("")
    if results.get("targets"):
        lines += ["| Target (ratios from this run) | Value | Met |", "|---|---:|:---:|"]
        for t in results["targets"]:
            lines.append(f"| {t['target']} | {_ratio(t['value'])} | {'yes' if t['met'] else '**no**'} |")
        lines.append("")
    if notes or results.get("notes"):
        lines += ["Notes:", ""] + [f"- {n}" for n in notes + results.get("notes", [])] + [""]
    if results.get("interrupted"):
        lines += ["**The run was interrupted; the table holds what was measured.**", ""]
    return "\n".join(lines)


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results" / "latest.json")
    results = json.loads(path.read_text())
    path.with_suffix(".md").write_text(markdown(results))
    print(path.with_suffix(".md"))


if __name__ == "__main__":
    main()
