"""The engine alone, without HTTP: how many three-step sagas one process runs durably per second.

The saga's steps do trivial work (each returns a small dict), so what is measured is the
orchestrator and its store. ``IN_FLIGHT`` sagas run at any moment: each of that many runners
starts a saga, waits for its end, and starts the next, until the time is up.

A completed three-step saga makes four durable writes, which this suite calls its four
*step transitions*: the start (saga created, step 1 running), "step 1 done, step 2 running",
"step 2 done, step 3 running", and "step 3 done, saga completed". CPU per transition is this
process's CPU time (every thread: the event loop and SQLite's writer) over four times the
sagas completed. A PostgreSQL server's own CPU is reported beside it, not inside it.

Each measurement runs in a process of its own (``python -m bench.engine STORE URL SECONDS
WARMUP`` prints its result as JSON), so that nothing the suite did before weighs on its
heap, and that process is set up as ``sagakit`` sets up its own processes (its garbage
collector tuning, when sagakit has one).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from typing import Any, Final, TypeVar

from bench.machine import cpu_seconds, machine_busy_seconds
from sagakit import SagaOrchestrator, SagaStatus, Step, StepContext, open_store
from sagakit.records import JSON
from sagakit.saga import Saga
from sagakit.store.sqlite import SqliteAction, SqliteStore

T = TypeVar("T")

IN_FLIGHT: Final = 200
TRANSITIONS_PER_SAGA: Final = 4
SAGA: Final = "bench"


class TrivialStep(Step):
    """A step that does nothing but return a small result."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def do(self, ctx: StepContext) -> JSON:
        return {"step": self.name, "attempt": ctx.attempt}


class LocalStep(TrivialStep):
    """The same trivial step as a *local action* of the SQLite or PostgreSQL store (its
    result recorded in the transaction that records the step), so that the whole saga runs
    as one durable unit (``sagakit.unit``), as the checkout's steps do by default."""

    def local_action(self, ctx: StepContext, store: object) -> object | None:
        result: JSON = {"step": self.name, "attempt": ctx.attempt}
        if isinstance(store, SqliteStore):
            return SqliteAction(store.db, lambda conn: result)
        if type(store).__name__ != "PostgresStore":
            return None
        # Imported only here: the PostgreSQL driver is not needed on the other stores.
        from sagakit.store.postgres import PostgresAction, PostgresStore

        async def on_postgres(conn: object) -> JSON:
            return result

        if isinstance(store, PostgresStore):
            return PostgresAction(store.db, on_postgres)
        return None


def bench_saga(*, local: bool = False) -> Saga:
    """Three trivial steps, like the checkout's payment, inventory and shipping (``local``:
    as local actions of the store, so the saga runs as one unit)."""
    kind = LocalStep if local else TrivialStep
    return Saga(SAGA, [kind("one"), kind("two"), kind("three")])


@dataclass(frozen=True, slots=True)
class EngineResult:
    """One store's numbers."""

    store: str
    sagas: int
    seconds: float
    sagas_per_second: float
    cpu_us_per_transition: float
    cpu_us_per_saga: float
    #: CPU of every ``postgres`` process on the machine over the same window, per transition.
    db_server_cpu_us_per_transition: float | None
    #: Cores busy on average with anything else on the machine (other users' work).
    others_cores: float
    #: How the process's garbage collector was set up: "sagakit" or "python default".
    gc: str
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return asdict(self)


async def _runner(orch: SagaOrchestrator, deadline: float, tally: dict[str, int]) -> None:
    while time.perf_counter() < deadline:
        started = await orch.start(SAGA, {"n": tally["started"]})
        tally["started"] += 1
        # As the checkout does: a saga that ended inside start() (one unit) is not waited for.
        ended = await started.result()
        key = "completed" if ended.status is SagaStatus.COMPLETED else ended.status.value
        tally[key] = tally.get(key, 0) + 1


async def _run_for(orch: SagaOrchestrator, seconds: float, in_flight: int) -> dict[str, int]:
    tally = {"started": 0, "completed": 0}
    deadline = time.perf_counter() + seconds
    async with asyncio.TaskGroup() as group:
        for i in range(in_flight):
            group.create_task(_runner(orch, deadline, tally), name=f"bench-runner-{i}")
    return tally


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop, as ``sagakit serve`` does (uvicorn's default), if installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def measure(
    label: str,
    url: str,
    seconds: float,
    *,
    warmup: float = 1.0,
    in_flight: int = IN_FLIGHT,
    gc: str = "python default",
    local: bool = False,
) -> EngineResult:
    """Run the trivial saga against the store at ``url`` for ``seconds`` (after a warm-up).

    ``gc`` only labels the result: it says how the caller set up the garbage collector.
    """
    store = await open_store(url)
    orch = SagaOrchestrator(store, [bench_saga(local=local)])
    try:
        await _run_for(orch, warmup, in_flight)
        cpu, db_cpu, wall = time.process_time(), cpu_seconds(name="postgres"), time.perf_counter()
        machine = machine_busy_seconds()
        tally = await _run_for(orch, seconds, in_flight)
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        db_cpu = cpu_seconds(name="postgres") - db_cpu
        machine = machine_busy_seconds() - machine
    finally:
        await orch.shutdown()
        await store.close()
    done = tally["completed"]
    transitions = max(1, done * TRANSITIONS_PER_SAGA)
    others = {k: v for k, v in tally.items() if k not in ("started", "completed")}
    return EngineResult(
        store=label,
        sagas=done,
        seconds=round(wall, 3),
        sagas_per_second=round(done / wall, 1),
        cpu_us_per_transition=round(cpu * 1e6 / transitions, 1),
        cpu_us_per_saga=round(cpu * 1e6 / max(1, done), 1),
        db_server_cpu_us_per_transition=(
            round(db_cpu * 1e6 / transitions, 1) if label.startswith("postgres") else None
        ),
        gc=gc,
        others_cores=round(
            max(0.0, machine - cpu - (db_cpu if label.startswith("postgres") else 0)) / wall, 2
        ),
        problems=[f"{n} sagas ended {status}" for status, n in others.items()],
    )


