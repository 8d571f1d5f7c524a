"""Run the benchmark suite: ``.venv/bin/python -m bench.run [options]`` (or ``bench/run``).

HTTP targets first (for each API process count: the baseline, then sagakit on SQLite, then on
PostgreSQL, then with its participants over HTTP and over AMQP, each at every concurrency),
then the engine alone on every store, then (with ``--memory N``) the server's memory over N
checkouts (bench/memory.py). Results go to a
JSON file and a markdown table (printed, and written to bench/results/latest.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from bench import data, engine, memory, rabbitmq, report, rounds
from bench.load import ensure_wrk
from bench.machine import describe, wait_until_quiet
from bench.servers import REPO, clean_environment
from bench.targets import POSTGRES, TARGETS, Plan, run_target

T = TypeVar("T")
RESULTS = REPO / "bench" / "results"
#: Busy cores below which the machine counts as quiet enough to start (``--wait-quiet``).
QUIET_CORES = 0.3


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """What one run measures, and for how long."""

    seconds: int = 10
    warmup: int = 2
    concurrencies: tuple[int, ...] = (1, 16, 64)
    targets: tuple[str, ...] = TARGETS
    processes: tuple[int, ...] = (1, 2)
    #: The targets also measured with more than one API process (the others with one only).
    multi_process_targets: tuple[str, ...] = TARGETS
    #: Interleaved rounds: every target (and the engine on every store) once per round;
    #: each figure reported is the median over the rounds.
    rounds: int = 3
    engine_seconds: float = 10.0
    engine_warmup: float = 1.0
    wrk_threads: int = 1
    #: Seconds to wait, before starting, for the machine to be quiet (0: start at once).
    wait_quiet: float = 0.0
    #: Checkouts of the memory measurement (0: not run), and its store.
    memory_checkouts: int = 0
    memory_store: str = "sqlite"
    postgres_url: str = field(
        default_factory=lambda: os.environ.get("BENCH_POSTGRES_URL", data.DEFAULT_POSTGRES)
    )
    amqp_url: str = field(
        default_factory=lambda: os.environ.get("BENCH_AMQP_URL", rabbitmq.DEFAULT_AMQP)
    )

    def describe(self) -> str:
        """One line saying how the numbers were taken."""
        memory_part = (
            f", memory over {self.memory_checkouts:,} checkouts on {self.memory_store}"
            if self.memory_checkouts
            else ""
        )
        return (
            f"{self.rounds} interleaved round(s), medians;"
            f" {self.seconds} s per HTTP cell after a {self.warmup} s warm-up,"
            f" wrk -t{self.wrk_threads}, engine {self.engine_seconds:g} s"
            f" with {engine.IN_FLIGHT} sagas in flight{memory_part}"
        )


async def postgres_version(url: str) -> str:
    """The version of the PostgreSQL server at ``url``."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _guarded(problems: list[str], what: str, action: Callable[[], T]) -> T | None:
    """Run one part of the suite; a failure is recorded and the rest of the run goes on."""
    try:
        return action()
    except rabbitmq.Unavailable as exc:
        # Not a failure of the code under test: said plainly, without a traceback.
        problems.append(f"{what} not measured: {exc}")
        print(f"  not measured: {exc}", flush=True)
        return None
    except Exception as exc:
        problems.append(f"{what} failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        return None


def _http(options: Options, work_dir: Path, problems: list[str]) -> list[dict[str, Any]]:
    plan = Plan(
        concurrencies=options.concurrencies,
        seconds=options.seconds,
        warmup=options.warmup,
        wrk_threads=options.wrk_threads,
        work_dir=work_dir,
        postgres_url=options.postgres_url,
        amqp_url=options.amqp_url,
    )
    runs = []
    for processes in options.processes:
        for target in options.targets:
            if processes > 1 and target not in options.multi_process_targets:
                continue
            print(f"HTTP {target}, {processes} API process(es)", flush=True)
            run = _guarded(
                problems, f"{target} ({processes}p)", partial(run_target, target, processes, plan)
            )
            if run is not None:
                runs.append(run)
                problems += [f"{target} ({processes}p): {p}" for p in run["problems"]]
                for cell in run["cells"]:
                    where = f"{target} ({processes}p, c={cell['concurrency']})"
                    problems += [f"{where}: {p}" for p in cell["problems"]]
    return runs


def _engine_one(store: str, options: Options, work_dir: Path) -> dict[str, Any]:
    def measure(url: str) -> dict[str, Any]:
        seconds, warmup = str(options.engine_seconds), str(options.engine_warmup)
        done = subprocess.run(
            [sys.executable, "-m", "bench.engine", store, url, seconds, warmup],
            cwd=REPO,
            env=clean_environment({}),
            capture_output=True,
            text=True,
            timeout=options.engine_seconds + options.engine_warmup + 120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"bench.engine exited {done.returncode}: {done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    if store == "memory":
        return measure("memory://")
    if store == "sqlite":
        with data.fresh_sqlite(str(work_dir), "engine") as path:
            return measure(f"sqlite:///{path}")
    with data.fresh_postgres(options.postgres_url, "engine") as url:
        return measure(url)


def _engine(options: Options, work_dir: Path, problems: list[str]) -> list[dict[str, Any]]:
    # The engine alone has no participants: the http and amqp targets have no engine row.
    stores = ["memory", *(t for t in options.targets if t in ("sqlite", "postgres"))]
    results = []
    for store in stores:
        print(f"engine alone, {store}", flush=True)
        result = _guarded(
            problems, f"engine {store}", partial(_engine_one, store, options, work_dir)
        )
        if result is not None:
            results.append(result)
            problems += [f"engine {store}: {p}" for p in result["problems"]]
            print(
                f"  {result['sagas_per_second']:.1f} sagas/s,"
                f" {result['cpu_us_per_transition']:.1f} CPU µs per transition",
                flush=True,
            )
    return results


def _memory(options: Options, work_dir: Path, problems: list[str]) -> dict[str, Any] | None:
    print(f"memory, {options.memory_checkouts:,} checkouts on {options.memory_store}", flush=True)
    plan = memory.MemoryPlan(
        checkpoints=memory.default_checkpoints(options.memory_checkouts),
        store=options.memory_store,
        work_dir=work_dir,
        postgres_url=options.postgres_url,
    )
    result = _guarded(problems, "memory", partial(memory.measure, plan))
    if result is not None:
        problems += [f"memory: {p}" for p in result["problems"]]
    return result


def run_suite(options: Options, *, command: str, work_dir: Path) -> dict[str, Any]:
    """Measure everything ``options`` asks for, back to back; return the results."""
    if options.targets and options.concurrencies:
        ensure_wrk()
    postgres = (
        asyncio.run(postgres_version(options.postgres_url))
        if set(POSTGRES) & set(options.targets)
        or (options.memory_checkouts and options.memory_store == "postgres")
        else "not measured"
    )
    quiet = wait_until_quiet(QUIET_CORES, options.wait_quiet) if options.wait_quiet else None
    problems: list[str] = []
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "machine": describe(work_dir, postgres) | {"busy_cores_before_start": quiet},
        "settings": {
            "describe": options.describe(),
            "seconds": options.seconds,
            "warmup": options.warmup,
            "concurrencies": list(options.concurrencies),
            "targets": list(options.targets),
            "processes": list(options.processes),
            "multi_process_targets": list(options.multi_process_targets),
            "rounds": options.rounds,
            "engine_seconds": options.engine_seconds,
            "wrk_threads": options.wrk_threads,
            "memory_checkouts": options.memory_checkouts,
            "memory_store": options.memory_store,
        },
    }
    http_rounds, engine_rounds = [], []
    for index in range(1, options.rounds + 1):
        if options.rounds > 1:
            print(f"round {index} of {options.rounds}", flush=True)
        if options.concurrencies:
            http_rounds.append(_http(options, work_dir, problems))
        if options.engine_seconds:
            engine_rounds.append(_engine(options, work_dir, problems))
    results["http"] = rounds.fold_http(http_rounds)
    results["engine"] = rounds.fold_engine(engine_rounds)
    if options.memory_checkouts:
        results["memory"] = _memory(options, work_dir, problems)
    report.add_ratios(results)
    results["targets"] = report.evaluate_targets(results)
    results["problems"] = problems
    return results


def write(results: dict[str, Any], out: Path) -> str:
    """Write the JSON to ``out`` and the table to bench/results/latest.md; return the table."""
    table = report.markdown(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.md").write_text(table)
    return table


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split(",") if n.strip())


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = set(names) - set(TARGETS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown targets {sorted(unknown)}; use {TARGETS}")
    return names


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench.run``."""
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--duration", type=int, default=10, help="seconds per HTTP cell (10)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up seconds per cell (2)")
    p.add_argument("--concurrency", type=_numbers, default=(1, 16, 64), help="1,16,64")
    p.add_argument("--targets", type=_names, default=TARGETS, help=",".join(TARGETS))
    p.add_argument("--processes", type=_numbers, default=(1, 2), help="API processes: 1,2")
    p.add_argument(
        "--multi-process-targets",
        type=_names,
        default=TARGETS,
        help="the targets also measured with more than one API process (all)",
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds, medians (3)")
    p.add_argument("--engine-duration", type=float, default=10.0, help="engine seconds (10)")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (1: one core for wrk)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        help=f"wait up to this many seconds for < {QUIET_CORES} busy cores before starting",
    )
    p.add_argument("--postgres-url", default=None, help="admin URL (BENCH_POSTGRES_URL)")
    p.add_argument("--amqp-url", default=None, help="RabbitMQ, for amqp (BENCH_AMQP_URL)")
    p.add_argument(
        "--memory",
        type=int,
        default=0,
        metavar="N",
        help="also measure the server's memory over N checkouts (bench/memory.py; 0: not)",
    )
    p.add_argument("--memory-store", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument(
        "--smoke",
        action="store_true",
        help=f"a few seconds: c=4, 1 process, 1 s; memory over {memory.SMOKE_CHECKOUTS:,}",
    )
    p.add_argument("--out", type=Path, help="JSON file (bench/results/<timestamp>.json)")
    return p


def options_from(args: argparse.Namespace) -> Options:
    """The run that the command line asks for (``--smoke`` overrides the durations)."""
    chosen = Options(
        seconds=args.duration,
        warmup=args.warmup,
        concurrencies=args.concurrency,
        targets=args.targets,
        processes=args.processes,
        multi_process_targets=args.multi_process_targets,
        rounds=args.rounds,
        engine_seconds=args.engine_duration,
        wrk_threads=args.wrk_threads,
        wait_quiet=args.wait_quiet,
        memory_checkouts=args.memory,
        memory_store=args.memory_store,
        **({"postgres_url": args.postgres_url} if args.postgres_url else {}),
        **({"amqp_url": args.amqp_url} if args.amqp_url else {}),
    )
    return smoke_options(chosen) if args.smoke else chosen


def smoke_options(base: Options) -> Options:
    """A few-second version of ``base``: every target once, at c=4, one process, and the
    memory measurement over a few thousand checkouts (its mechanics, not its figure)."""
    return replace(
        base,
        seconds=1,
        warmup=1,
        concurrencies=(4,),
        processes=(1,),
        rounds=1,
        engine_seconds=1.0,
        engine_warmup=0.5,
        memory_checkouts=memory.SMOKE_CHECKOUTS,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; exit 1 when any answer or saga was not what the workload expects."""
    args = parser().parse_args(argv)
    options = options_from(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"{stamp}.json"
    work_dir = RESULTS / f"work-{stamp}"
    work_dir.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["bench/run", *(sys.argv[1:] if argv is None else argv)])
    results = run_suite(options, command=command, work_dir=work_dir)
    print(write(results, out))
    print(f"results: {out}; server logs: {work_dir}")
    return 1 if results["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
