"""A few-second run of the whole suite, for CI: every target once, no thresholds.

``run_smoke()`` serves the baseline, sagakit on SQLite, on PostgreSQL, and with its
participants over HTTP and over AMQP (RabbitMQ) for about a second each at concurrency 4
with one API process, runs the engine alone on every store for a second, and measures the
server's memory over 2,000 checkouts (bench/memory.py: its mechanics and checks, not issue
4's figure); it returns the results (the same shape as the JSON file of ``bench/run``). It
writes no file outside a temporary directory. A caller that wants the run to mean something
asserts ``results["problems"] == []``: it lists every answer other than a 200 or the
workload's expected 400, every saga left unfinished, every part that failed to run, and the
``amqp`` target when RabbitMQ does not answer.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.run import Options, run_suite, smoke_options


def run_smoke(postgres_url: str | None = None) -> dict[str, Any]:
    """Run every target for about a second at c=4, and memory over 2,000; the results."""
    options = smoke_options(Options())
    if postgres_url is not None:
        options = replace(options, postgres_url=postgres_url)
    with tempfile.TemporaryDirectory(prefix="sagakit-bench-") as work_dir:
        return run_suite(options, command="bench.smoke.run_smoke()", work_dir=Path(work_dir))


if __name__ == "__main__":
    import sys

    from bench.report import markdown

    results = run_smoke()
    print(markdown(results))
    # No timing is judged; a wrong answer, an unfinished saga or a part that failed is.
    sys.exit(1 if results["problems"] else 0)
