"""How many CPU threads a trainer should use, given what else the machine is doing.

Intra-op threads meet at a barrier after every op. When another process keeps one of the cores
busy, one of our threads is descheduled, and its partner waits at each barrier, spinning (OpenMP's
default) on the very core the two contend for: on 2 cores beside one busy loop a 2-thread search ran
about 20x slower (benchmarks/threads.py, benchmarks/RESULTS.md). So a trainer uses only the cores
other processes leave idle, measured just before it trains (each trial), and never fewer than one.
On a quiet machine that is every core, as before.
"""
from __future__ import annotations

import os
import time

SAMPLE_S = 0.1  # how long the other processes' CPU use is watched, while this process sleeps


def _ticks(cpus: list[int]) -> tuple[int, int] | None:
    """(idle, total) jiffies summed over `cpus`, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{c}" for c in cpus}
    idle = total = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in wanted:
            values = [int(v) for v in fields[1:9]]
            idle += values[3] + values[4]  # idle and iowait
            total += sum(values)
    return (idle, total) if total else None


def busy_cores(cpus: list[int]) -> float:
    """How many of `cpus` other processes keep busy right now (this process sleeps while it looks)."""
    before = _ticks(cpus)
    time.sleep(SAMPLE_S)
    after = _ticks(cpus)
    if before is None or after is None or after[1] == before[1]:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0  # no /proc: the 1-minute average
        return min(float(len(cpus)), load * len(cpus) / (os.cpu_count() or len(cpus)))
    idle, total = after[0] - before[0], after[1] - before[1]
    return len(cpus) * max(0.0, 1 - idle / total)


def threads_for(cores: int, workers: int, busy: float) -> int:
    """Each of `workers` trainers' share of the `cores` that `busy` cores' worth of other work leaves idle."""
    spare = cores - int(busy + 0.5)
    return max(1, min(cores, spare) // max(1, workers))


def allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
