"""CPU and memory of processes and cores, read from /proc.

``Sampler`` takes a snapshot of the proxy's processes (a master and all its
descendants), of the load side's processes, and of every core's busy time;
``Sampler.delta`` turns two snapshots into percentages of one core.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None or fields[0] == "Z":
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        if _stat_fields(current) is None:
            continue
        found.append(current)
        todo.extend(parents.get(current, ()))
    return sorted(found)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of ``pids`` (each process's own threads)."""
    return sum(user_system_seconds(pids))


def user_system_seconds(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pids``."""
    user = system = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            user += int(fields[11])
            system += int(fields[12])
    return user / TICK, system / TICK


def core_ticks() -> dict[int, tuple[int, int, int]]:
    """core -> (busy ticks, all ticks, irq + softirq ticks); busy counts irq
    and softirq too: loopback traffic a process sends is processed in
    softirq on its core, and not charged to the process."""
    cores = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *values = line.split()
            nums = [int(v) for v in values[:8]]
            idle = nums[3] + nums[4]
            cores[int(name[3:])] = (sum(nums) - idle, sum(nums), nums[5] + nums[6])
    return cores


def pss_kib(pids: list[int]) -> int:
    """Proportional set size of ``pids`` in KiB (smaps_rollup)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


@dataclass
class Snapshot:
    at: float
    proxy_cpu: float
    load_cpu: float
    cores: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    proxy_user: float = 0.0


class Sampler:
    """``proxy_pid``: the proxy's master (its workers are found each time);
    ``load_pids``: load-side processes (this one is always added);
    ``proxy_core``/``load_core``: where each side is pinned."""

    def __init__(self, proxy_pid: int | None, load_pids: list[int], proxy_core: int = 0,
                 load_core: int = 1) -> None:
        self.proxy_pid = proxy_pid
        self.load_pids = sorted(set(load_pids) | {os.getpid()})
        self.proxy_core = proxy_core
        self.load_core = load_core

    def proxy_pids(self) -> list[int]:
        return descendants(self.proxy_pid) if self.proxy_pid else []

    def snapshot(self) -> Snapshot:
        user, system = user_system_seconds(self.proxy_pids())
        return Snapshot(time.monotonic(), user + system, cpu_seconds(self.load_pids), core_ticks(), user)

    def delta(self, a: Snapshot, b: Snapshot) -> dict:
        wall = max(b.at - a.at, 1e-9)

        def busy(core: int, index: int = 0) -> float | None:
            if core not in a.cores or core not in b.cores:
                return None
            d_busy = b.cores[core][index] - a.cores[core][index]
            d_all = b.cores[core][1] - a.cores[core][1]
            return round(100.0 * d_busy / d_all, 1) if d_all > 0 else None

        proxy_busy = busy(self.proxy_core)
        proxy_cpu_pct = 100.0 * (b.proxy_cpu - a.proxy_cpu) / wall
        load_cpu_pct = 100.0 * (b.load_cpu - a.load_cpu) / wall
        all_busy = sum(busy(core) or 0.0 for core in b.cores)
        return {
            "wall_s": round(wall, 3),
            "proxy_cpu_s": round(b.proxy_cpu - a.proxy_cpu, 3),
            "proxy_cpu_pct": round(proxy_cpu_pct, 1),
            "proxy_user_pct": round(100.0 * (b.proxy_user - a.proxy_user) / wall, 1),
            "load_cpu_pct": round(load_cpu_pct, 1),
            "proxy_core_busy_pct": proxy_busy,
            "proxy_core_irq_pct": busy(self.proxy_core, 2),
            "proxy_core_busy_s": None if proxy_busy is None else round(proxy_busy / 100.0 * wall, 3),
            "load_core_busy_pct": busy(self.load_core),
            # Busy time on the cores that none of the bench's processes account
            # for: other work on the machine, in % of one core.
            "foreign_cpu_pct": round(max(0.0, all_busy - proxy_cpu_pct - load_cpu_pct), 1),
        }


def foreign_cpu_pct(root: int, seconds: float = 1.0) -> float:
    """CPU used over ``seconds`` by everything but ``root`` and its live
    descendants (busy time of all cores minus theirs), in % of one core."""
    pids = descendants(root)
    a_cores, a_ours = core_ticks(), cpu_seconds(pids)
    t0 = time.monotonic()
    time.sleep(seconds)
    b_cores, b_ours = core_ticks(), cpu_seconds(pids)
    wall = time.monotonic() - t0
    busy = 0.0
    for core, (busy_b, all_b, _) in b_cores.items():
        busy_a, all_a, _ = a_cores.get(core, (busy_b, all_b, 0))
        if all_b > all_a:
            busy += (busy_b - busy_a) / (all_b - all_a)
    return round(max(0.0, 100.0 * busy - 100.0 * (b_ours - a_ours) / wall), 1)
