"""What machine a run was on: cores, CPU model, memory, versions, load and disk sync latency."""

from __future__ import annotations

import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def _command_version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "unavailable"


def cpu_seconds(
    *, name: str | None = None, group: int | None = None, pid: int | None = None
) -> float:
    """User and system CPU of the live processes named ``name`` or in process group ``group``
    (or of process ``pid`` alone)."""
    total = 0
    paths = [Path(f"/proc/{pid}/stat")] if pid is not None else Path("/proc").glob("[0-9]*/stat")
    for stat in paths:
        try:
            head, _, tail = stat.read_text().rpartition(")")
            fields = tail.split()  # state, ppid, pgrp, ... utime is the 12th, stime the 13th
            if (
                pid is not None
                or (name is not None and head.endswith(f"({name}"))
                or (group is not None and int(fields[2]) == group)
            ):
                total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / CLOCK_TICKS


def _cpu_line() -> list[int]:
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def machine_busy_seconds() -> float:
    """CPU time every core of the machine has spent busy since boot (all processes)."""
    fields = _cpu_line()
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICKS


def interrupt_seconds() -> float:
    """CPU time spent in interrupts and soft interrupts since boot (loopback networking)."""
    fields = _cpu_line()
    return (fields[5] + fields[6]) / CLOCK_TICKS


def wait_until_quiet(limit: float, budget: float, window: float = 5.0) -> float:
    """Wait (up to ``budget`` seconds) for a ``window`` in which the machine keeps fewer than
    ``limit`` cores busy; return the busy cores of the last window."""
    deadline = time.monotonic() + budget
    while True:
        before = machine_busy_seconds()
        time.sleep(window)
        busy = (machine_busy_seconds() - before) / window
        if busy < limit or time.monotonic() >= deadline:
            return round(busy, 2)
        print(f"bench: the machine keeps {busy:.2f} cores busy; waiting for quiet", flush=True)


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU clocks at one instant: the machine's, a server's, and this process's children's."""

    wall: float
    machine: float
    interrupts: float
    server: float
    postgres: float
    children: float

    @classmethod
    def take(cls, server_group: int) -> CpuSnapshot:
        """Read every clock now; ``server_group`` is the server's process group."""
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            wall=time.monotonic(),
            machine=machine_busy_seconds(),
            interrupts=interrupt_seconds(),
            server=cpu_seconds(group=server_group),
            postgres=cpu_seconds(name="postgres"),
            children=usage.ru_utime + usage.ru_stime,
        )

    def cores_until(self, later: CpuSnapshot) -> dict[str, float]:
        """Cores busy on average between the two snapshots, by whom.

        ``wrk`` is this process's children that ended in between (the load generator);
        ``postgres`` every PostgreSQL process (whoever it serves; one that exits in between
        takes its CPU with it); ``interrupts`` the kernel's (soft) interrupt time, where
        loopback networking goes; ``others`` whatever else kept a core busy: other users'
        work on a shared machine.
        """
        wall = max(later.wall - self.wall, 1e-9)
        cores = {
            "machine": later.machine - self.machine,
            "server": later.server - self.server,
            "postgres": max(0.0, later.postgres - self.postgres),
            "wrk": later.children - self.children,
            "interrupts": later.interrupts - self.interrupts,
        }
        ours = cores["server"] + cores["postgres"] + cores["wrk"] + cores["interrupts"]
        cores["others"] = max(0.0, cores["machine"] - ours)
        return {name: round(seconds / wall, 2) for name, seconds in cores.items()}


def fsync_latency_ms(directory: Path, rounds: int = 50) -> float:
    """Median time of a 4 KiB append and ``fdatasync`` in ``directory``: the price of a commit."""
    samples = []
    with tempfile.NamedTemporaryFile(dir=directory) as handle:
        block = b"x" * 4096
        for _ in range(rounds):
            started = time.perf_counter()
            handle.write(block)
            handle.flush()
            os.fdatasync(handle.fileno())
            samples.append(time.perf_counter() - started)
    return round(statistics.median(samples) * 1e3, 3)


def describe(directory: Path, postgres_version: str) -> dict[str, Any]:
    """The facts about this machine that a reader of the numbers needs."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version,
        "wrk": _command_version(["wrk", "-v"]).split(" Copyright")[0],
        "fsync_ms_median": fsync_latency_ms(directory),
        "loadavg_at_start": list(os.getloadavg()),
    }
