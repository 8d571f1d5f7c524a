"""Profile a server under load: ``python -m bench.profile [--target sqlite] [--concurrency 64]``.

Serves one target exactly as the suite does (fresh database, same orders), loads it with wrk,
and meanwhile samples it with py-spy (``pip install py-spy``) for ``--seconds``. Prints the
functions where most samples were taken, by own time and by total time, and writes py-spy's
raw collapsed stacks (for flame graph tools) to ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from bench.load import ensure_wrk
from bench.run import RESULTS, Options
from bench.targets import Plan, Tally, prepared

THREAD = re.compile(r'^Thread (\d+) \([^)]*\): "(.*)"$', re.MULTILINE)


def summarise(collapsed: Path, top: int = 25) -> str:
    """The ``top`` frames by own samples and by inclusive samples, as text."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    packages: collections.Counter[str] = collections.Counter()
    for frame, n in own.items():
        packages[_package(frame)] += n
    rows = [f"{total} samples", "", "own time by package:"]
    rows += [f"  {n / total:6.1%}  {name}" for name, n in packages.most_common(12)]
    rows += ["", "own time:"]
    rows += [f"  {n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    rows += ["", "total time (the frame or anything it called):"]
    rows += [f"  {n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(rows)


def _package(frame: str) -> str:
    """``sagakit/store`` for a frame in sagakit/store/sqlite.py, ``fastapi`` for fastapi/..."""
    path = frame.rpartition("(")[2].rpartition(":")[0]
    parts = path.split("/")
    if len(parts) == 1:
        return f"stdlib {parts[0]}" if parts[0].endswith(".py") else "(other)"
    return "/".join(parts[:2]) if parts[0] == "sagakit" else parts[0]


def _group_pids(group: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rpartition(")")[2].split()[2]) == group:
                pids.append(int(stat.parent.name))
    return pids


def thread_cpu(group: int) -> dict[int, tuple[float, float]]:
    """For every thread in process group ``group``: seconds on a CPU, seconds runnable but
    waiting for one (the scheduler's ``schedstat``), by thread id."""
    found = {}
    for pid in _group_pids(group):
        for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                running, waiting, _ = task.read_text().split()
                found[int(task.parent.name)] = (int(running) / 1e9, int(waiting) / 1e9)
    return found


def thread_names(py_spy: str, group: int) -> dict[int, str]:
    """Thread ids to Python thread names, as ``py-spy dump`` shows them."""
    names = {}
    for pid in _group_pids(group):
        dump = subprocess.run(
            [py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True, check=False
        )
        for tid, name in THREAD.findall(dump.stdout):
            names[int(tid)] = f"{pid}/{name}"
    return names


def busy_threads(
    before: dict[int, tuple[float, float]],
    after: dict[int, tuple[float, float]],
    seconds: float,
    names: dict[int, str],
) -> str:
    """Each thread's share of a core over the window, busiest first, and of waiting for one."""
    rows = []
    for tid, (running, waiting) in after.items():
        ran, waited = before.get(tid, (0.0, 0.0))
        rows.append(((running - ran) / seconds, (waiting - waited) / seconds, tid))
    return "\n".join(
        f"  {on:5.2f} on a CPU, {off:5.2f} runnable but waiting for one:"
        f"  thread {tid} {names.get(tid, '?')}"
        for on, off, tid in sorted(rows, reverse=True)
        if on >= 0.01
    )


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is missing: .venv/bin/pip install py-spy")
    return found


def profile(
    target: str, processes: int, concurrency: int, seconds: int, out: Path, *, native: bool
) -> str:
    """Load ``target`` at ``concurrency`` and sample its server for ``seconds``."""
    ensure_wrk()
    work_dir = RESULTS / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    work_dir.mkdir(parents=True, exist_ok=True)
    plan = Plan(
        concurrencies=(concurrency,),
        seconds=seconds + 4,
        warmup=2,
        wrk_threads=1,
        work_dir=work_dir,
        postgres_url=Options().postgres_url,
    )
    with prepared(target, processes, plan) as server:
        tally = Tally()
        tally.load(server, target, plan, concurrency, plan.warmup)
        load = threading.Thread(
            target=tally.load, args=(server, target, plan, concurrency, plan.seconds)
        )
        load.start()
        time.sleep(1)
        py_spy, group = _py_spy(), server.process.pid
        names = thread_names(py_spy, group)
        spy = [py_spy, "record", "--pid", str(group), "--subprocesses", "--gil"]
        # Native frames (the garbage collector, SQLite, uvloop) need the process paused.
        spy.append("--native" if native else "--nonblocking")
        spy += ["--duration", str(seconds), "--rate", "200", "--format", "raw", "-o", str(out)]
        before, started = thread_cpu(group), time.monotonic()
        subprocess.run(spy, check=True, capture_output=True)
        threads = busy_threads(before, thread_cpu(group), time.monotonic() - started, names)
        load.join()
    return (
        f"Cores by thread while sampled (py-spy itself runs outside them):\n{threads}\n\n"
        f"Python frames holding the GIL (py-spy --gil):\n{summarise(out)}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: which target, how loaded, for how long, and where the stacks go."""
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument(
        "--target", default="sqlite", choices=("baseline", "sqlite", "postgres", "postgres-hot")
    )
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--seconds", type=int, default=15)
    p.add_argument("--native", action="store_true", help="C frames too (pauses the server)")
    p.add_argument("--out", type=Path, default=RESULTS / "profile.txt")
    args = p.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(
        profile(
            args.target,
            args.processes,
            args.concurrency,
            args.seconds,
            args.out,
            native=args.native,
        )
    )
    print(f"\ncollapsed stacks: {args.out}")


if __name__ == "__main__":
    main()