def _set_up_like_sagakit() -> str:
    """Tune the garbage collector as the ``sagakit`` command does, where it does."""
    try:
        from sagakit.cli import tune_garbage_collector
    except ImportError:
        return "python default"
    tune_garbage_collector()
    return "sagakit"


#: The stores ``ab`` compares, as ``STORE[:local]``.
AB_STORES: Final = ("memory", "sqlite", "sqlite:local")


def _measure_in(root: str, store: str, seconds: float, work_dir: str) -> dict[str, Any]:
    """One measurement, in a fresh process running the sagakit (and bench) found in ``root``."""
    import subprocess
    import tempfile

    kind, _, mode = store.partition(":")
    with tempfile.TemporaryDirectory(dir=work_dir) as scratch:
        url = "memory://" if kind == "memory" else f"sqlite:///{scratch}/engine.db"
        env = {**os.environ, "PYTHONPATH": f"{root}/src{os.pathsep}{root}"}
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.engine",
                kind,
                url,
                str(seconds),
                "1",
                *filter(None, [mode]),
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def ab(base: str, rounds: int, seconds: float, stores: list[str]) -> None:
    """Compare the engine of the tree at ``base`` (say, ``git archive 8d15984 | tar -x -C
    /tmp/base``) with this one: ``rounds`` interleaved rounds (each store on each side in
    turn), then the medians of CPU µs per saga and sagas/s, as a markdown table."""
    import statistics
    import tempfile

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sides = {"before": os.path.abspath(base), "after": here}
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as work_dir:
        for r in range(rounds):
            for store in stores:
                for side, root in sides.items():
                    result = _measure_in(root, store, seconds, work_dir)
                    found.setdefault((store, side), []).append(result)
                    print(
                        f"round {r + 1} {store} {side}: {result['cpu_us_per_saga']} µs/saga,"
                        f" {result['sagas_per_second']} sagas/s, others {result['others_cores']}",
                        file=sys.stderr,
                    )
    print(
        "| store | CPU µs per saga, before | after | after ÷ before"
        " | sagas/s, before | after | others' cores (median) |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")
    for store in stores:
        b, a = found[(store, "before")], found[(store, "after")]
        cpu_b = statistics.median(x["cpu_us_per_saga"] for x in b)
        cpu_a = statistics.median(x["cpu_us_per_saga"] for x in a)
        rate_b = statistics.median(x["sagas_per_second"] for x in b)
        rate_a = statistics.median(x["sagas_per_second"] for x in a)
        others = statistics.median(x["others_cores"] for x in (*a, *b))
        print(
            f"| {store} | {cpu_b:,.1f} | {cpu_a:,.1f} | {cpu_a / cpu_b:.2f}× | {rate_b:,.0f}"
            f" | {rate_a:,.0f} | {others:.2f} |"
        )


def main(argv: list[str]) -> None:
    """``STORE URL SECONDS WARMUP [local]``: measure once and print the result as one JSON
    line (``local``: the steps are local actions, and each saga runs as one unit).

    ``ab BASE ROUNDS SECONDS [STORE ...]``: compare the engine of the source tree at
    ``BASE`` with this one (see :func:`ab`; stores as ``memory``, ``sqlite``,
    ``sqlite:local``; all three by default).

    ``BENCH_PYTHON_GC=1`` keeps Python's default garbage collector, to measure what
    ``sagakit``'s tuning is worth.
    """
    if argv and argv[0] == "ab":
        base, rounds, seconds, *stores = argv[1:]
        ab(base, int(rounds), float(seconds), stores or list(AB_STORES))
        return
    store, url, seconds, warmup, *mode = argv
    gc = "python default" if os.environ.get("BENCH_PYTHON_GC") else _set_up_like_sagakit()
    local = mode == ["local"]
    label = f"{store} (local steps: one unit)" if local else store
    result = run_loop(measure(label, url, float(seconds), warmup=float(warmup), gc=gc, local=local))
    print(json.dumps(result.as_dict()))


if __name__ == "__main__":
    main(sys.argv[1:])
