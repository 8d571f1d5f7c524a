"""The HTTP targets: each prepared fresh, served, loaded at every concurrency, and stopped.

A target is ``baseline`` (bench/baseline_app.py in memory), ``sqlite`` or ``postgres``
(``sagakit serve`` on a new database), ``http`` (``sagakit serve`` on SQLite with
``SAGAKIT_PARTICIPANTS=http`` and three ``sagakit participant`` processes, each on its own
SQLite file) or ``amqp`` (the same with ``SAGAKIT_PARTICIPANTS=amqp`` and three ``sagakit
participant --transport amqp`` processes, through RabbitMQ on queues of the run's own).
For each number of API processes it gets a fresh
database holding enough orders for every request of its cells, warm-ups included, and each
wrk run is handed its own range of order ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import asyncpg

from bench import data, rabbitmq, servers
from bench.load import LoadResult, run_wrk
from bench.machine import CpuSnapshot, cpu_seconds

TARGETS: Final = ("baseline", "sqlite", "postgres", "postgres-hot", "http", "amqp")
#: The targets on PostgreSQL: ``postgres`` with orders spread over 1,000 users and items,
#: ``postgres-hot`` with every order on one user and one item (one hot row each).
POSTGRES: Final = ("postgres", "postgres-hot")
#: The targets whose participants run in processes of their own (compared with ``sqlite``,
#: the same checkout on the same store with its participants in process).
DISTRIBUTED: Final = ("http", "amqp")
#: Order ids set aside per second of load, well above what each target has been seen to do;
#: a run that drains its range reports it (an "exhausted" problem) instead of reusing ids.
IDS_PER_SECOND: Final = {
    "baseline": 25_000,
    "sqlite": 4_000,
    "postgres": 4_000,
    "postgres-hot": 4_000,
    "http": 2_000,
    "amqp": 2_000,
}
METRIC = re.compile(r'^sagakit_sagas\{status="(\w+)"\} ([0-9.e+]+)$', re.MULTILINE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """How every HTTP cell of a run is measured."""

    concurrencies: tuple[int, ...]
    seconds: int
    warmup: int
    wrk_threads: int
    work_dir: Path
    postgres_url: str
    amqp_url: str = rabbitmq.DEFAULT_AMQP

    def ids(self, target: str, seconds: int) -> int:
        """How many order ids one wrk run of ``seconds`` gets."""
        return IDS_PER_SECOND[target] * seconds + 1_000

    def orders(self, target: str) -> int:
        """How many orders one server run needs: every cell and every warm-up."""
        per_cell = self.ids(target, self.warmup) + self.ids(target, self.seconds)
        return per_cell * len(self.concurrencies)


@contextlib.contextmanager
def _database(target: str, processes: int, plan: Plan) -> Iterator[str]:
    label = f"{target}{processes}"
    if target == "sqlite":
        with data.fresh_sqlite(str(plan.work_dir), label) as path:
            yield f"sqlite:///{path}"
    else:
        with data.fresh_postgres(plan.postgres_url, label) as url:
            yield url


def _load_migrated_sqlite(command: list[str], port: int, url: str, log: Path, n: int) -> None:
    # One start migrates the empty database; the rows go in while nothing runs.
    with servers.serving(command, port, log):
        pass
    data.load_sqlite(url.removeprefix("sqlite:///"), n)


@contextlib.contextmanager
def _participants(
    plan: Plan, count: int, queues: rabbitmq.Queues | None = None
) -> Iterator[dict[str, str]]:
    """The three participants, each on a fresh SQLite file; the checkout service's settings.

    Without ``queues``: HTTP services. With: ``--transport amqp`` processes on those
    queues (still serving their HTTP API, which the checkout's catalog reads), each ready
    once it answers and RabbitMQ shows it consuming its command queue.
    """
    transport = "http" if queues is None else "amqp"
    with contextlib.ExitStack() as stack:
        env = {"SAGAKIT_PARTICIPANTS": transport}
        for kind in ("payment", "inventory", "shipping"):
            label = f"{transport}-{kind}"
            path = stack.enter_context(data.fresh_sqlite(str(plan.work_dir), label))
            url, port = f"sqlite:///{path}", servers.free_port()
            command = servers.participant_command(kind, port, url)
            log = plan.work_dir / f"{label}.log"
            # Payment needs the users and inventory the items; the orders are not used there.
            # Both transports migrate the same tables: the HTTP service's start does it.
            _load_migrated_sqlite(command, port, url, log, count if kind != "shipping" else 0)
            env[f"SAGAKIT_{kind.upper()}_URL"] = f"http://127.0.0.1:{port}"
            if queues is None:
                stack.enter_context(servers.serving(command, port, log))
            else:
                command = servers.amqp_participant_command(kind, port, url)
                stack.enter_context(servers.serving(command, port, log, env=queues.env()))
                deadline = time.monotonic() + 10
                while not queues.consuming(kind):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the {kind} participant does not consume its queue")
                    time.sleep(0.1)
        yield env if queues is None else env | queues.env()


@contextlib.contextmanager
def _distributed(
    target: str, processes: int, plan: Plan, notes: dict[str, Any]
) -> Iterator[servers.Server]:
    """``sagakit serve`` on SQLite with its participants elsewhere (``http`` or ``amqp``)."""
    log = plan.work_dir / f"{target}-{processes}.log"
    count = plan.orders(target)
    with contextlib.ExitStack() as stack:
        queues = None
        if target == "amqp":
            queues = stack.enter_context(rabbitmq.fresh_queues(plan.amqp_url, f"{processes}p"))
        path = stack.enter_context(data.fresh_sqlite(str(plan.work_dir), f"{target}{processes}"))
        env = stack.enter_context(_participants(plan, count, queues))
        url, port = f"sqlite:///{path}", servers.free_port()
        _load_migrated_sqlite(servers.sagakit_command(port, url, 1), port, url, log, count)
        port = servers.free_port()
        command = servers.sagakit_command(port, url, processes)
        with servers.serving(command, port, log, env=env) as server:
            yield server
    if queues is not None:
        # Known once the participants stopped and the queues were counted and deleted.
        notes["amqp_queues"] = {"prefix": queues.prefix, "messages_left": queues.left}
        notes.setdefault("problems", []).extend(queues.problems())


@contextlib.contextmanager
def prepared(
    target: str, processes: int, plan: Plan, notes: dict[str, Any] | None = None
) -> Iterator[servers.Server]:
    """A running server for ``target`` with enough orders for the whole plan.

    ``notes`` receives what is only known once the server is gone (the ``amqp`` target's
    queues: the messages left in them, and a problem for any dead-lettered command).
    """
    log = plan.work_dir / f"{target}-{processes}.log"
    count = plan.orders(target)
    if target in DISTRIBUTED:
        with _distributed(target, processes, plan, {} if notes is None else notes) as server:
            yield server
        return
    if target == "baseline":
        port = servers.free_port()
        command = servers.baseline_command(port, processes)
        with servers.serving(command, port, log, env={"BENCH_ORDERS": str(count)}) as server:
            yield server
        return
    with _database(target, processes, plan) as url:
        # One start migrates the empty database; the orders go in while nothing runs.
        port = servers.free_port()
        with servers.serving(servers.sagakit_command(port, url, 1), port, log):
            pass
        if target == "sqlite":
            data.load_sqlite(url.removeprefix("sqlite:///"), count)
        else:
            asyncio.run(data.load_postgres(url, count, hot=target == "postgres-hot"))
            if notes is not None:
                notes["database"] = urlsplit(url).path.lstrip("/")
        port = servers.free_port()
        with servers.serving(servers.sagakit_command(port, url, processes), port, log) as server:
            yield server


def saga_counts(url: str) -> dict[str, int]:
    """Sagas by status, from the server's ``GET /metrics``."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    return {status: int(float(n)) for status, n in METRIC.findall(text)}


def settled_counts(url: str, timeout: float = 30) -> dict[str, int]:
    """Saga counts once no saga is running or compensating (or as they stand at ``timeout``)."""
    deadline = time.monotonic() + timeout
    counts = saga_counts(url)
    while counts.get("running", 0) + counts.get("compensating", 0) and time.monotonic() < deadline:
        time.sleep(0.2)
        counts = saga_counts(url)
    return counts


async def _backend_cpu(admin_url: str, database: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving ``database``, by pid."""
    conn = await asyncpg.connect(admin_url)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
    finally:
        await conn.close()
    return {r["pid"]: cpu_seconds(pid=r["pid"]) for r in rows}


def backend_cpu(admin_url: str, database: str | None) -> dict[int, float]:
    """``_backend_cpu``, or nothing for a target without a PostgreSQL database."""
    return asyncio.run(_backend_cpu(admin_url, database)) if database else {}


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the backends spent in between (one that started in between from zero)."""
    return sum(max(0.0, seconds - before.get(pid, 0.0)) for pid, seconds in after.items())


def _cell(
    target: str,
    processes: int,
    concurrency: int,
    result: LoadResult,
    cores: dict[str, float],
    db_seconds: float | None,
) -> dict[str, Any]:
    requests = max(1, result.requests)
    problems = result.problems()
    share_400 = result.statuses.get(400, 0) / requests
    if result.requests >= 100 and not 0.05 <= share_400 <= 0.15:
        problems.append(f"{share_400:.0%} of answers were 400, expected about 10%")
    return {
        "target": target,
        "processes": processes,
        "concurrency": concurrency,
        "seconds": round(result.seconds, 3),
        "requests": result.requests,
        "throughput": round(result.throughput, 1),
        "latency_ms": {k: round(v / 1e3, 3) for k, v in result.latency_us.items()},
        "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
        "server_cpu_us_per_request": round(cores["server"] * result.seconds * 1e6 / requests, 1),
        # PostgreSQL's side: the backends serving this target's database, no one else's.
        "db_cpu_us_per_request": (
            None if db_seconds is None else round(db_seconds * 1e6 / requests, 1)
        ),
        "cores_busy": cores,
        "problems": problems,
    }


class Tally:
    """Answers given across a server run (warm-ups too), to compare with the sagas stored."""

    def __init__(self) -> None:
        self.next_id = 0
        self.answered: dict[int, int] = {}

    def load(self, server: servers.Server, target: str, plan: Plan, c: int, s: int) -> LoadResult:
        """One wrk run of ``s`` seconds at concurrency ``c`` over a fresh range of ids."""
        ids = plan.ids(target, s)
        result = run_wrk(
            server.url,
            connections=c,
            seconds=s,
            first_id=self.next_id,
            ids=ids,
            threads=plan.wrk_threads,
        )
        self.next_id += ids
        for status, n in result.statuses.items():
            self.answered[status] = self.answered.get(status, 0) + n
        return result


def check_stored(counts: dict[str, int], answered: dict[int, int]) -> list[str]:
    """Problems of a server's sagas (by status) after ``answered`` answers (by HTTP status):
    any saga unfinished, fewer completed than 200s or fewer compensated than 400s."""
    unfinished = ("failed", "running", "compensating")
    problems = [f"{counts[s]} sagas {s}" for s in unfinished if counts.get(s)]
    for status, saga_status in ((200, "completed"), (400, "compensated")):
        if counts.get(saga_status, 0) < answered.get(status, 0):
            problems.append(
                f"{answered[status]} answers {status} but only"
                f" {counts.get(saga_status, 0)} sagas {saga_status}"
            )
    return problems


def run_target(target: str, processes: int, plan: Plan) -> dict[str, Any]:
    """Every concurrency of ``plan`` against one fresh server of ``target``."""
    cells = []
    tally = Tally()
    stored: dict[str, int] = {}
    notes: dict[str, Any] = {}
    with prepared(target, processes, plan, notes) as server:
        database = notes.pop("database", None)
        for concurrency in plan.concurrencies:
            tally.load(server, target, plan, concurrency, plan.warmup)
            backends = backend_cpu(plan.postgres_url, database)
            before = CpuSnapshot.take(server.process.pid)
            result = tally.load(server, target, plan, concurrency, plan.seconds)
            cores = before.cores_until(CpuSnapshot.take(server.process.pid))
            spent = _spent(backends, backend_cpu(plan.postgres_url, database))
            cell = _cell(target, processes, concurrency, result, cores, spent if database else None)
            cells.append(cell)
            print(_progress(cells[-1]), flush=True)
        if target != "baseline":
            stored = settled_counts(server.url)
    problems = check_stored(stored, tally.answered) if target != "baseline" else []
    problems += notes.pop("problems", [])
    return {
        "target": target,
        "processes": processes,
        "cells": cells,
        "sagas": stored,
        "problems": problems,
        **notes,
    }


def _progress(cell: dict[str, Any]) -> str:
    latency = cell["latency_ms"]
    return (
        f"  {cell['target']:<9} p={cell['processes']} c={cell['concurrency']:<3}"
        f" {cell['throughput']:>9.1f} req/s  p50 {latency['p50']:.2f} ms"
        f"  p99 {latency['p99']:.2f} ms  {'; '.join(cell['problems']) or 'ok'}"
    )
