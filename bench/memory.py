"""Memory with history: does a server that has run many checkouts use more memory than early on?

``python -m bench.memory --checkouts 1000000 --store sqlite`` serves sagakit as the suite
does (``sagakit serve --no-demo-data`` on a fresh database, migrated by one start, then
bulk-loaded with the workload's users, items and one order per checkout to come), and drives
it with distinct checkouts (``POST /checkout/o<n>``, each ``n`` once, as bench/checkout.lua
does) from a closed loop of ``--concurrency`` connections. At each checkpoint (by default
10,000, 50,000, 100,000, 250,000, 500,000 and 1,000,000 checkouts, up to ``--checkouts``)
the load pauses, the sagas settle (none running or compensating), and the resident memory
(RSS, from /proc) of the server's whole process group is read: the server and any worker
processes it started. The ratio RSS(N) ÷ RSS(first checkpoint) is issue 4's figure: a server
that has run 1,000,000 checkouts should use no more memory than after 10,000.

The load generator is a small asyncio HTTP/1.1 client rather than wrk: it stops at exact
counts, so each sample is taken after exactly N checkouts with nothing in flight, and it
checks each answer against its order (200 "Order Completed" for nine orders in ten, 400
"Invalid shipping address" for every tenth). At ~500 checkouts/s it needs a few per cent of a
core.

Exit status 1 when an answer or a stored saga was not what the workload expects; the
memory figures are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench import data, servers, workload
from bench.machine import cpu_seconds
from bench.targets import check_stored, settled_counts

RESULTS: Final = servers.REPO / "bench" / "results"
DEFAULT_CHECKPOINTS: Final = (10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000)
SMOKE_CHECKOUTS: Final = 2_000
#: Fields of /proc/PID/status summed over the server's processes (kB there, bytes here).
MEMORY_FIELDS: Final = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem"}
REQUEST_TIMEOUT: Final = 60.0


def default_checkpoints(checkouts: int) -> tuple[int, ...]:
    """The standard checkpoints below ``checkouts``, then ``checkouts``; at least two."""
    points = (*(c for c in DEFAULT_CHECKPOINTS if c < checkouts), checkouts)
    return points if len(points) > 1 else (max(1, checkouts // 2), checkouts)


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryPlan:
    """One memory run: how many checkouts, where to sample, against what."""

    checkpoints: tuple[int, ...]
    store: str = "sqlite"
    concurrency: int = 16
    processes: int = 1
    work_dir: Path
    postgres_url: str = data.DEFAULT_POSTGRES

    @property
    def checkouts(self) -> int:
        """Checkouts in all: the last checkpoint."""
        return self.checkpoints[-1]


# -- memory, from /proc ---------------------------------------------------------------------


def _group_pids(group: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # state, ppid, pgrp, ...
            if int(fields[2]) == group:
                pids.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return sorted(pids)


def _status(pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in MEMORY_FIELDS or name == "VmHWM":
            found[name] = int(value.split()[0]) * 1024
    return found


def group_memory(group: int) -> dict[str, Any]:
    """Resident memory of process group ``group``, summed over its processes (bytes).

    ``rss`` is VmRSS (``anon`` + ``file`` + ``shmem``): the heap and stacks, the mapped files
    (libraries, SQLite's shared-memory index) and shared memory. Pages shared by several
    processes of the group count once per process.
    """
    total = dict.fromkeys(MEMORY_FIELDS.values(), 0)
    per_process = {}
    for pid in _group_pids(group):
        try:
            status = _status(pid)
        except OSError:
            continue  # it ended in between
        for name, key in MEMORY_FIELDS.items():
            total[key] += status.get(name, 0)
        per_process[str(pid)] = {"rss": status.get("VmRSS", 0), "hwm": status.get("VmHWM", 0)}
    return {**total, "processes": per_process}


# -- the load -------------------------------------------------------------------------------


@dataclass(slots=True)
class Tally:
    """Every answer so far, against what its order should get."""

    statuses: dict[int, int] = field(default_factory=dict)
    #: Answers that are not what their order gets: a 200 for an invalid address, a 400
    #: without "Invalid shipping address" or for a valid one, any other status.
    unexpected: int = 0
    #: The first few of them.
    examples: list[str] = field(default_factory=list)
    connection_errors: int = 0

    def answer(self, n: int, status: int, body: bytes) -> None:
        """Count the answer to ``POST /checkout/o<n>``."""
        self.statuses[status] = self.statuses.get(status, 0) + 1
        refused = workload.order(n).address == ""
        if refused and status == 400 and workload.INVALID_ADDRESS.encode() in body:
            return
        if not refused and status == 200:
            return
        self.unexpected += 1
        if len(self.examples) < 5:
            self.examples.append(f"o{n}: {status} {body[:200].decode(errors='replace')}")

    def problems(self, checkouts: int) -> list[str]:
        """Every answer not as expected, and every checkout that got no answer."""
        found = []
        if self.unexpected:
            found.append(f"{self.unexpected} unexpected answers, such as {self.examples}")
        answered = sum(self.statuses.values())
        if answered != checkouts:
            found.append(f"{checkouts - answered} of {checkouts} checkouts got no answer")
        if self.connection_errors:
            found.append(f"{self.connection_errors} connection errors")
        return found


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split()[1])
    length = None
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None:
        raise ConnectionError("an answer without Content-Length")
    return status, await reader.readexactly(length)


async def _connection(port: int, ids: Iterator[int], tally: Tally) -> None:
    """One keep-alive connection: checks out the next unused id until there is none."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for n in ids:
            request = f"POST /checkout/o{n} HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n"
            try:
                writer.write(request.encode())
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    status, body = await _response(reader)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                tally.connection_errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            tally.answer(n, status, body)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _checkouts(port: int, first: int, last: int, concurrency: int, tally: Tally) -> None:
    # One iterator shared by every connection: each id is taken once, by whoever is free.
    ids = iter(range(first, last))
    await asyncio.gather(*(_connection(port, ids, tally) for _ in range(concurrency)))


def drive(port: int, first: int, last: int, concurrency: int, tally: Tally) -> None:
    """Check out orders ``o<first>`` to ``o<last - 1>``, each once, over ``concurrency``."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(_checkouts(port, first, last, concurrency, tally))
    else:
        uvloop.run(_checkouts(port, first, last, concurrency, tally))


# -- a run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _database(plan: MemoryPlan) -> Iterator[str]:
    if plan.store == "sqlite":
        with data.fresh_sqlite(str(plan.work_dir), "memory") as path:
            yield f"sqlite:///{path}"
    else:
        with data.fresh_postgres(plan.postgres_url, "memory") as url:
            yield url


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _database_bytes(url: str) -> int | None:
    """The size of a SQLite database and its WAL (None for PostgreSQL)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///")
    return sum(os.path.getsize(f) for f in (path, f"{path}-wal") if os.path.exists(f))


def _sample(server: servers.Server, url: str, checkouts: int, started: float) -> dict[str, Any]:
    counts = settled_counts(server.url)
    time.sleep(0.5)  # a moment for the last answers' buffers to be freed
    memory = group_memory(server.process.pid)
    sample = {"checkouts": checkouts, "seconds": round(time.monotonic() - started, 1)}
    return sample | {"sagas": counts, "database_bytes": _database_bytes(url)} | memory


def _progress(sample: dict[str, Any]) -> str:
    return (
        f"  {sample['checkouts']:>9,} checkouts: RSS {sample['rss'] / 2**20:7.1f} MiB"
        f" (anon {sample['anon'] / 2**20:.1f}), {sample['checkouts_per_second']:.0f}"
        f" checkouts/s, cores busy: server {sample['server_cores']:.2f},"
        f" load generator {sample['load_generator_cores']:.2f}"
    )


def _ratios(samples: list[dict[str, Any]], reference: int) -> None:
    base = next(s for s in samples if s["checkouts"] == reference)
    for before, s in zip([None, *samples], samples, strict=False):
        s["rss_vs_reference"] = round(s["rss"] / base["rss"], 3)
        s["anon_vs_reference"] = round(s["anon"] / base["anon"], 3)
        s["kib_per_1000_after_reference"] = _growth(base, s)
        # The same for this stretch alone: a leak stays steady, a cache that fills up fades.
        s["kib_per_1000_this_stretch"] = (
            _growth(before, s) if before is not None and before["checkouts"] >= reference else None
        )


def _growth(earlier: dict[str, Any], later: dict[str, Any]) -> float | None:
    """RSS growth from ``earlier`` to ``later`` in KiB per 1,000 checkouts."""
    checkouts = int(later["checkouts"] - earlier["checkouts"])
    if checkouts <= 0:
        return None
    grown: int = later["rss"] - earlier["rss"]
    return round(grown / 1024 / checkouts * 1000, 2)


def measure(plan: MemoryPlan, *, progress: bool = True) -> dict[str, Any]:
    """Serve, load and sample as ``plan`` says; the samples, ratios, checks and problems."""
    log = plan.work_dir / f"memory-{plan.store}-{plan.processes}.log"
    tally = Tally()
    samples = []
    loaded_seconds = 0.0
    with _database(plan) as url:
        port = servers.free_port()
        with servers.serving(servers.sagakit_command(port, url, 1), port, log):
            pass  # one start migrates the empty database
        began = time.monotonic()
        if plan.store == "sqlite":
            data.load_sqlite(url.removeprefix("sqlite:///"), plan.checkouts)
        else:
            asyncio.run(data.load_postgres(url, plan.checkouts))
        loaded_seconds = time.monotonic() - began
        port = servers.free_port()
        command = servers.sagakit_command(port, url, plan.processes)
        with servers.serving(command, port, log) as server:
            started, pid = time.monotonic(), server.process.pid
            samples.append(_sample(server, url, 0, started))
            done = 0
            for checkpoint in plan.checkpoints:
                began, client, group = time.monotonic(), _own_cpu(), cpu_seconds(group=pid)
                drive(port, done, checkpoint, plan.concurrency, tally)
                wall = max(1e-9, time.monotonic() - began)
                load = {
                    "checkouts_per_second": round((checkpoint - done) / wall, 1),
                    "server_cores": round((cpu_seconds(group=pid) - group) / wall, 2),
                    "load_generator_cores": round((_own_cpu() - client) / wall, 2),
                }
                samples.append(_sample(server, url, checkpoint, started) | load)
                done = checkpoint
                if progress:
                    print(_progress(samples[-1]), flush=True)
            stored = settled_counts(server.url)
    _ratios(samples, plan.checkpoints[0])
    problems = tally.problems(plan.checkouts) + check_stored(stored, tally.statuses)
    share_400 = tally.statuses.get(400, 0) / max(1, plan.checkouts)
    if plan.checkouts >= 100 and not 0.05 <= share_400 <= 0.15:
        problems.append(f"{share_400:.0%} of answers were 400, expected about 10%")
    last, first = samples[-1], samples[1]
    return {
        "store": plan.store,
        "processes": plan.processes,
        "concurrency": plan.concurrency,
        "checkouts": plan.checkouts,
        "checkpoints": list(plan.checkpoints),
        "reference": plan.checkpoints[0],
        "load_seconds": round(loaded_seconds, 1),
        "samples": samples,
        "rss_last_vs_reference": last["rss_vs_reference"],
        "summary": (
            f"RSS {last['rss'] / 2**20:.1f} MiB after {last['checkouts']:,} checkouts,"
            f" {first['rss'] / 2**20:.1f} MiB after {first['checkouts']:,}:"
            f" {last['rss_vs_reference']:.3f}×"
        ),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "unexpected_answers": tally.unexpected,
        "unexpected_examples": tally.examples,
        "sagas": stored,
        "problems": problems,
    }


# -- the command ------------------------------------------------------------------------------


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(n.replace("_", "")) for n in text.split(",") if n.strip()}))


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench.memory``."""
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    p.add_argument("--checkouts", type=int, default=1_000_000, help="in all (1000000)")
    p.add_argument(
        "--checkpoints",
        type=_numbers,
        help="where to sample, the first is the reference"
        " (10000,50000,100000,250000,500000,1000000 up to --checkouts)",
    )
    p.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--concurrency", type=int, default=16, help="connections (16)")
    p.add_argument("--processes", type=int, default=1, help="API processes (1)")
    p.add_argument("--postgres-url", default=None, help="admin URL (BENCH_POSTGRES_URL)")
    p.add_argument("--smoke", action="store_true", help=f"{SMOKE_CHECKOUTS:,} checkouts")
    p.add_argument("--out", type=Path, help="JSON file (bench/results/memory-<timestamp>.json)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one memory measurement; exit 1 when an answer or a saga was not as expected."""
    from bench.machine import describe
    from bench.report import memory_table
    from bench.run import postgres_version

    args = parser().parse_args(argv)
    checkouts = SMOKE_CHECKOUTS if args.smoke else args.checkouts
    checkpoints = tuple(c for c in (args.checkpoints or ()) if c <= checkouts)
    if not checkpoints or checkpoints[-1] != checkouts:
        checkpoints = (*checkpoints, checkouts) if checkpoints else default_checkpoints(checkouts)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"memory-{stamp}.json"
    work_dir = RESULTS / f"work-memory-{stamp}"
    work_dir.mkdir(parents=True, exist_ok=True)
    plan = MemoryPlan(
        checkpoints=checkpoints,
        store=args.store,
        concurrency=args.concurrency,
        processes=args.processes,
        work_dir=work_dir,
        postgres_url=args.postgres_url
        or os.environ.get("BENCH_POSTGRES_URL", data.DEFAULT_POSTGRES),
    )
    command = shlex.join(["python -m bench.memory", *(sys.argv[1:] if argv is None else argv)])
    print(f"memory: {plan.checkouts:,} checkouts on {plan.store}, samples at {checkpoints}")
    result = measure(plan)
    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "machine": describe(
            work_dir,
            asyncio.run(postgres_version(plan.postgres_url))
            if plan.store == "postgres"
            else "not measured",
        ),
        "memory": result,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print("\n".join(memory_table(result)))
    print(result["summary"])
    print("Problems: " + ("; ".join(result["problems"]) or "none."))
    print(f"results: {out}; server log: {work_dir}")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
