"""Interleaved rounds folded into one result: the median of each figure over the rounds.

A run with ``--rounds N`` measures every target (and the engine on every store) once per
round, the targets one after another within a round, so that whatever else the shared
machine does at some moment weighs on every target alike rather than on the one that
happened to run then. Each cell's figures are then the median over the rounds, and the
cell keeps the figure of each round (``rounds``) to show how far they spread.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

Run = dict[str, Any]

#: Figures of an HTTP cell taken as the median over the rounds.
CELL_MEDIANS = ("throughput", "server_cpu_us_per_request", "db_cpu_us_per_request")
#: Figures of an engine result taken as the median over the rounds.
ENGINE_MEDIANS = (
    "sagas_per_second",
    "cpu_us_per_transition",
    "cpu_us_per_saga",
    "db_server_cpu_us_per_transition",
    "others_cores",
)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def _cell(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell from the same cell of each round."""
    cell = dict(rounds[0])
    for key in CELL_MEDIANS:
        cell[key] = _median([r.get(key) for r in rounds])
    cell["latency_ms"] = {
        k: _median([r["latency_ms"][k] for r in rounds]) for k in rounds[0]["latency_ms"]
    }
    cell["cores_busy"] = {
        k: _median([r["cores_busy"].get(k) for r in rounds]) for k in rounds[0]["cores_busy"]
    }
    cell["requests"] = sum(r["requests"] for r in rounds)
    statuses: dict[str, int] = {}
    for r in rounds:
        for status, n in r["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    cell["statuses"] = statuses
    cell["rounds"] = [r["throughput"] for r in rounds]
    cell["problems"] = [p for i, r in enumerate(rounds, 1) for p in _in_round(i, r["problems"])]
    return cell


def _in_round(index: int, problems: list[str]) -> list[str]:
    return [f"round {index}: {p}" for p in problems]


def fold_http(rounds: Sequence[Sequence[Run]]) -> list[Run]:
    """The HTTP runs of every round as one list of runs, each cell the median of its rounds."""
    by_key: dict[tuple[str, int], list[Run]] = {}
    for runs in rounds:
        for run in runs:
            by_key.setdefault((run["target"], run["processes"]), []).append(run)
    folded = []
    for (target, processes), runs in by_key.items():
        cells: dict[int, list[dict[str, Any]]] = {}
        for run in runs:
            for cell in run["cells"]:
                cells.setdefault(cell["concurrency"], []).append(cell)
        sagas: dict[str, int] = {}
        for run in runs:
            for status, n in run.get("sagas", {}).items():
                sagas[status] = sagas.get(status, 0) + n
        extra = {k: v for k, v in runs[-1].items() if k not in ("cells", "sagas", "problems")}
        folded.append(
            extra
            | {
                "target": target,
                "processes": processes,
                "cells": [_cell(found) for found in cells.values()],
                "sagas": sagas,
                "problems": [p for i, r in enumerate(runs, 1) for p in _in_round(i, r["problems"])],
            }
        )
    return folded


def fold_engine(rounds: Sequence[Sequence[Run]]) -> list[Run]:
    """The engine results of every round, one per store, each figure the median."""
    by_store: dict[str, list[Run]] = {}
    for results in rounds:
        for result in results:
            by_store.setdefault(result["store"], []).append(result)
    folded = []
    for results in by_store.values():
        one = dict(results[0])
        for key in ENGINE_MEDIANS:
            one[key] = _median([r.get(key) for r in results])
        one["sagas"] = sum(r["sagas"] for r in results)
        one["rounds"] = [r["sagas_per_second"] for r in results]
        one["problems"] = [p for i, r in enumerate(results, 1) for p in _in_round(i, r["problems"])]
        folded.append(one)
    return folded
