"""The benchmark's rounds: each figure is the median of its rounds, counts are added up."""

from __future__ import annotations

from typing import Any

from bench.rounds import fold_engine, fold_http


def cell(throughput: float, p99: float, problems: list[str] | None = None) -> dict[str, Any]:
    """An HTTP cell as one round measures it."""
    return {
        "target": "sqlite",
        "processes": 1,
        "concurrency": 16,
        "throughput": throughput,
        "latency_ms": {"p50": p99 / 2, "p99": p99},
        "requests": int(throughput),
        "statuses": {"200": int(throughput)},
        "server_cpu_us_per_request": 1000.0 / throughput,
        "db_cpu_us_per_request": None,
        "cores_busy": {"server": 0.9},
        "problems": problems or [],
    }


def run(*cells: dict[str, Any]) -> dict[str, Any]:
    """One server run of the sqlite target."""
    return {"target": "sqlite", "processes": 1, "cells": list(cells), "sagas": {}, "problems": []}


def test_an_http_cell_is_the_median_of_its_rounds() -> None:
    """Three rounds fold into one cell: medians of rates and latencies, sums of answers."""
    rounds = [[run(cell(100, 30))], [run(cell(300, 10, ["slow"]))], [run(cell(200, 20))]]
    (folded,) = fold_http(rounds)
    (one,) = folded["cells"]
    assert one["throughput"] == 200
    assert one["latency_ms"]["p99"] == 20
    assert one["requests"] == 600
    assert one["statuses"] == {"200": 600}
    assert one["rounds"] == [100, 300, 200]
    assert one["db_cpu_us_per_request"] is None
    assert one["problems"] == ["round 2: slow"]


def test_an_engine_result_is_the_median_of_its_rounds() -> None:
    """The engine's sagas/s and CPU are medians; its sagas are added up."""
    results = [
        [{"store": "sqlite", "sagas_per_second": s, "cpu_us_per_saga": 1e6 / s, "sagas": 10}]
        for s in (1000.0, 4000.0, 2000.0)
    ]
    for r in results:
        r[0].update(
            cpu_us_per_transition=1.0,
            db_server_cpu_us_per_transition=None,
            others_cores=0.1,
            problems=[],
        )
    (folded,) = fold_engine(results)
    assert folded["sagas_per_second"] == 2000
    assert folded["cpu_us_per_saga"] == 500
    assert folded["sagas"] == 30
    assert folded["rounds"] == [1000.0, 4000.0, 2000.0]
