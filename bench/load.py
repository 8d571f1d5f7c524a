"""The load generator: wrk (Debian's package) driven by bench/checkout.lua.

Each call sends ``POST /checkout/o<n>`` for ``n`` in a range given to it alone, split evenly
between wrk's threads, so no order id is ever sent twice in a run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parent / "checkout.lua"
MARKER = "BENCH-RESULT "


class LoadError(RuntimeError):
    """wrk is missing, failed, or printed no result."""


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["apt-get", *args], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(["apt-get", *args], 1, "", str(exc))


def ensure_wrk() -> str:
    """The path of ``wrk``, installing Debian's package first when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: wrk is missing; running apt-get install -y wrk", flush=True)
    install = _apt_get("install", "-y", "-q", "wrk")
    if install.returncode != 0:
        # A fresh machine may have no package lists yet.
        print("bench: apt-get install failed; running apt-get update and trying again", flush=True)
        _apt_get("update", "-q")
        install = _apt_get("install", "-y", "-q", "wrk")
    found = shutil.which("wrk")
    if found is None:
        raise LoadError(
            "wrk is not installed and `apt-get install -y wrk` failed"
            f" (exit {install.returncode}): {install.stderr.strip()[-400:]}\n"
            "Install it by hand (Debian/Ubuntu: apt-get update && apt-get install -y wrk)."
        )
    return found


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What wrk measured: counts, statuses and latency percentiles (microseconds)."""

    requests: int
    seconds: float
    statuses: dict[int, int]
    unexpected_400: int
    exhausted: int
    socket_errors: dict[str, int]
    latency_us: dict[str, float]

    @property
    def throughput(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    def problems(self) -> list[str]:
        """Every answer that is not a 200 or an expected 400, and every socket error."""
        found = [
            f"{count} answers with status {status}"
            for status, count in sorted(self.statuses.items())
            if status not in (200, 400)
        ]
        if self.unexpected_400:
            found.append(f"{self.unexpected_400} answers 400 without 'Invalid shipping address'")
        if self.exhausted:
            found.append(f"{self.exhausted} requests found no unused order id left")
        found += [f"{n} socket {kind} errors" for kind, n in self.socket_errors.items() if n]
        return found


def run_wrk(
    url: str, *, connections: int, seconds: float, first_id: int, ids: int, threads: int
) -> LoadResult:
    """Load ``url`` for ``seconds`` over ``connections`` with order ids from ``first_id`` on."""
    threads = max(1, min(threads, connections))
    command = [
        ensure_wrk(),
        *(f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"),
        *("--timeout", "30s", "-s", str(SCRIPT), url, "--"),
        *(str(first_id), str(ids // threads)),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)), None)
    if done.returncode != 0 or line is None:
        raise LoadError(f"wrk failed (exit {done.returncode}): {done.stderr or done.stdout}")
    return parse(json.loads(line[len(MARKER) :]))


def parse(raw: dict[str, Any]) -> LoadResult:
    """A :class:`LoadResult` from the JSON line the Lua script prints."""
    return LoadResult(
        requests=int(raw["requests"]),
        seconds=raw["duration_us"] / 1e6,
        statuses={int(k): int(v) for k, v in raw["statuses"].items()},
        unexpected_400=int(raw["unexpected_400"]),
        exhausted=int(raw["exhausted"]),
        socket_errors={k: int(v) for k, v in raw["socket_errors"].items()},
        latency_us={k: float(v) for k, v in raw["latency_us"].items()},
    )
